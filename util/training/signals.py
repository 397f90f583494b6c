"""SIGINT/SIGTERM during training: the latest checkpoint is written after the current step, then
the run stops (Interrupted); a second signal stops at once (StoppedAtOnce)."""
import logging
import os
import signal

log = logging.getLogger('sccan')


class Interrupted(Exception):
    """SIGINT/SIGTERM received; the latest checkpoint has been written."""


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: the run stops where it is, without writing a checkpoint."""


def way_on(latest_path):
    """What to do after a run stopped early: continue from its latest checkpoint or, when none
    was written yet, run it again."""
    if os.path.isfile(latest_path):
        return f'continue from the last checkpoint with --resume {latest_path}'
    return f'no checkpoint was written yet ({latest_path} does not exist): run it again from the start'


class StopFlag:
    """`requested` turns True on SIGINT/SIGTERM while installed; a second signal raises
    StoppedAtOnce naming `latest_path`, the checkpoint to continue from (or saying that there is
    none yet)."""

    def __init__(self, latest_path):
        self.latest_path = latest_path
        self.requested = False
        self._previous = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self):
        """Put back the handlers found at install, where this flag's is still the one in place
        (a handler set since, e.g. by util.distributed.peers_watched, stays)."""
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.requested:
            raise StoppedAtOnce(f'stopped at once by a second {signal.Signals(signum).name}; '
                                f'{way_on(self.latest_path)}')
        self.requested = True
        log.warning('%s received: writing the latest checkpoint after this step, then stopping '
                    '(send it again to stop at once)', signal.Signals(signum).name)
