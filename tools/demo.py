"""`make demo`: SCCAN meta-trains on base classes of the synthetic benchmark and segments classes
it has never seen, on a CPU, in minutes.

    python tools/demo.py                      # what `make demo` runs
    python tools/demo.py --opts epochs 1      # config overrides go to training and testing

Steps: write the benchmark (util/datasets/synthetic.py; skipped when data/synthetic already holds
the same one), meta-train as train_sccan.py does (util.training) on the 15 base classes of fold
0, then score three predictors on the same test episodes of the 5 held-out classes with
util/evaluation/evaluate.py:
  (a) the meta-trained SCCAN (as test_sccan.py tests: util.evaluation.checkpoint_evaluation),
  (b) the same SCCAN untrained: the weights training started from (likewise),
  (c) a support-blind baseline that marks every object pixel, of any class, as foreground.
(c) finds every object but cannot tell which one the support shows; beating it by a margin
means the model reads the support. Writes report.md, report.json and examples.png (episodes of
(a): support with its mask, query with the ground truth, query with the prediction) to
<exp_dir>/demo/, and exits with status 1 when (a) misses its targets over (b) and (c).

Each demo trains anew in the config's run folder (where train_sccan.py trains with the same
config), replacing the demo's previous run there but no other: checkpoints that the demo did
not leave (a run of train_sccan.py, a demo run continued with --resume) stop it before it
begins, unless --overwrite.
"""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time

import cv2
import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from model.checkpoint import model_state, read_checkpoint, weights_checkpoint  # noqa: E402
from util import distributed  # noqa: E402
from util.cli import ArgumentParser, non_negative_int, positive_int, run_main  # noqa: E402
from util.config import load_config, merged_opts  # noqa: E402
from util.datasets import SYNTHETIC_LISTS, episode_dataset  # noqa: E402
from util.datasets.synthetic import (TRAIN_IMAGES, VAL_IMAGES, is_generated,  # noqa: E402
                                     write_benchmark)
from util.determinism import deterministic, prepare_process  # noqa: E402
from util.evaluation.checkpoint_evaluation import evaluate_checkpoint  # noqa: E402
from util.evaluation.evaluate import run_episodes  # noqa: E402
from util.experiment import ready_model  # noqa: E402
from util.files.image_io import IGNORE_LABEL, read_label  # noqa: E402
from util.files.run_paths import RunPaths  # noqa: E402
from util.files.writer import save_checkpoint, write_atomic, write_json  # noqa: E402
from util.log import close_logging, setup_logging  # noqa: E402
from util.precision import precision_for  # noqa: E402
from util.prediction.visualize import WHITE, batch_panel, stacked, write_rgb  # noqa: E402
from util.seeding import seed_all  # noqa: E402
from util.training import Interrupted, train  # noqa: E402

CONFIG = 'config/synthetic/synthetic_split0_resnet50.yaml'
TARGETS = {'untrained': 0.20, 'support_blind': 0.10}   # mIoU margins (a) must reach
RUN_RECORD = 'training.json'   # in <exp_dir>/demo/: the checkpoints the demo's training left
NOTHING_FOUND = 0.01    # mIoU under which a predictor's report says it finds next to nothing
NAMES = {'trained': '(a) SCCAN, meta-trained', 'untrained': '(b) SCCAN, untrained',
         'support_blind': '(c) support-blind: every object'}


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=os.path.join(REPO, CONFIG))
    p.add_argument('--root', default=os.path.join(REPO, 'data', 'synthetic'),
                   help='where the benchmark is written (sets data_root and the lists)')
    p.add_argument('--seed', type=non_negative_int, default=0, help='benchmark seed')
    p.add_argument('--train-images', type=positive_int, default=TRAIN_IMAGES)
    p.add_argument('--val-images', type=positive_int, default=VAL_IMAGES)
    p.add_argument('--overwrite', action='store_true',
                   help='replace what is in the way: another benchmark in --root, checkpoints '
                        'in the run folder that the demo did not leave')
    p.add_argument('--examples', type=positive_int, default=6,
                   help='episodes drawn in examples.png')
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs overriding the config (training and testing)')
    return p.parse_args(argv)


def say(message):
    print(f'[demo] {message}', flush=True)


def data_opts(root):
    """Config overrides pointing at the benchmark in root."""
    return ['data_root', root, 'train_list', os.path.join(root, SYNTHETIC_LISTS['train']),
            'val_list', os.path.join(root, SYNTHETIC_LISTS['val'])]


def prepare_data(args):
    if is_generated(args.root, args.seed, args.train_images, args.val_images):
        say(f'benchmark already in {args.root}')
        return
    start = time.time()
    write_benchmark(args.root, args.seed, args.train_images, args.val_images,
                    overwrite=args.overwrite)
    say(f'wrote {args.train_images} + {args.val_images} images to {args.root} in '
        f'{time.time() - start:.0f}s')


def checkpoint_files(paths):
    """{file name: [size, modification time in ns]} of the checkpoints in a run's folder."""
    return {os.path.basename(p): [os.stat(p).st_size, os.stat(p).st_mtime_ns]
            for p in paths.written_checkpoints()}


def left_by_the_demo(paths, found, out_dir):
    """Whether the checkpoints `found` (checkpoint_files) are as the demo's last training left
    them: those its record lists (record_run), or, where a demo of an earlier version kept no
    record, its report names the run's latest checkpoint and none is newer than the report."""
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(out_dir, RUN_RECORD)) as f:
            return json.load(f) == found
    report = os.path.join(out_dir, 'report.json')
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with open(report) as f:
            named = json.load(f)['checkpoint']
        return (os.path.abspath(named) == os.path.abspath(paths.latest) and
                max(modified for _, modified in found.values()) <= os.stat(report).st_mtime_ns)
    return False


def check_run_is_the_demos(paths, out_dir, overwrite):
    """Refuse (FileExistsError) to train over checkpoints that the demo's last training did not
    leave as they are (left_by_the_demo), unless `overwrite`."""
    found = checkpoint_files(paths)
    if found and not overwrite and not left_by_the_demo(paths, found, out_dir):
        raise FileExistsError(
            f'{paths.snapshot} holds checkpoints that make demo did not leave there '
            f'({", ".join(found)}): a run of train_sccan.py with the same config, or a demo run '
            'trained on. The demo trains in that folder and would delete them: move them, give '
            'the demo another exp_dir (python tools/demo.py --opts exp_dir DIR), or replace them '
            'with python tools/demo.py --overwrite')


def record_run(paths, out_dir, env):
    """Note the checkpoints the demo's training left, for check_run_is_the_demos."""
    if env.is_main:
        write_json(os.path.join(out_dir, RUN_RECORD), checkpoint_files(paths))


def untrained_checkpoint(cfg, trained_path, path):
    """The weights training started from: the trainer seeds with manual_seed, then builds the
    model; doing the same gives them again. The frozen backbone must equal the trained one."""
    seed_all(cfg.manual_seed)
    net = ready_model(cfg, 'cpu')
    trained = model_state(read_checkpoint(trained_path), trained_path)
    for name, value in net.state_dict().items():
        if name.startswith('backbone.') and not torch.equal(value, trained[name]):
            raise RuntimeError(f'{name} differs between {trained_path} and a model rebuilt from '
                               f'manual_seed {cfg.manual_seed}: cannot reconstruct its start')
    save_checkpoint(weights_checkpoint(net, epoch=0, shot=cfg.shot, config=cfg.to_dict()), path)
    return path


def support_blind_predictor(dataset, device: torch.device):
    """predict(batch) for util.evaluation.evaluate: foreground = every pixel of any object (label
    not 0 and not 255), on the L×L canvas the original-size targets use (needs batch_size_val 1).
    The logits are on `device`, where the evaluation compares them with the targets."""
    def predict(batch):
        logits = []
        for episode, (h, w) in zip(batch['episode'], batch['original_size'].tolist()):
            label = torch.from_numpy(read_label(dataset.full_path(episode.query[1]))).to(device)
            objects = torch.zeros((max(h, w),) * 2, device=device)
            objects[:h, :w] = ((label != 0) & (label != IGNORE_LABEL)).float()
            logits.append(torch.stack([1 - objects, objects]))       # 2×L×L
        return torch.stack(logits)
    return predict


def score_support_blind(cfg, env, episodes):
    cfg = cfg.replace(batch_size_val=1)
    dataset = episode_dataset(cfg, 'val')
    return run_episodes(torch.nn.Identity(), dataset, cfg,
                        cfg.manual_seed, env, precision_for(cfg, env.device),
                        num_episodes=episodes,
                        predict=support_blind_predictor(dataset, env.device),
                        desc='support-blind')


def test(cfg, env, weight, episodes, out):
    """test_sccan.py's scores of a checkpoint on the first `episodes` of manual_seed."""
    report = evaluate_checkpoint(cfg, env, weight, episodes=episodes, out=out, overwrite=True,
                                 overrides={'weight': weight, 'episodes': episodes})
    return report['seeds'][0]


def first_episodes(cfg, env, weight, count):
    """Panels (util.prediction.visualize.episode_panel) of the first `count` test episodes, with the
    model's predictions: the same seed as the scores."""
    dataset = episode_dataset(cfg, 'val')
    panels = []

    def keep(e, batch, b, prediction):
        panels.append(batch_panel(batch, b, prediction))
    run_episodes(ready_model(cfg, env.device, weight), dataset, cfg, cfg.manual_seed, env,
                 precision_for(cfg, env.device), num_episodes=count, on_episode=keep, desc='examples')
    return panels


def example_sheet(panels, path, shot, tile=160):
    """The episode panels one under another, enlarged to tiles of at least `tile` pixels, under
    a header naming the columns."""
    zoom = math.ceil(tile / panels[0].shape[0])
    sheet = cv2.resize(stacked(panels), None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    column = sheet.shape[1] / (shot + 2)
    titles = ['support (mask in blue)'] * shot + ['ground truth (green)', 'prediction (red)']
    header = np.full((24, sheet.shape[1], 3), WHITE, np.uint8)
    for i, title in enumerate(titles):
        cv2.putText(header, title, (int(i * column) + 2, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return write_rgb(path, np.concatenate([header, sheet]))


def summary(results):
    """Margins of (a) over (b) and (c) in mIoU, and whether they reach TARGETS."""
    checks = {}
    for other, target in TARGETS.items():
        margin = results['trained']['mIoU'] - results[other]['mIoU']
        checks[other] = {'margin': margin, 'target': target, 'met': margin >= target}
    return checks


def warnings(report):
    """Report lines for figures that are not what they seem: a training cut short by max_iters,
    a predictor that finds next to none of the targets."""
    lines = []
    t = report['training']
    if t['steps'] < t['recipe_steps']:
        lines += ['', f'**Training was cut short** (max_iters {t["max_iters"]}): {t["steps"]} of '
                  f'the recipe\'s {t["recipe_steps"]} steps, so (a) is not the demo\'s result.']
    for k, result in report['results'].items():
        if result['mIoU'] < NOTHING_FOUND:
            lines += ['', f'**{NAMES[k]} finds next to none of the targets** (mIoU '
                      f'{result["mIoU"]:.4f}): the score of a model that predicts (almost) no '
                      'foreground; ' + ('as expected of a model never trained.' if k == 'untrained'
                                        else 'it is no result: see the training log\'s loss.')]
    return lines


def markdown(report):
    r, c = report['results'], report['checks']
    lines = [f'# SCCAN on the synthetic benchmark: fold {report["split"]}, '
             f'{report["shot"]}-shot, {report["episodes"]} test episodes', '',
             f'Held-out (novel) classes {report["novel_classes"]}: never seen in training.', '',
             '| predictor | mIoU | FB-IoU |', '| --- | --- | --- |']
    lines += [f'| {NAMES[k]} | {r[k]["mIoU"]:.4f} | {r[k]["FB-IoU"]:.4f} |' for k in NAMES]
    lines.append('')
    lines += [f'- (a) − {NAMES[k][:3]} = {v["margin"]:+.4f} mIoU (target ≥ {v["target"]:.2f}): '
              f'{"met" if v["met"] else "NOT met"}' for k, v in c.items()]
    lines += warnings(report)
    lines += ['', 'Time: ' + ', '.join(f'{k} {v:.0f}s' for k, v in report['seconds'].items()),
              '', '![episodes](examples.png)',
              '', 'examples.png, one test episode per row: the support with its mask (blue), '
              'the query with its ground truth (green) and with the prediction of (a) (red); '
              'darkened pixels are ignored (borders, padding).', '']
    return '\n'.join(lines)


class Steps:
    """The demo's steps, announced as each begins; `current` is the one under way."""
    NAMES = ('synthetic benchmark', 'meta-training', 'meta-testing', 'report')

    def __init__(self):
        self.current = 0

    def begin(self, detail=''):
        self.current += 1
        say(f'{self.current}/{len(self.NAMES)} {self.NAMES[self.current - 1]}{detail}')

    def interrupted(self):
        """The one line for an interruption: no traceback, and no --resume (the demo has none)."""
        where = (f'in step {self.current}/{len(self.NAMES)} ({self.NAMES[self.current - 1]})'
                 if self.current else 'before it began')
        return (f'the demo stopped {where}; it resumes nothing, each run starts over: run '
                '`make demo` again (a benchmark already written is kept)')


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Inside: SIGTERM stops the demo as Ctrl-C does (training's own handler takes both while it
    runs); the default would end the process without a word."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    args = parse_args(argv)
    opts = merged_opts(data_opts(args.root), args.opts)
    cfg = load_config(args.config, opts)
    prepare_process(cfg.seed_deterministic)      # before any CUDA work
    steps = Steps()
    try:
        with (sigterm_as_interrupt(), distributed.process_group() as env,
              deterministic(cfg.seed_deterministic)):
            return run_demo(args, cfg, opts, env, steps)
    except (KeyboardInterrupt, Interrupted):
        raise KeyboardInterrupt(steps.interrupted()) from None


def run_demo(args, cfg, opts, env, steps):
    start = time.time()
    seconds = {}
    out_dir = os.path.join(cfg.exp_dir, 'demo')
    paths = RunPaths.of(cfg)
    distributed.on_main_process(lambda: check_run_is_the_demos(paths, out_dir, args.overwrite),
                                env)

    steps.begin()
    prepare_data(args)
    seconds['data'] = time.time() - start

    steps.begin(f' on the base classes of fold {cfg.split} ({args.config})')
    tick = time.time()
    try:
        trainer = train(cfg, env, overwrite=True)      # each demo starts over
    except Interrupted:
        record_run(paths, out_dir, env)
        raise
    record_run(paths, out_dir, env)
    trained_path = trainer.paths.latest
    seconds['training'] = time.time() - tick

    steps.begin(' on the held-out classes')
    tick = time.time()
    episodes = cfg.test_num
    untrained_path = untrained_checkpoint(cfg, trained_path,
                                          os.path.join(out_dir, 'untrained.pth'))
    setup_logging(is_main=env.is_main)
    try:
        results = {name: test(cfg, env, path, episodes, os.path.join(out_dir, f'test_{name}.json'))
                   for name, path in (('trained', trained_path), ('untrained', untrained_path))}
        results['support_blind'] = score_support_blind(cfg, env, episodes)
    finally:
        close_logging()
    seconds['testing'] = time.time() - tick

    steps.begin()
    example_sheet(first_episodes(cfg, env, trained_path, args.examples),
                  os.path.join(out_dir, 'examples.png'), cfg.shot)
    seconds['total'] = time.time() - start
    novel = results['trained']['class_ids']
    report = {'config': args.config, 'opts': opts, 'split': cfg.split, 'shot': cfg.shot,
              'episodes': episodes, 'novel_classes': novel, 'checkpoint': trained_path,
              'training': {'steps': trainer.progress.iteration, 'recipe_steps': trainer.max_iter,
                           'max_iters': cfg.max_iters},
              'results': {k: {m: v[m] for m in ('mIoU', 'FB-IoU', 'pIoU', 'class_IoU')}
                          for k, v in results.items()},
              'checks': summary(results), 'seconds': seconds}
    write_json(os.path.join(out_dir, 'report.json'), report)
    text = markdown(report)
    write_atomic(os.path.join(out_dir, 'report.md'), text)
    print('\n' + text.split('\n![')[0])
    say(f'report and examples in {out_dir}; the trained model: {trained_path} (predict_sccan.py '
        '--weight, make app)')
    return report


if __name__ == '__main__':
    result = run_main(main, *distributed.FAILURES)
    sys.exit(0 if all(c['met'] for c in result['checks'].values()) else 1)
