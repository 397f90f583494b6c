"""`make demo` (tools/demo.py) end to end at a tiny size, and its parts."""
import json
import os
import signal

import cv2
import numpy as np
import pytest
import torch

from helpers import TINY, run_cli
from tools import demo
from util import distributed
from util.config import load_config, merged_opts
from util.datasets import episode_dataset
from util.datasets.synthetic import write_benchmark
from util.episodes import PlannedEpisodes, make_loader
from util.files.image_io import read_label
from util.optim import forward_backward
from util.training import Trainer, train
from util.training import trainer as trainer_module


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
    cfg = config_of(argv)
    steps_per_epoch = len(episode_dataset(cfg, 'train')) // 32
    assert ckpt['iteration'] == cfg.epochs * steps_per_epoch >= cfg.epochs   # every epoch


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


def test_support_blind_logits_are_on_the_evaluation_device(tiny_demo):
    """The evaluation compares logits with targets on its device (a GPU): the predictor builds
    them there ('meta': a device that is not the CPU, without a GPU)."""
    _, argv, _ = tiny_demo
    cfg = config_of(argv)
    dataset = episode_dataset(cfg, 'val')
    loader = make_loader(PlannedEpisodes(dataset, dataset.plan(cfg.manual_seed, 2), 0), range(2),
                         1, 0, drop_last=False)
    batch = next(iter(loader))
    logits = demo.support_blind_predictor(dataset, torch.device('meta'))(batch)
    side = max(batch['original_size'][0].tolist())
    assert logits.device.type == 'meta' and logits.shape == (1, 2, side, side)


def run_tiny_demo(tiny_demo, tmp_path, capsys, *opts, flags=()):
    """(exit status, stdout, stderr) of the tiny demo, writing to tmp_path, run as `make demo`
    runs it."""
    _, argv, _ = tiny_demo
    at = argv.index('--opts')
    argv = [*argv[:at], *flags, '--opts', *merged_opts(argv[at + 1:], ['exp_dir', str(tmp_path), *opts])]
    return run_cli(demo.main, argv, capsys, *distributed.FAILURES)


def test_the_demo_replaces_its_own_run_and_no_other(tiny_demo, tmp_path, capsys):
    """A second demo trains over the first one's run; checkpoints it did not leave there (here:
    the latest one written again, as a run continued by train_sccan.py would) stop it, untouched,
    unless --overwrite."""
    for replaced in (False, True):
        status, _, err = run_tiny_demo(tiny_demo, tmp_path, capsys, 'max_iters', '1')
        assert status in (0, 1) and ('replacing the earlier run: deleted' in err) == replaced
    latest = next(tmp_path.glob('**/snapshot/train_latest.pth'))
    os.utime(latest, ns=(1, 10**18))
    status, _, err = run_tiny_demo(tiny_demo, tmp_path, capsys, 'max_iters', '1')
    assert status == 2 and latest.stat().st_mtime_ns == 10**18
    assert err.strip().splitlines()[-1] == (
        f'error: {latest.parent} holds checkpoints that make demo did not leave there '
        '(train_latest.pth): a run of train_sccan.py with the same config, or a demo run trained '
        'on. The demo trains in that folder and would delete them: move them, give the demo '
        'another exp_dir (python tools/demo.py --opts exp_dir DIR), or replace them with python '
        'tools/demo.py --overwrite')
    status, _, err = run_tiny_demo(tiny_demo, tmp_path, capsys, 'max_iters', '1',
                                   flags=['--overwrite'])
    assert status in (0, 1) and latest.stat().st_mtime_ns != 10**18


def test_a_run_of_a_demo_that_kept_no_record_is_its_own_while_its_report_is_newer(
        tiny_demo, tmp_path, capsys):
    """Demos of earlier versions left a report naming the run's latest checkpoint, no record."""
    status, _, _ = run_tiny_demo(tiny_demo, tmp_path, capsys, 'max_iters', '1')
    os.remove(tmp_path / 'demo' / demo.RUN_RECORD)
    status, _, err = run_tiny_demo(tiny_demo, tmp_path, capsys, 'max_iters', '1')
    assert status in (0, 1) and 'replacing the earlier run: deleted' in err
    os.remove(tmp_path / 'demo' / demo.RUN_RECORD)
    latest = next(tmp_path.glob('**/snapshot/train_latest.pth'))
    later = (tmp_path / 'demo' / 'report.json').stat().st_mtime_ns + 10**9
    os.utime(latest, ns=(later, later))          # trained on after the demo's report
    status, _, err = run_tiny_demo(tiny_demo, tmp_path, capsys, 'max_iters', '1')
    assert status == 2 and 'holds checkpoints that make demo did not leave there' in err


def test_ctrl_c_in_training_is_one_line_saying_what_to_run(tiny_demo, tmp_path, capsys,
                                                           monkeypatch):
    def step_then_ctrl_c(*args):
        os.kill(os.getpid(), signal.SIGINT)       # training stops after this step
        return forward_backward(*args)
    monkeypatch.setattr(trainer_module, 'forward_backward', step_then_ctrl_c)
    status, out, err = run_tiny_demo(tiny_demo, tmp_path, capsys)
    assert status == 130 and '2/4 meta-training' in out and '3/4' not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith('interrupted: the demo stopped in step 2/4 (meta-training);')
    assert 'run `make demo` again' in last
    assert 'Traceback' not in err and '--resume' not in err


def test_sigterm_in_testing_is_one_line_too(tiny_demo, tmp_path, capsys, monkeypatch):
    """Outside training (whose handler takes SIGTERM as SIGINT), the default would end the
    demo without a word."""
    test = demo.test

    def sigterm_then_test(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return test(*args, **kwargs)
    monkeypatch.setattr(demo, 'test', sigterm_then_test)
    handler = signal.getsignal(signal.SIGTERM)
    status, out, err = run_tiny_demo(tiny_demo, tmp_path, capsys, 'max_iters', '1')
    assert status == 130 and '3/4 meta-testing' in out
    assert err.strip().splitlines()[-1] == (
        'interrupted: the demo stopped in step 3/4 (meta-testing); it resumes nothing, each run '
        'starts over: run `make demo` again (a benchmark already written is kept)')
    assert 'Traceback' not in err
    assert signal.getsignal(signal.SIGTERM) is handler      # put back


def test_the_report_warns_of_a_training_cut_short_and_of_a_model_finding_nothing(tiny_demo):
    report, _, _ = tiny_demo
    assert report['training']['steps'] == report['training']['recipe_steps']
    assert not any('cut short' in line for line in demo.warnings(report))
    results = {'trained': {'mIoU': 0.004, 'FB-IoU': 0.4}, 'untrained': {'mIoU': 0.0, 'FB-IoU': 0.4},
               'support_blind': {'mIoU': 0.41, 'FB-IoU': 0.56}}
    report = {**report, 'results': results, 'checks': demo.summary(results),
              'training': {'steps': 40, 'recipe_steps': 174, 'max_iters': 40}}
    text = demo.markdown(report)
    assert ('**Training was cut short** (max_iters 40): 40 of the recipe\'s 174 steps, so (a) is '
            'not the demo\'s result.') in text
    assert ('**(a) SCCAN, meta-trained finds next to none of the targets** (mIoU 0.0040): the '
            'score of a model that predicts (almost) no foreground; it is no result') in text
    assert '**(b) SCCAN, untrained finds next to none' in text
    assert '(c) support-blind: every object finds' not in text


def test_the_demos_recipe_learns_alike_under_every_seed(tmp_path, monkeypatch):
    """The demo's optimisers, learning rates, warmup and schedule (its config, only the model and
    the images made tiny) lower the training loss under each of three seeds, and to about the
    same level: training that is robust, not lucky (docs/synthetic.md has the full-size
    spread)."""
    root = tmp_path / 'data'
    write_benchmark(str(root), seed=0, n_train=240, n_val=20)
    step = trainer_module.forward_backward
    finals = []
    for seed in (1, 2, 3):
        losses = []
        monkeypatch.setattr(trainer_module, 'forward_backward',
                            lambda *args: losses.append(step(*args)) or losses[-1])
        opts = merged_opts(demo.data_opts(str(root)),
                           ['exp_dir', str(tmp_path / f'exp{seed}'), 'list_dir',
                            str(tmp_path / 'lists'), *TINY, 'manual_seed', str(seed)])
        cfg = load_config(os.path.join(demo.REPO, demo.CONFIG), opts)
        train(cfg, distributed.setup())
        steps_per_epoch = len(episode_dataset(cfg, 'train')) // cfg.batch_size
        assert cfg.warmup and len(losses) == cfg.epochs * steps_per_epoch
        assert all(torch.isfinite(loss) for loss in losses)
        sixth = len(losses) // 6
        first, last = (float(sum(part)) / sixth for part in (losses[:sixth], losses[-sixth:]))
        assert last < 0.95 * first, (seed, first, last)
        finals.append(last)
    assert max(finals) - min(finals) < 0.05, finals
