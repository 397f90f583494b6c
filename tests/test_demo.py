"""`make demo` (tools/demo.py) end to end at a tiny size, and its parts."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from helpers import TINY
from tools import demo
from util import distributed
from util.config import load_config
from util.datasets import episode_dataset
from util.image_io import read_label
from util.training import Trainer


@pytest.fixture(scope='module')
def tiny_demo(tmp_path_factory):
    """The whole demo on 120 + 60 images, 2 training steps, a small head, 6 test episodes."""
    tmp = tmp_path_factory.mktemp('demo')
    argv = ['--root', str(tmp / 'data'), '--train-images', '120', '--val-images', '60',
            '--examples', '2', '--opts', 'exp_dir', str(tmp / 'exp'),
            'list_dir', str(tmp / 'lists'), *TINY, 'batch_size', '32', 'test_num', '6']
    return demo.main(argv), argv, tmp


def test_the_demo_trains_tests_and_reports(tiny_demo):
    report, argv, tmp = tiny_demo
    out = tmp / 'exp' / 'demo'
    assert set(report['results']) == {'trained', 'untrained', 'support_blind'}
    assert report['novel_classes'] == [1, 2, 3, 4, 5] and report['episodes'] == 6
    with open(out / 'report.json') as f:
        assert json.load(f)['results'] == report['results']
    text = (out / 'report.md').read_text()
    assert '| (c) support-blind: every object |' in text
    for name, check in report['checks'].items():
        margin = report['results']['trained']['mIoU'] - report['results'][name]['mIoU']
        assert check['margin'] == pytest.approx(margin)
        assert check['met'] == (margin >= demo.TARGETS[name])
    sheet = cv2.imread(str(out / 'examples.png'))
    # header + 2 rows of 3 tiles (support, truth, prediction) of at least 160 pixels
    assert sheet.shape[1] >= 3 * 160 and sheet.shape[0] >= 24 + 2 * 160
    ckpt = torch.load(report['checkpoint'], map_location='cpu', weights_only=False)
    steps_per_epoch = len(episode_dataset(config_of(argv), 'train')) // 32
    assert ckpt['iteration'] == 2 * steps_per_epoch >= 2     # the config's 2 epochs


def config_of(argv):
    """The config the demo ran with (data options included)."""
    args = demo.parse_args(argv)
    return load_config(args.config, demo.data_opts(args.root) + args.opts)


def test_support_blind_scores_target_pixels_over_object_pixels(tiny_demo):
    """Predicting every object pixel contains the target, so per class IoU = Σ target pixels /
    Σ object pixels over that class's episodes (ignore pixels excluded), the same episodes the
    model is tested on."""
    report, argv, _ = tiny_demo
    cfg = config_of(argv)
    dataset = episode_dataset(cfg, 'val')
    target, objects = np.zeros(5), np.zeros(5)
    for episode in dataset.plan(cfg.manual_seed, cfg.test_num):
        label = read_label(dataset.full_path(episode.query[1]))
        k = dataset.classes.index(episode.class_id)
        target[k] += (label == episode.class_id).sum()
        objects[k] += ((label != 0) & (label != 255)).sum()
    expected = np.divide(target, objects, out=np.zeros(5), where=objects > 0)
    assert report['results']['support_blind']['class_IoU'] == pytest.approx(expected.tolist())
    assert report['results']['support_blind']['mIoU'] == pytest.approx(expected.mean())


def test_the_untrained_model_is_where_training_started(tiny_demo, tmp_path):
    """(b) has every weight of the network a training run of the config starts from."""
    report, argv, _ = tiny_demo
    cfg = config_of(argv)
    path = demo.untrained_checkpoint(cfg, report['checkpoint'], str(tmp_path / 'u.pth'))
    untrained = torch.load(path, weights_only=False)['state_dict']
    start = Trainer(cfg.replace(exp_dir=str(tmp_path / 'exp')), distributed.setup())
    start.close()
    assert untrained.keys() == start.net.state_dict().keys()
    assert all(torch.equal(value, untrained[name]) for name, value in start.net.state_dict().items())
    trained = torch.load(report['checkpoint'], weights_only=False)['state_dict']
    head = [k for k in trained if not k.startswith('backbone.')]
    assert any(not torch.equal(untrained[k], trained[k]) for k in head)   # training moved it
    # another seed builds another backbone, which cannot be the trained model's start
    with pytest.raises(RuntimeError, match='cannot reconstruct its start'):
        demo.untrained_checkpoint(cfg.replace(manual_seed=cfg.manual_seed + 1),
                                  report['checkpoint'], str(tmp_path / 'v.pth'))


def test_the_data_is_written_once(tiny_demo, capsys):
    _, argv, _ = tiny_demo
    args = demo.parse_args(argv)
    before = os.path.getmtime(os.path.join(args.root, 'synthetic_val.txt'))
    demo.prepare_data(args)
    assert 'already in' in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(args.root, 'synthetic_val.txt')) == before
