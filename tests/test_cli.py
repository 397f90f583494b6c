"""One-line errors of the command lines (util/cli.py): argument checks by name, errors of
DataLoader workers unwrapped, Ctrl-C, --opts swallowing other options."""
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import test_sccan
import train_sccan
from helpers import assert_one_error, make_from_labels, run_cli
from tools import make_synthetic
from util.cli import error_line, run_main
from util.config import REPO_ROOT
from util.datasets.pascal_coco import EpisodeDataset
from util import stop_signals
from util.episodes import batches_of, make_loader
from util.files.image_io import BadFileError
from util.training import FAILURES
from util.stop_signals import STOP_SIGNALS
from util.training.signals import REPEAT_SECONDS, StopFlag, StoppedAtOnce


@pytest.mark.parametrize('main, argv, needles', [
    (test_sccan.main, ['--config', 'c.yaml', '--episodes', '-5'],
     ['argument --episodes: expected a positive integer', "'-5'"]),
    (test_sccan.main, ['--config', 'c.yaml', '--episodes', '0'], ['argument --episodes']),
    (test_sccan.main, ['--config', 'c.yaml', '--seeds', '321', '-1'],
     ['argument --seeds: expected an integer >= 0', "'-1'"]),
    (test_sccan.main, ['--config', 'c.yaml', '--viz', 'x'], ['argument --viz']),
    (make_synthetic.main, ['--train', '-5'], ['argument --train: expected a positive integer']),
    (train_sccan.main, ['--opts', 'epochs', '1', '--config', 'c.yaml'],
     ['--opts takes every word after it', 'it took --config too: put --opts last']),
    (train_sccan.main, ['--config', 'c.yaml', '--auto-resume', '--overwrite'],
     ['argument --overwrite: not allowed with argument --auto-resume']),
])
def test_bad_arguments_are_one_line_naming_the_argument(main, argv, needles, capsys):
    status, out, err = run_cli(main, argv, capsys)
    assert out == ''
    assert_one_error(status, err, *needles)


def test_an_error_from_a_dataloader_worker_is_the_workers_own_line(tmp_path):
    labels = [np.full((70, 70), c, np.uint8) for c in (1, 2, 3, 4, 5) for _ in range(3)]
    root, data_list, pairs = make_from_labels(tmp_path, labels)
    ds = EpisodeDataset('pascal', root, data_list, 0, 1, 'val', list_cache_dir=str(tmp_path / 'c'))
    bad = os.path.join(root, pairs[0][0])
    with open(bad, 'wb') as f:
        f.write(b'garbage')
    with batches_of(DataLoader(ds, batch_size=1, num_workers=1)) as batches:
        with pytest.raises(BadFileError) as raised:
            next(batches)
    assert 'Original Traceback' in str(raised.value)      # what torch raises: 20+ lines
    assert error_line(raised.value) == f'{bad}: cannot be decoded as an image'


def test_error_line_joins_lines_and_keeps_key_errors_unquoted():
    assert error_line(ValueError('a.pth does not fit:\nmissing keys (2): x, y\nshape')) == \
        'a.pth does not fit: missing keys (2): x, y; shape'
    assert error_line(KeyError('no such key')) == 'no such key'


def test_ctrl_c_is_one_line_with_status_130(capsys):
    def interrupted():
        raise KeyboardInterrupt('stopped at once by a second SIGINT')
    with pytest.raises(SystemExit) as exit_info:
        run_main(interrupted)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == 'interrupted: stopped at once by a second SIGINT\n'


@pytest.mark.parametrize('saved', [True, False])
def test_second_signal_stops_training_at_once_with_one_line(capsys, caplog, tmp_path, saved):
    latest = tmp_path / 'snapshot' / 'train_latest.pth'
    if saved:
        latest.parent.mkdir()
        latest.write_bytes(b'')
    seconds = iter([0.0, 0.5, REPEAT_SECONDS + 0.1])
    flag = StopFlag(str(latest), clock=lambda: next(seconds, 99.0))
    with flag.deferred():
        flag._handle(signal.SIGTERM, None)     # the first asks for a clean stop
        assert flag.requested
        flag._handle(signal.SIGTERM, None)     # the same stop again (from torchrun): nothing more
        with pytest.raises(SystemExit) as exit_info:
            run_main(lambda: flag._handle(signal.SIGINT, None), *FAILURES)
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    how_to_continue = (f'continue from the last checkpoint with --resume {latest}' if saved else
              f'no checkpoint was written yet ({latest} does not exist): run it again from the '
              'start')      # before the first save: no --resume with a file that is not there
    assert err.endswith(f'interrupted: stopped at once by a second SIGINT; {how_to_continue}\n')
    assert caplog.text.count('SIGTERM received: writing the latest checkpoint') == 1
    # where nothing can be saved (the run is being set up), a signal stops at once
    with pytest.raises(StoppedAtOnce, match=f'stopped at once by SIGUSR1; {re.escape(how_to_continue)}'):
        flag._handle(signal.SIGUSR1, None)


class SignalsOfTheWorker(torch.utils.data.Dataset):
    """Item i: whether each stop signal is ignored in the loading process, and those held."""

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return ([signal.getsignal(sig) == signal.SIG_IGN for sig in STOP_SIGNALS],
                sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))


def test_loading_workers_ignore_the_stop_signals_from_their_start():
    """A scheduler signals every process of a job: a DataLoader worker (make_loader) must not
    die of it (it would take its main process down before it saved), nor be reached by it
    before it ignores it (batches_of starts the workers with the signals held)."""
    loader = make_loader(SignalsOfTheWorker(), range(1), 1, workers=1, drop_last=False)
    with stop_signals.held():
        assert set(STOP_SIGNALS) <= signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert not set(STOP_SIGNALS) & signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with batches_of(loader) as batches:
        ignored, held = next(batches)
    assert [bool(i) for i in ignored] == [True] * len(STOP_SIGNALS)
    assert not set(STOP_SIGNALS) & set(held)


def test_python_m_util_config_with_a_bad_value_is_one_line():
    done = subprocess.run([sys.executable, '-m', 'util.config',
                           'config/pascal/pascal_split0_resnet50.yaml', 'epochs', 'ten'],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout == ''
    assert_one_error(done.returncode, done.stderr, "epochs expects an integer, got str 'ten'")
