"""A stop signal during training (SIGINT, SIGTERM, SIGUSR1: util.stop_signals): the latest
checkpoint is written after the current step, or at once when the signal comes during a
validation (which the resumed run does again), then the run stops (Interrupted, status 130).
Before training begins there is nothing to save and the run stops at once (StoppedAtOnce), as
on a second signal."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from typing import Callable, Iterator

from util.stop_signals import STOP_SIGNALS

log = logging.getLogger('sccan')

# A signal this soon after the first is the same stop reaching the process twice (sent to the
# process group and forwarded by torchrun or srun), not a second request.
REPEAT_SECONDS = 2.0


class Interrupted(Exception):
    """A stop signal was received; the latest checkpoint has been written."""


class StoppedAtOnce(KeyboardInterrupt):
    """A second stop signal, or one before training began: the run stops where it is, without
    writing a checkpoint."""


class ValidationAbandoned(Exception):
    """A stop signal during a validation: it is left unfinished (the resumed run does it)."""


def how_to_continue(latest_path: str) -> str:
    """What to do after a run stopped early: continue from its latest checkpoint or, when none
    was written yet, run it again."""
    if os.path.isfile(latest_path):
        return f'continue from the last checkpoint with --resume {latest_path}'
    return f'no checkpoint was written yet ({latest_path} does not exist): run it again from the start'


class StopFlag:
    """While installed, a stop signal turns `requested` True when the run can save (inside
    `deferred()`), and raises StoppedAtOnce naming `latest_path` (the checkpoint to continue
    from, or saying that there is none yet) when it cannot, or when it is a second request
    (REPEAT_SECONDS or more after the first).

    Args:
        latest_path: the run's latest checkpoint.
        clock: seconds, for telling a repeated delivery from a second request.
    """

    def __init__(self, latest_path: str, clock: Callable[[], float] = time.monotonic):
        self.latest_path = latest_path
        self.requested = False
        self._clock, self._first, self._deferred = clock, None, False
        self._previous = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Inside: the flag's handler takes the stop signals (an inner `installed` changes
        nothing)."""
        outermost = not self._previous
        if outermost:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            if outermost:
                self._uninstall()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[StopFlag]:
        """Inside: a first stop signal only sets `requested`, for the run to stop where it can
        save."""
        self._deferred = True
        try:
            yield self
        finally:
            self._deferred = False

    def _uninstall(self):
        """Put back the handlers found at install, where this flag's is still the one in place
        (a handler set since, e.g. by util.distributed.peers_watched, stays)."""
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        name, now = signal.Signals(signum).name, self._clock()
        if not self._deferred:
            raise StoppedAtOnce(f'stopped at once by {name}; {how_to_continue(self.latest_path)}')
        if not self.requested:
            self.requested, self._first = True, now
            log.warning('%s received: writing the latest checkpoint after this step (at once '
                        'during a validation), then stopping (send it again to stop at once)',
                        name)
        elif now - self._first >= REPEAT_SECONDS:
            raise StoppedAtOnce(f'stopped at once by a second {name}; '
                                f'{how_to_continue(self.latest_path)}')
