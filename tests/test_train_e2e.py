"""train_sccan.py and test_sccan.py end to end on a tiny synthetic benchmark (CPU, small model):
checkpoints in the authors' format, exact resumption after SIGINT / SIGKILL, clear errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import test_sccan
import train_sccan
from fakedata import make_pascal_config
from util.config import REPO_ROOT, ConfigError
from model import CheckpointError

PYTHON = sys.executable
# tiny and fast: 57×57 inputs, a 2-block SCCA stack at 16×16, random ResNet-50 backbone
TINY = ['train_h', '57', 'train_w', '57', 'val_size', '57', 'fts_size', '16', 'depth', '2',
        'reduce_dim', '32', 'backbone_weights', 'None', 'batch_size', '2', 'batch_size_val', '2',
        'workers', '0', 'test_num', '4', 'print_freq', '1', 'save_freq', '1']
SNAPSHOT = os.path.join('pascal', 'SCCAN', 'split0', 'resnet50', 'snapshot')


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    """Synthetic PASCAL-layout data and a config pointing at it."""
    root = tmp_path_factory.mktemp('bench')
    config = make_pascal_config(str(root), 'Train:\n  epochs: 2\n', n_train=20, n_val=10)
    return {'root': root, 'config': config}


def env_1_thread():
    # the same thread count in every run keeps CPU arithmetic bit-identical between runs
    return {**os.environ, 'OMP_NUM_THREADS': '1'}


def train_cmd(bench, exp_dir, *extra):
    return [PYTHON, os.path.join(REPO_ROOT, 'train_sccan.py'), '--config', bench['config'],
            *extra, '--opts', *TINY, 'exp_dir', str(exp_dir)]


def run(cmd, **kw):
    return subprocess.run(cmd, env=env_1_thread(), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, **kw)


def latest(exp_dir):
    return os.path.join(exp_dir, SNAPSHOT, 'train_latest.pth')


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'


@pytest.fixture(scope='module')
def reference_run(bench):
    """An uninterrupted 2-epoch run: the target of the resumption tests."""
    exp = bench['root'] / 'reference'
    done = run(train_cmd(bench, exp))
    assert done.returncode == 0, done.stderr[-3000:]
    return {'exp': exp, 'log': done.stderr}


def test_training_writes_authors_format_checkpoints_that_test_sccan_reads(bench, reference_run):
    exp = reference_run['exp']
    snapshot = os.path.join(exp, SNAPSHOT)
    best = [f for f in os.listdir(snapshot) if f.startswith('train_epoch_')]
    assert len(best) == 1, os.listdir(snapshot)
    ckpt = torch.load(os.path.join(snapshot, best[0]), map_location='cpu', weights_only=False)
    assert {'epoch', 'state_dict', 'optimizer', 'optimizer_swin'} <= ckpt.keys()
    assert (ckpt['architecture']['layers'], ckpt['shot']) == (50, 1)
    assert 'down_query.0.weight' in ckpt['state_dict'] and 'cls_meta.3.bias' in ckpt['state_dict']
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])
    last = torch.load(latest(exp), map_location='cpu', weights_only=False)
    n = last['iteration'] // 2
    assert last['iteration'] == 2 * n and last['epoch'] == 1            # 2 epochs done
    log = reference_run['log']
    assert 'validation at epoch 0.5 (step' in log    # mid-epoch validation in the 2nd epoch
    result = os.path.join(exp, 'pascal', 'SCCAN', 'split0', 'resnet50', 'result')
    assert os.path.isfile(os.path.join(result, 'train.log'))
    assert any(f.startswith('events.') for f in
               os.listdir(os.path.join(result, 'train_tensorboard')))

    tested = run([PYTHON, 'test_sccan.py', '--config', bench['config'], '--weight',
                  os.path.join(snapshot, best[0]), '--seeds', '321', '7', '--episodes', '4',
                  '--viz', '2', '--opts', *TINY])
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert 'mIoU' in tested.stderr and '±' in tested.stderr
    report_path = os.path.join(snapshot, best[0][:-4] + '_test1shot.json')
    with open(report_path) as f:
        report = json.load(f)
    assert [s['seed'] for s in report['seeds']] == [321, 7]
    assert all(s['episodes'] == 4 and len(s['class_IoU']) == 5 for s in report['seeds'])
    assert report['mean']['mIoU'] == pytest.approx(
        sum(s['mIoU'] for s in report['seeds']) / 2)
    viz = os.path.join(snapshot, best[0][:-4] + '_viz1shot_seed321')
    assert len(os.listdir(viz)) == 2


def run_until_first_checkpoint_then(sig, bench, exp):
    proc = subprocess.Popen(train_cmd(bench, exp), env=env_1_thread(), cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not os.path.exists(latest(exp)):
        assert proc.poll() is None, f'training ended before its first checkpoint: ' \
                                    f'{proc.stderr.read()[-2000:]}'
        assert time.time() < deadline, 'no checkpoint after 240 s'
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGKILL], ids=['SIGINT', 'SIGKILL'])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(bench, reference_run, sig):
    exp = bench['root'] / f'stopped_{sig.name}'
    code, err = run_until_first_checkpoint_then(sig, bench, exp)
    if sig == signal.SIGINT:
        assert code == 130 and 'continue with --resume' in err, err[-2000:]
    else:
        assert code == -signal.SIGKILL
    stopped_at = torch.load(latest(exp), map_location='cpu', weights_only=False)['iteration']
    # episodes do not depend on who loads them: resuming with loader workers changes nothing
    workers = ['workers', '2'] if sig == signal.SIGKILL else []
    resumed = run(train_cmd(bench, exp, '--resume', 'train_latest.pth') + workers)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'at iteration {stopped_at}' in resumed.stderr
    assert_same_weights(weights(latest(exp)), weights(latest(reference_run['exp'])))


def test_truncated_checkpoint_is_refused(bench, reference_run, tmp_path):
    broken = tmp_path / 'broken.pth'
    data = open(latest(reference_run['exp']), 'rb').read()
    broken.write_bytes(data[:len(data) // 3])
    done = run(train_cmd(bench, tmp_path / 'exp', '--resume', str(broken)))
    assert done.returncode == 2
    assert 'truncated or corrupted' in done.stderr


@pytest.fixture
def nan_at_step_3(monkeypatch):
    """The real net, whose training loss is NaN at its third step (computed with one thread:
    faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    build = train_sccan.build_model

    def build_with_nan(*args):
        net = build(*args)
        forward, calls = net.forward, []

        def nan_forward(*inputs):
            pred, loss = forward(*inputs)
            calls.append(1)
            return pred, loss * float('nan') if len(calls) == 3 else loss
        net.forward = nan_forward
        return net
    monkeypatch.setattr(train_sccan, 'build_model', build_with_nan)
    yield
    torch.set_num_threads(threads)


def test_nan_loss_stops_naming_the_iteration(bench, tmp_path, nan_at_step_3):
    argv = ['--config', bench['config'], '--opts', *TINY, 'exp_dir', str(tmp_path),
            'evaluate', 'False']
    with pytest.raises(train_sccan.NonFiniteLoss, match=r'at iteration 3 \(epoch 1, step 3/'):
        train_sccan.main(argv)
    assert not os.path.exists(latest(tmp_path))      # nothing written after the bad step


def test_nan_loss_skipped_with_on_nonfinite_skip(bench, tmp_path, nan_at_step_3):
    argv = ['--config', bench['config'], '--opts', *TINY, 'exp_dir', str(tmp_path),
            'evaluate', 'False', 'epochs', '1', 'on_nonfinite', 'skip']
    trainer = train_sccan.main(argv)
    assert trainer.progress['skipped_steps'] == 1
    assert all(torch.isfinite(v).all() for v in weights(latest(tmp_path)).values()
               if v.is_floating_point())


def test_missing_data_root_and_config_are_clear_errors(bench, tmp_path):
    done = run(train_cmd(bench, tmp_path) + ['data_root', str(tmp_path / 'nowhere')])
    assert done.returncode == 2 and 'data root not found' in done.stderr
    done = run([PYTHON, 'train_sccan.py', '--config', 'config/pascal/nope.yaml'])
    assert done.returncode == 2 and 'config file not found' in done.stderr


def test_test_sccan_names_missing_or_mismatching_checkpoints(bench, reference_run, tmp_path):
    argv = ['--config', bench['config'], '--opts', *TINY, 'exp_dir', str(tmp_path)]
    with pytest.raises(ConfigError, match='no checkpoint to test: give --weight'):
        test_sccan.main(argv)
    with pytest.raises(FileNotFoundError, match='checkpoint not found: nope.pth'):
        test_sccan.main(['--weight', 'nope.pth'] + argv)
    with pytest.raises(CheckpointError, match=r'layers 50 \(config: 101\)'):
        test_sccan.main(['--weight', latest(reference_run['exp'])] + argv + ['layers', '101'])
    with pytest.raises(CheckpointError, match='trained with shot 1 but the config has shot 5'):
        test_sccan.main(['--weight', latest(reference_run['exp'])] + argv + ['shot', '5'])
