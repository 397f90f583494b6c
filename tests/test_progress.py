"""How far long work is, where nobody watches a terminal (util/log.py's progress lines), and the
training's time left (util/training/scalars.py)."""
import logging
from types import SimpleNamespace

from util import log as log_module
from util.config import default_config
from util.log import ProgressLines, progress, progress_map
from util.training import scalars


class Clock:
    """A clock that moves `step` seconds each time it is read after the first."""

    def __init__(self, step):
        self.now, self.step, self.started = 0.0, step, False

    def __call__(self):
        if self.started:
            self.now += self.step
        self.started = True
        return self.now


def test_a_line_every_interval_with_the_time_left(capsys):
    bar = ProgressLines(range(10), total=10, desc='seed 321', interval=30, clock=Clock(10))
    assert list(bar) == list(range(10))
    assert capsys.readouterr().err.splitlines() == [
        'seed 321: 3/10 (30 %) in 00:00:30, about 00:01:10 left',
        'seed 321: 6/10 (60 %) in 00:01:00, about 00:00:40 left',
        'seed 321: 9/10 (90 %) in 00:01:30, about 00:00:10 left']


def test_lines_count_from_where_a_resumed_loop_starts_and_carry_the_postfix(capsys):
    with ProgressLines(total=100, desc='epoch 2/5', initial=40, unit='step', interval=60,
                       clock=Clock(20)) as bar:
        bar.set_postfix(loss='0.5123')
        for _ in range(6):
            bar.update(1)
    assert capsys.readouterr().err.splitlines() == [
        'epoch 2/5: 43/100 steps (43 %) in 00:01:00, about 00:19:00 left loss 0.5123',
        'epoch 2/5: 46/100 steps (46 %) in 00:02:00, about 00:18:00 left loss 0.5123']


def test_lines_go_to_the_log_where_a_script_set_it_up(caplog, capsys):
    logger = logging.getLogger(log_module.LOGGER_NAME)
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger=log_module.LOGGER_NAME):
            list(ProgressLines(range(2), total=2, desc='val', interval=0, clock=Clock(1)))
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in caplog.records] == [
        'val: 1/2 (50 %) in 00:00:01, about 00:00:01 left',
        'val: 2/2 (100 %) in 00:00:02, about 00:00:00 left']
    assert capsys.readouterr().err == ''


def test_without_a_terminal_progress_prints_lines_not_nothing(monkeypatch, capsys):
    """pytest's stderr is no terminal, as a log file, a pipe or a batch job's output: a bar
    printed nothing there for minutes."""
    monkeypatch.setattr(log_module, 'LINE_INTERVAL', 0)
    assert list(progress(range(3), total=3, desc='seed 0')) == [0, 1, 2]
    assert progress_map(lambda x: 2 * x, [1, 2], 2, desc='labels', unit='label') == [2, 4]
    err = capsys.readouterr().err
    assert 'seed 0: 3/3 (100 %)' in err and 'labels: 2/2 labels (100 %)' in err, err
    list(progress(range(3), total=3, desc='other process', enabled=False))
    list(progress(range(3), total=3, desc='own lines', lines=False))
    assert capsys.readouterr().err == ''


def test_the_time_left_in_training_ends_at_max_iters(monkeypatch, caplog):
    """A smoke run of 5 steps in a 200-epoch schedule: the time left is that of the steps up to
    max_iters, not of the whole schedule."""
    cfg = default_config().replace(max_iters=5, print_freq=1)
    clock = iter(range(100))     # the log's own clock: logging keeps the real one
    monkeypatch.setattr(scalars, 'time', SimpleNamespace(time=lambda: float(next(clock))))
    training = scalars.TrainingLog(cfg, None, False, iters_per_epoch=100, max_iter=20000)
    with caplog.at_level(logging.INFO, logger='sccan'), training.start_epoch(0, 0):
        training.step(0, 0, 1, 0.5, 0.005, 6e-5)
        training.step(0, 1, 2, 0.5, 0.005, 6e-5)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == 'first step: 1.0 s'
    assert [m[-15:] for m in messages[1:]] == ['remain 00:00:04', 'remain 00:00:03']


def test_the_first_step_is_reported_alone_and_left_out_of_the_time_left(monkeypatch, caplog):
    """With compile: True the first step compiles the model (a minute here); the steps after it
    take 1 s, and the time left after the second one counts those."""
    cfg = default_config().replace(max_iters=5, print_freq=1, compile=True)
    clock = iter([0.0, 60.0, 60.0, 61.0, 61.0, 62.0, 62.0])     # (end, next tick) per step
    monkeypatch.setattr(scalars, 'time', SimpleNamespace(time=lambda: next(clock)))
    training = scalars.TrainingLog(cfg, None, False, iters_per_epoch=100, max_iter=20000)
    with caplog.at_level(logging.INFO, logger='sccan'), training.start_epoch(0, 0):
        for i in range(3):
            training.step(0, i, i + 1, 0.5, 0.005, 6e-5)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == 'first step: 60.0 s (compile: True, so it includes compiling the model)'
    assert [m[-15:] for m in messages[1:]] == ['remain 00:04:00', 'remain 00:00:03',
                                               'remain 00:00:02']
