"""Logging for the scripts: console (through tqdm, so progress bars stay intact), a log file,
TensorBoard scalars, progress (bars on a terminal, periodic lines elsewhere). Only the main
process writes; the others log warnings only.
"""
from __future__ import annotations

import concurrent.futures
import logging
import sys
import time
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

_T = TypeVar('_T')
_R = TypeVar('_R')

LOGGER_NAME = 'sccan'
FORMAT = '[%(asctime)s %(levelname)s] %(message)s'


class _TqdmHandler(logging.StreamHandler):
    """Console handler that prints above an active progress bar instead of through it."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup_logging(log_file: str | None = None, is_main: bool = True) -> logging.Logger:
    """The 'sccan' logger with a console handler and, on the main process, a file handler.
    Replaces handlers of an earlier call (scripts can run several times in one process)."""
    logger = logging.getLogger(LOGGER_NAME)
    close_logging(logger)
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    console = _TqdmHandler(sys.stderr)
    console.setFormatter(logging.Formatter(FORMAT, '%H:%M:%S'))
    logger.addHandler(console)
    if log_file and is_main:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    return logger


def close_logging(logger: logging.Logger | None = None) -> None:
    """Remove and close the handlers of setup_logging; records propagate to the root again."""
    logger = logger or logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True


# Seconds between two progress lines where no bar can be drawn.
LINE_INTERVAL = 30.0


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None,
             enabled: bool = True, initial: int = 0, unit: str | None = None,
             lines: bool = True) -> tqdm | ProgressLines:
    """How far a loop is, on the main process (`enabled`): a tqdm bar with its ETA on a
    terminal; elsewhere (a log file, a pipe, a batch job's output), where a bar would print
    nothing readable, a line every LINE_INTERVAL seconds (ProgressLines; `lines` False: none,
    for loops that log their own)."""
    if enabled and sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit or 'it',
                    dynamic_ncols=True, leave=False)
    return ProgressLines(iterable, total, desc, initial, unit, enabled=enabled and lines,
                         interval=LINE_INTERVAL)


class ProgressLines:
    """tqdm's part that the loops use (iterating, update, set_postfix, close, `with`), shown as
    a line `desc: n/total unit (p %) in 00:02:10, about 00:04:50 left` every `interval` seconds,
    through the 'sccan' log where a script set it up (its file gets them too), else on stderr."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None,
                 desc: str | None = None, initial: int = 0, unit: str | None = None,
                 enabled: bool = True, interval: float = LINE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.enabled, self.interval, self.clock = initial, enabled, interval, clock
        self.start_n, self.postfix = initial, ''
        self.start = self.last = clock()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass

    def set_postfix(self, **values: object) -> None:
        self.postfix = ''.join(f' {k} {v}' for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self.show(self.line(now - self.start))

    def line(self, elapsed: float) -> str:
        """The progress after `elapsed` seconds, in words."""
        done = f'{self.n}/{self.total}' if self.total else f'{self.n}'
        text = f'{self.desc}: {done}' if self.desc else done
        text += f' {self.unit}s' if self.unit else ''
        if self.total:
            text += f' ({100 * self.n / self.total:.0f} %)'
        text += f' in {format_duration(elapsed)}'
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0
        if self.total and rate > 0:
            text += f', about {format_duration((self.total - self.n) / rate)} left'
        return text + self.postfix

    @staticmethod
    def show(line: str) -> None:
        logger = logging.getLogger(LOGGER_NAME)
        if logger.handlers:
            logger.info('%s', line)
        else:
            print(line, file=sys.stderr, flush=True)


def progress_map(function: Callable[[_T], _R], items: Iterable[_T], threads: int,
                 **bar: str | int | bool | None) -> list[_R]:
    """[function(item) for item in items] computed by `threads` threads, under a progress bar
    (`bar`: progress's options). The first error cancels the work still queued and is raised."""
    items = list(items)
    with concurrent.futures.ThreadPoolExecutor(max(threads, 1)) as pool:
        try:
            return list(progress(pool.map(function, items), total=len(items), **bar))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


class _NullWriter:
    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


def scalar_writer(log_dir: str | None, enabled: bool = True) -> SummaryWriter | _NullWriter:
    """TensorBoard writer (tensorboardX) on the main process, a no-op elsewhere."""
    if not enabled:
        return _NullWriter()
    from tensorboardX import SummaryWriter
    return SummaryWriter(log_dir)


def format_duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f'{h:02d}:{m:02d}:{s:02d}'
