"""What the scripts read whole: a file that must be there, a text file in UTF-8; the errors name
the file. No OpenCV here: reading a config needs none."""
import errno
import os

NOT_FOUND = 'not found'


def file_problem(path: str) -> tuple[bool, str] | None:
    """Why `path` cannot be read as a file, or None when it can: (missing, what it is) with
    missing True for nothing there ('not found', or a link to nothing) and False for a folder
    or a loop of symbolic links."""
    if os.path.isfile(path):
        return None
    if os.path.isdir(path):
        return False, 'a folder, not a file'
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return False, 'a symbolic link in a loop (it leads back to itself)'
        return True, f'a symbolic link to {os.readlink(path)}, which does not exist'
    return True, NOT_FOUND


def require_file(path: str, what: str = 'file') -> None:
    """FileNotFoundError ('<what> not found: <path>', or naming a link to nothing or a loop of
    links) or IsADirectoryError unless `path` is a file."""
    problem = file_problem(path)
    if problem is None:
        return
    detail = problem[1]
    if detail == NOT_FOUND:
        raise FileNotFoundError(f'{what} not found: {path}')
    error = IsADirectoryError if os.path.isdir(path) else FileNotFoundError
    raise error(f'{what} {path} is {detail}')


def read_text(path: str, what: str = 'file') -> str:
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
