"""Writing whole or not at all: write_atomic, THE writer of the project (reports, checkpoints,
JSON, images: every output), the one module that opens files for writing. With it: the checks
that a file can be written where asked, made before the long work (check_writable, check_room,
make_folder); a write error that names its file; the temporaries a killed write leaves behind; a
folder that appears complete or not at all; and the creation of a new file that is itself a
claim (write_new: a run's lock)."""
import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TextIO


# The permissions a plain open() would give a new file (mkstemp's are 0600); read once, as
# os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def make_folder(path: str, what: str = 'folder') -> str:
    """os.makedirs(path), with an error naming `what` when path is a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f'{what} {path} exists and is not a folder')
    os.makedirs(path, exist_ok=True)
    return path


def check_room(folder: str, needed: int, what: str) -> None:
    """OSError 'not enough space in <folder> for <what>' when its disk has less than `needed`
    bytes free: a long run's outputs are checked before the run."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(f'not enough space in {folder} for {what}: {free / 2 ** 20:.1f} MB free, '
                      f'{needed / 2 ** 20:.1f} MB needed')


def check_writable(path: str) -> None:
    """Create `path`'s folder and a scratch file in it, so that a report that cannot be written
    fails before the work that produces it; OSError naming the path otherwise (also when `path`
    is a folder, which the file could not replace)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f'cannot write {path}: it is a folder; give a file name (e.g. '
                                f'{os.path.join(path, "report.json")})')
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix='.write-test-', dir=folder)
        os.close(fd)
        os.remove(scratch)
    except OSError as e:
        raise OSError(f'cannot write {path}: {_reason(e)}') from e


# write_atomic writes <folder>/.<name>.<8 random characters>.tmp (tempfile.mkstemp) first.
_TEMPORARY = re.compile(r'^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$')


def write_atomic(path: str, content: str | bytes | Callable[[BinaryIO], object], sync: bool = True) -> str:
    """THE writer of reports, checkpoints and every other output: `content` goes to a temporary
    file beside `path`, which then replaces `path` in one rename. Readers never see half a file,
    and a failure leaves the previous file as it was.

    Args:
        path: the file to write (its folder is created).
        content: str, bytes, or a function writing to a binary file object
            (e.g. `lambda f: torch.save(checkpoint, f)`).
        sync: fsync the file and then its folder, so that a crash right after leaves the new
            file whole under its name (False for many small files that can be made again,
            e.g. a data set's labels).

    Returns:
        path.

    Raises:
        OSError 'cannot write <path>: <reason>[; the previous file is unchanged]' (e.g. a full
        disk).
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    except OSError as e:
        raise OSError(f'cannot write {path}: {_reason(e)}') from e
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, 'wb') as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = _os_error_in(e)
        if cause is None:
            raise
        reason = _reason(cause)
        kept = '; the previous file is unchanged' if os.path.exists(path) else ''
        raise OSError(f'cannot write {path}: {reason}{kept}') from e
    if sync:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)    # make the rename itself durable
        finally:
            os.close(dir_fd)
    return path


# What a write fails with for want of room or permission, whatever the file.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def named_write_error(error: OSError, path: str | os.PathLike[str]) -> OSError:
    """An OSError that a write failed with (a full disk, a quota) and that names no file (the
    flush of a file opened elsewhere, e.g. by TensorBoard's writer) as 'cannot write <path>:
    <reason>'; any other error as it is."""
    if error.errno not in _WRITE_ERRNOS or error.filename is not None or str(path) in str(error):
        return error
    return OSError(f'cannot write {path}: {_reason(error)}')


def write_new(path: str, write: Callable[[TextIO], object]) -> None:
    """Create `path`, which must not exist yet (FileExistsError, before anything is written),
    and fill it with write(f), f the new file opened as text; not atomic: for a file whose very
    creation is a claim (a run's lock, util.files.run_lock). A write that fails removes the file
    (an empty one left behind would block every later claim) and is OSError 'cannot write
    <path>: <reason>'."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, 'w') as f:
            write(f)
    except OSError as e:
        os.remove(path)
        raise OSError(f'cannot write {path}: {_reason(e)}') from e


def _reason(error):
    """Why an OSError happened, in the words of the messages."""
    if error.errno == errno.ENOSPC:
        return 'no space left on device'
    return error.strerror or str(error)


def _os_error_in(error):
    """The OSError that caused `error`, if any (torch.save reports a failed file write as a
    RuntimeError raised while handling it)."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def temporary_target(entry: str) -> str | None:
    """The name of the file a write_atomic temporary named `entry` was written for, or None
    when `entry` is no such temporary."""
    match = _TEMPORARY.match(entry)
    return match.group('name') if match else None


def leftover_temporaries(folder: str, name_prefix: str = '', name_suffix: str = '') -> list[str]:
    """The temporary files write_atomic left in `folder` when it was killed while writing a file
    named <name_prefix>...<name_suffix>."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, entry) for entry in os.listdir(folder)
                  if (m := _TEMPORARY.match(entry)) and m.group('name').startswith(name_prefix)
                  and m.group('name').endswith(name_suffix))


@contextlib.contextmanager
def folder_built_whole(out: str) -> Iterator[str]:
    """Inside: a new sibling folder of `out` to fill; renamed to `out` when the block ends
    without error, removed otherwise, so that `out` appears complete or not at all (a data set
    a preparation tool writes). FileExistsError when `out` exists."""
    if os.path.lexists(out):
        raise FileExistsError(f'{out} exists already: give a new --out')
    partial = f'{out}.partial-{os.getpid()}'
    os.makedirs(partial)
    try:
        yield partial
        os.rename(partial, out)
    finally:
        if os.path.isdir(partial):
            shutil.rmtree(partial)


def save_checkpoint(checkpoint: dict[str, Any], path: str) -> str:
    """torch.save a checkpoint (model.checkpoint builds them) to `path` with write_atomic."""
    import torch        # here: the lists and images tools that write through this module need none
    return write_atomic(path, lambda f: torch.save(checkpoint, f))


def write_json(path: str, obj: object, compact: bool = False) -> str:
    """`obj` as JSON, written atomically (write_atomic)."""
    return write_atomic(path, json.dumps(obj, **({'separators': (',', ':')} if compact else {'indent': 1})))
