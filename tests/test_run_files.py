"""What a training run leaves in its folder, as a colleague or the next run finds it."""
import os

import pytest

import train_sccan
from helpers import make_pascal_config

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


def test_checkpoints_follow_the_umask_as_every_other_output(bench):
    exp = bench['root'] / 'modes'
    train_sccan.main(['--config', bench['config'], '--opts', *TINY_RUN, 'exp_dir', str(exp)])
    files = [os.path.join(folder, name) for folder, _, names in os.walk(exp) for name in names]
    assert any(f.endswith('train_latest.pth') for f in files)
    expected = 0o666 & ~current_umask()      # what a plain open() gives: colleagues can read
    assert {f: oct(os.stat(f).st_mode & 0o777) for f in files} == {f: oct(expected) for f in files}
