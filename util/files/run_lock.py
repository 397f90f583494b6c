"""One training run at a time per run: a lock file naming its holder (RunLock), taken over
when that holder is gone."""
import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

from util.files.checks import read_record
from util.files.writer import write_new


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

    def __init__(self, path: str, what: str | None = None):
        """path: the lock file; what: the thing claimed, for messages (default: its folder)."""
        self.path = path
        self.what = what or os.path.dirname(path)
        self.held = False

    def acquire(self) -> dict[str, Any] | None:
        """Take the lock; returns the holder record of a stale lock taken over (None if there
        was none). FolderInUse naming the holder when a live process holds it."""
        taken_over = None
        for _ in range(3):      # a stale lock removed by a racing process: try again
            try:
                write_new(self.path, lambda f: json.dump(
                    {'pid': os.getpid(), 'host': socket.gethostname(),
                     'started': time.strftime('%Y-%m-%d %H:%M:%S'),
                     'command': ' '.join(sys.argv)}, f))
            except FileExistsError:
                holder = self.holder()
                if not self._is_stale(holder, self.path):
                    raise FolderInUse(f'{self.what} is in use by another run: '
                                      f'{describe(holder)} (lock file {self.path}; delete it '
                                      'if that run is over)') from None
                if self._remove_stale(holder):
                    taken_over = holder or {'record': 'unreadable'}
                continue
            self.held = True
            return taken_over
        raise FolderInUse(f'could not take the lock {self.path}: other processes keep '
                          'replacing it')

    def holder(self) -> dict[str, Any]:
        """The record in the lock file ({} when unreadable, e.g. half written)."""
        return read_record(self.path)

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
        if read_record(aside) != holder:
            try:
                os.link(aside, self.path)     # fails when yet another lock was created
            except FileExistsError:
                pass
            os.remove(aside)
            return False
        os.remove(aside)
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            if self.holder().get('pid') == os.getpid():
                os.remove(self.path)


def describe(holder: Mapping[str, Any]) -> str:
    """'process 123 on host x since <time> (<command>)' of a lock record."""
    if 'pid' not in holder:
        return 'a process that did not record itself'
    return (f'process {holder.get("pid")} on host {holder.get("host")} since '
            f'{holder.get("started")} ({holder.get("command")})')
