"""Logging for the scripts: console (through tqdm, so progress bars stay intact), a log file,
TensorBoard scalars, progress bars. Only the main process writes; the others log warnings only.
"""
import concurrent.futures
import logging
import sys

from tqdm import tqdm

LOGGER_NAME = 'sccan'
FORMAT = '[%(asctime)s %(levelname)s] %(message)s'


class _TqdmHandler(logging.StreamHandler):
    """Console handler that prints above an active progress bar instead of through it."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup_logging(log_file=None, is_main=True):
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


def close_logging(logger=None):
    """Remove and close the handlers of setup_logging; records propagate to the root again."""
    logger = logger or logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True


def progress(iterable=None, total=None, desc=None, enabled=True, initial=0):
    """A tqdm bar with ETA, shown only on the main process and only on a terminal."""
    return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True,
                leave=False, disable=not (enabled and sys.stderr.isatty()))


def progress_map(function, items, threads, **bar):
    """[function(item) for item in items] computed by `threads` threads, under a tqdm bar
    (`bar`: its options). The first error cancels the work still queued and is raised."""
    items = list(items)
    with concurrent.futures.ThreadPoolExecutor(max(threads, 1)) as pool:
        try:
            return list(tqdm(pool.map(function, items), total=len(items), **bar))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


class _NullWriter:
    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


def scalar_writer(log_dir, enabled=True):
    """TensorBoard writer (tensorboardX) on the main process, a no-op elsewhere."""
    if not enabled:
        return _NullWriter()
    from tensorboardX import SummaryWriter
    return SummaryWriter(log_dir)


def format_duration(seconds):
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f'{h:02d}:{m:02d}:{s:02d}'
