"""What the scripts may write: never one of their inputs, never a file they did not create unless
asked (--overwrite), only where they can (checked before the long work), whole or not at all
(write_atomic, the one writer of the project; JSON caches read back only when they answer the
same question), and one training run at a time per run (a lock file naming its holder)."""
import contextlib
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time


# The permissions a plain open() would give a new file (mkstemp's are 0600); read once, as
# os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

def _same_file(a, b):
    return os.path.realpath(a) == os.path.realpath(b) or (
        os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


class InputFiles:
    """The files a run reads (lists, images, labels, list caches, checkpoints, configs,
    manifests): no output may replace one, --overwrite or not. Indexed by file name, so that an
    output is compared with the few inputs of its name only, however many files a data set
    lists.

        inputs = InputFiles([checkpoint, cfg.source]).add(dataset.input_files())
        check_outputs([report], inputs, overwrite=True)
    """

    def __init__(self, paths=()):
        self._by_name = {}
        self.add(paths)

    def add(self, paths, follow_links=True):
        """Add files (or another InputFiles); returns self.

        Args:
            paths: file paths, or an InputFiles.
            follow_links: also find each file under the name it links to. False for the many
                files of a data set's lists (resolving 100,000 paths takes seconds): a file is
                found by its own name then, and through links to folders.
        """
        if isinstance(paths, InputFiles):
            for name, sources in paths._by_name.items():
                self._by_name.setdefault(name, []).extend(sources)
            return self
        for path in paths:
            path = os.fspath(path)
            names = {os.path.basename(path)}
            if follow_links:
                names.add(os.path.basename(os.path.realpath(path)))
            for name in names:
                self._by_name.setdefault(name, []).append(path)
        return self

    def find(self, path, real_path=None):
        """The input that writing `path` would replace (the same file, through links or another
        spelling of its path), or None. real_path: os.path.realpath(path), when known."""
        names = {os.path.basename(path), os.path.basename(real_path or os.path.realpath(path))}
        for name in names:
            for source in self._by_name.get(name, ()):
                if _same_file(path, source):
                    return source
        return None


def check_outputs(outputs, inputs=(), overwrite=False):
    """Refuse, before anything is written, an output that is also an input (the same file after
    resolving links: never allowed, --overwrite or not), that two outputs share, or that exists
    already (allowed with `overwrite`).

    Args:
        outputs: the files the run will write.
        inputs: an InputFiles, or the paths of the files the run reads.
        overwrite: whether existing outputs may be replaced.
    """
    inputs = inputs if isinstance(inputs, InputFiles) else InputFiles(inputs)
    claimed = set()
    for path in outputs:
        real_path = os.path.realpath(path)
        source = inputs.find(path, real_path)
        if source is not None:
            raise ValueError(f'output {path} would overwrite the input {source}; write the '
                             'outputs elsewhere')
        identity = _identity(path, real_path)
        if identity & claimed:
            raise ValueError(f'two outputs of this run would both be written to {path}')
        claimed |= identity
        if os.path.lexists(path) and not overwrite:
            raise FileExistsError(f'{path} exists already; pass --overwrite to replace it, or '
                                  'write elsewhere')


def _identity(path, real_path):
    """What tells a file apart: its real path and, when it exists, its device and inode (a hard
    link)."""
    try:
        stat = os.stat(path)
    except OSError:
        return {real_path}
    return {real_path, (stat.st_dev, stat.st_ino)}


def unique_stems(paths):
    """The file names of `paths` without their extensions, made unique for outputs named after
    them: a name shared by several files goes to the first, the others get the first free
    `_1`, `_2`, ... that no file of `paths` has as its own name (a/x.jpg, b/x.jpg, x_1.jpg →
    x, x_2, x_1)."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    taken, names = set(stems), []
    for stem in stems:
        name, n = stem, 0
        while name in names or (name != stem and name in taken):
            n += 1
            name = f'{stem}_{n}'
        names.append(name)
    return names


def make_folder(path, what='folder'):
    """os.makedirs(path), with an error naming `what` when path is a file."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f'{what} {path} exists and is not a folder')
    os.makedirs(path, exist_ok=True)
    return path


def check_room(folder, needed, what):
    """OSError 'not enough space in <folder> for <what>' when its disk has less than `needed`
    bytes free: a long run's outputs are checked before the run."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(f'not enough space in {folder} for {what}: {free / 2 ** 20:.1f} MB free, '
                      f'{needed / 2 ** 20:.1f} MB needed')


def check_writable(path):
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


def write_atomic(path, content, sync=True):
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


def named_write_error(error, path):
    """An OSError that a write failed with (a full disk, a quota) and that names no file (the
    flush of a file opened elsewhere, e.g. by TensorBoard's writer) as 'cannot write <path>:
    <reason>'; any other error as it is."""
    if error.errno not in _WRITE_ERRNOS or error.filename is not None or str(path) in str(error):
        return error
    return OSError(f'cannot write {path}: {_reason(error)}')


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


def temporary_target(entry):
    """The name of the file a write_atomic temporary named `entry` was written for, or None
    when `entry` is no such temporary."""
    match = _TEMPORARY.match(entry)
    return match.group('name') if match else None


def leftover_temporaries(folder, name_prefix='', name_suffix=''):
    """The temporary files write_atomic left in `folder` when it was killed while writing a file
    named <name_prefix>...<name_suffix>."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, entry) for entry in os.listdir(folder)
                  if (m := _TEMPORARY.match(entry)) and m.group('name').startswith(name_prefix)
                  and m.group('name').endswith(name_suffix))


@contextlib.contextmanager
def folder_built_whole(out):
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


def save_checkpoint(checkpoint, path):
    """torch.save a checkpoint (model.checkpoint builds them) to `path` with write_atomic."""
    import torch        # here: the lists and images tools that write through this module need none
    return write_atomic(path, lambda f: torch.save(checkpoint, f))


def write_json(path, obj, compact=False):
    """`obj` as JSON, written atomically (write_atomic)."""
    return write_atomic(path, json.dumps(obj, **({'separators': (',', ':')} if compact else {'indent': 1})))


def read_keyed(path, key_name, key):
    """The JSON object stored at `path` when its `key_name` entry equals `key`; None when the
    file is absent, unreadable, of another shape or made for another key."""
    content = _read_record(path)
    return content if content.get(key_name) == key else None


class FolderInUse(OSError):
    """Another live process holds the lock of a run."""


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # alive, another user's
        return True
    return True


class RunLock:
    """An exclusive claim on one run's files: `path` is created exclusively and holds the PID,
    host, start time and command of the holder; `release` removes it. A lock whose holder is
    gone (same host, dead PID; e.g. after a SIGKILL) is taken over, and so is one whose record
    is still unreadable a minute after it was made (its writer failed, e.g. on a full disk)."""

    UNWRITTEN_SECONDS = 60      # a record is written within milliseconds of the file

    def __init__(self, path, what=None):
        """path: the lock file; what: the thing claimed, for messages (default: its folder)."""
        self.path = path
        self.what = what or os.path.dirname(path)
        self.held = False

    def acquire(self):
        """Take the lock; returns the holder record of a stale lock taken over (None if there
        was none). FolderInUse naming the holder when a live process holds it."""
        taken_over = None
        for _ in range(3):      # a stale lock removed by a racing process: try again
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.holder()
                if not self._is_stale(holder, self.path):
                    raise FolderInUse(f'{self.what} is in use by another run: '
                                      f'{describe(holder)} (lock file {self.path}; delete it '
                                      'if that run is over)') from None
                if self._remove_stale(holder):
                    taken_over = holder or {'record': 'unreadable'}
                continue
            try:
                with os.fdopen(fd, 'w') as f:
                    json.dump({'pid': os.getpid(), 'host': socket.gethostname(),
                               'started': time.strftime('%Y-%m-%d %H:%M:%S'),
                               'command': ' '.join(sys.argv)}, f)
            except OSError as e:     # an empty lock left behind would block every later run
                os.remove(self.path)
                raise OSError(f'cannot write {self.path}: {_reason(e)}') from e
            self.held = True
            return taken_over
        raise FolderInUse(f'could not take the lock {self.path}: other processes keep '
                          'replacing it')

    def holder(self):
        """The record in the lock file ({} when unreadable, e.g. half written)."""
        return _read_record(self.path)

    @classmethod
    def _is_stale(cls, holder, path):
        # only a process of this host can be checked; an unreadable record may be being written
        if not holder:
            try:
                return time.time() - os.path.getmtime(path) > cls.UNWRITTEN_SECONDS
            except OSError:
                return False
        return (holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int)
                and not _process_alive(holder['pid']))

    def _remove_stale(self, holder):
        """Move the stale lock aside and delete it, unless another process replaced it in the
        meantime (then it goes back). Whether the stale one was removed."""
        aside = f'{self.path}.{os.getpid()}.stale'
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        if _read_record(aside) != holder:
            try:
                os.link(aside, self.path)     # fails when yet another lock was created
            except FileExistsError:
                pass
            os.remove(aside)
            return False
        os.remove(aside)
        return True

    def release(self):
        if self.held:
            self.held = False
            if self.holder().get('pid') == os.getpid():
                os.remove(self.path)


def _read_record(path):
    try:
        with open(path) as f:
            record = json.load(f)
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(holder):
    """'process 123 on host x since <time> (<command>)' of a lock record."""
    if 'pid' not in holder:
        return 'a process that did not record itself'
    return (f'process {holder.get("pid")} on host {holder.get("host")} since '
            f'{holder.get("started")} ({holder.get("command")})')
