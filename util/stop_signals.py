"""The signals that ask a run to stop, and how each kind of process of a run takes them.

Ctrl-C sends SIGINT; `kill`, `timeout`, Kubernetes and Slurm (at preemption, `scancel`) send
SIGTERM; Slurm's `--signal=USR1@<seconds>` sends SIGUSR1 before the time limit. Schedulers
signal every process of a job: the training processes stop cleanly after their current step
(util.training.signals), and their DataLoader workers ignore the signals, so that none dies with
a traceback before its main process has saved; the main process ends them on its way out.
"""
import contextlib
import signal
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Inside: the stop signals are held back in this thread, and delivered on the way out.
    Processes started inside inherit the held mask, so a signal sent to the whole process group
    cannot reach a new DataLoader worker before it ignores it (`ignore_in_worker`)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_in_worker(worker_id: int | None = None) -> None:
    """A DataLoader's worker_init_fn: ignore the stop signals (torch's own SIGTERM handler would
    end the worker, and its main process with it), then let them through: a signal held since
    the worker started is dropped."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
