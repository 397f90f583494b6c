"""JSON files that are whole or absent: written atomically, and read back as a cache only when
they answer the same question (their stored key equals the one asked)."""
import json
import os
import tempfile


def write_json(path, obj, compact=False):
    """Write `obj` to `path` through a temporary file in the same folder and a rename, so that a
    kill or several processes writing at once never leave half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, **({'separators': (',', ':')} if compact else {'indent': 1}))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_keyed(path, key_name, key):
    """The JSON object stored at `path` when its `key_name` entry equals `key`; None when the
    file is absent, unreadable, of another shape or made for another key."""
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) and content.get(key_name) == key else None
