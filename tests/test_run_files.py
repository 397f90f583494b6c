"""What a training run leaves in its folder, as a colleague or the next run finds it."""
import os

import pytest

import train_sccan
from helpers import assert_one_error, make_pascal_config, run_cli

# a tiny run: two steps of the tiny variant, no validation
TINY_RUN = ['model', 'tiny', 'backbone_weights', 'None', 'train_h', '57', 'train_w', '57',
            'val_size', '57', 'batch_size', '2', 'workers', '0', 'epochs', '1', 'max_iters', '2',
            'evaluate', 'false']


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp('bench')
    return {'root': root, 'config': make_pascal_config(str(root), n_train=20, n_val=10)}


@pytest.fixture(scope='module')
def tiny_run(bench):
    """The folder of a finished tiny run (exp_dir) and its latest checkpoint."""
    exp = bench['root'] / 'run'
    train_sccan.main(['--config', bench['config'], '--opts', *TINY_RUN, 'exp_dir', str(exp)])
    latest = exp / 'pascal' / 'SCCAN' / 'split0' / 'resnet14' / 'snapshot' / 'train_latest.pth'
    return {'exp': exp, 'latest': str(latest)}


def test_checkpoints_follow_the_umask_as_every_other_output(tiny_run):
    exp = tiny_run['exp']
    files = [os.path.join(folder, name) for folder, _, names in os.walk(exp) for name in names]
    assert any(f.endswith('train_latest.pth') for f in files)
    expected = 0o666 & ~current_umask()      # what a plain open() gives: colleagues can read
    assert {f: oct(os.stat(f).st_mode & 0o777) for f in files} == {f: oct(expected) for f in files}


@pytest.mark.parametrize('opts, needles', [
    (['shot', '2'], ['was trained with shot 1 but the config has shot 2; a resumed run goes on '
                     'with the config it was trained with: use that config']),
    (['split', '1'], ['was trained with split 0 but', 'has split 1: its base classes would be '
                      'scored as novel ones; a resumed run goes on with the config it was '
                      'trained with: use that config'])])
def test_resuming_with_another_shot_or_fold_names_no_option_of_the_tester(bench, tiny_run, tmp_path,
                                                                          capsys, opts, needles):
    """--any-shot and --any-split are test_sccan.py's: train_sccan.py has neither."""
    status, _, err = run_cli(train_sccan.main, ['--config', bench['config'], '--resume',
                                                tiny_run['latest'], '--opts', *TINY_RUN, *opts,
                                                'exp_dir', str(tmp_path)], capsys)
    assert_one_error(status, err, *needles)
    assert '--any-' not in err


def test_a_killed_process_of_a_torchrun_run_leaves_the_others_one_line(bench, tmp_path):
    """torchrun, 2 CPU processes; process 1 is killed after a few steps: process 0 stops with
    one line saying so (its collective failed), not the backend's traceback, although torchrun
    sends it SIGTERM at the same time."""
    import glob
    import signal
    import subprocess
    import sys
    import time
    from util.config import REPO_ROOT
    exp, logs = tmp_path / 'exp', tmp_path / 'logs'
    log = exp / 'pascal' / 'SCCAN' / 'split0' / 'resnet14' / 'result' / 'train.log'
    run = subprocess.Popen(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
         '--log-dir', str(logs), '--redirects', '3', 'train_sccan.py', '--config',
         bench['config'], '--opts', 'model', 'tiny', 'backbone_weights', 'None', 'train_h', '57',
         'train_w', '57', 'batch_size', '1', 'workers', '0', 'epochs', '100', 'evaluate',
         'false', 'print_freq', '1', 'exp_dir', str(exp)],
        cwd=REPO_ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (log.exists() and '[3/' in log.read_text()):
            assert run.poll() is None and time.time() < deadline, 'the run did not start'
            time.sleep(0.2)
        workers = subprocess.run(['pgrep', '-P', str(run.pid)], capture_output=True,
                                 text=True).stdout.split()
        ranks = {}
        for pid in workers:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                ranks.update({v.split(b'=')[1]: int(pid) for v in f.read().split(b'\0')
                              if v.startswith(b'RANK=')})
        os.kill(ranks[b'1'], signal.SIGKILL)
        run.wait(timeout=120)
    finally:
        run.kill()
    with open(glob.glob(str(logs / '*' / 'attempt_0' / '0' / 'stderr.log'))[0]) as f:
        err = f.read()
    assert 'Traceback' not in err, err
    assert err.splitlines()[-1].startswith(
        'error: another process of this run stopped, so process 0 of 2 stops too (its own output '
        'says why; here: '), err
    assert err.endswith('no checkpoint was written yet ('
                        f'{exp}/pascal/SCCAN/split0/resnet14/snapshot/train_latest.pth does not '
                        'exist): run it again from the start\n'), err


def test_overwrite_never_deletes_a_file_the_new_run_reads(bench, tiny_run, capsys):
    """--overwrite deletes the earlier run's checkpoints, but not one the new run reads (here
    its backbone_weights)."""
    before = open(tiny_run['latest'], 'rb').read()
    status, _, err = run_cli(train_sccan.main, ['--config', bench['config'], '--overwrite', '--opts',
                                                *TINY_RUN[:2], 'backbone_weights', tiny_run['latest'],
                                                *TINY_RUN[4:], 'exp_dir', str(tiny_run['exp'])],
                             capsys)
    assert_one_error(status, err, f'output {tiny_run["latest"]} would overwrite the input '
                                  f'{tiny_run["latest"]}')
    assert open(tiny_run['latest'], 'rb').read() == before


def test_best_checkpoints_are_found_by_their_authors_names(tmp_path):
    """Of one shot's names only: the authors' (a win8_ prefix too), and the negative epoch label
    of a run validated before its first epoch ended (max_iters)."""
    from util.config import default_config
    from util.files.run_paths import RunPaths
    paths = RunPaths.of(default_config().replace(exp_dir=str(tmp_path), shot=5))
    os.makedirs(paths.snapshot)
    names = {'train5_epoch_9_0.6831.pth': 0.6831, 'win8_train5_epoch_99.5_0.7000.pth': 0.7,
             'train5_epoch_-0.867_0.1000.pth': 0.1, 'train_epoch_3_0.9000.pth': None,
             'train5_latest.pth': None}
    for name in names:
        open(os.path.join(paths.snapshot, name), 'wb').close()
    assert sorted(paths.best_checkpoints()) == sorted(
        (miou, os.path.join(paths.snapshot, name)) for name, miou in names.items() if miou)
