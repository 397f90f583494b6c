"""What the scripts read whole: a file that must be there, a text file in UTF-8; the errors name
the file. No OpenCV here: reading a config needs none."""
import os


def require_file(path, what='file'):
    """FileNotFoundError ('<what> not found: <path>') or IsADirectoryError unless `path` is a
    file."""
    if os.path.isdir(path):
        raise IsADirectoryError(f'{what} {path} is a folder, not a file')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')


def read_text(path, what='file'):
    """The content of a UTF-8 text file (a BOM is dropped); ValueError naming the file when it is
    another encoding (e.g. UTF-16) or binary."""
    require_file(path, what)
    with open(path, 'rb') as f:
        data = f.read()
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: {what} is not UTF-8 text (byte {e.start} is '
                         f'{data[e.start]:#04x}; UTF-16 or binary?): save it as UTF-8') from None
    if '\0' in text:
        raise ValueError(f'{path}: {what} holds NUL bytes (UTF-16 or binary?): save it as UTF-8 '
                         'text')
    return text
