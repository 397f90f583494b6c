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
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.requested:
            way_on = (f'continue from the last checkpoint with --resume {self.latest_path}'
                      if os.path.isfile(self.latest_path) else
                      f'no checkpoint was written yet ({self.latest_path} does not exist): run '
                      'it again from the start')
            raise StoppedAtOnce(f'stopped at once by a second {signal.Signals(signum).name}; '
                                f'{way_on}')
        self.requested = True
        log.warning('%s received: writing the latest checkpoint after this step, then stopping '
                    '(send it again to stop at once)', signal.Signals(signum).name)
