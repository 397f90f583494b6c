"""`make demo`: SCCAN meta-trains on base classes of the synthetic benchmark and segments classes
it has never seen, on a CPU, in minutes.

    python tools/demo.py                      # what `make demo` runs
    python tools/demo.py --opts epochs 1      # config overrides go to training and testing

Steps: write the benchmark (util/synthetic.py; skipped when data/synthetic already holds the same
one), meta-train with train_sccan.py on the 15 base classes of fold 0, then score three
predictors on the same test episodes of the 5 held-out classes with util/evaluate.py:
  (a) the meta-trained SCCAN (test_sccan.py),
  (b) the same SCCAN untrained: the weights training started from (test_sccan.py),
  (c) a support-blind baseline that marks every object pixel, of any class, as foreground.
(c) finds every object but cannot tell which one the support shows; beating it by a margin
means the model reads the support. Writes report.md, report.json and examples.png (episodes of
(a): support with its mask, query with the ground truth, query with the prediction) to
<exp_dir>/demo/, and exits with status 1 when (a) misses its targets over (b) and (c).
"""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import test_sccan  # noqa: E402
import train_sccan  # noqa: E402
from util import distributed  # noqa: E402
from util.config import load_config  # noqa: E402
from util.episodes import episode_dataset, seed_all  # noqa: E402
from util.evaluate import run_episodes  # noqa: E402
from util.experiment import build_model  # noqa: E402
from util.image_io import read_label  # noqa: E402
from util.precision import precision_for  # noqa: E402
from util.synthetic import LIST_NAMES, is_generated, write_benchmark  # noqa: E402
from util.training_state import save_checkpoint  # noqa: E402
from util.transform import val_resize_shape  # noqa: E402
from util.visualize import to_rgb  # noqa: E402

CONFIG = 'config/synthetic/synthetic_split0_resnet50.yaml'
TARGETS = {'untrained': 0.20, 'support_blind': 0.10}   # mIoU margins (a) must reach
NAMES = {'trained': '(a) SCCAN, meta-trained', 'untrained': '(b) SCCAN, untrained',
         'support_blind': '(c) support-blind: every object'}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=os.path.join(REPO, CONFIG))
    p.add_argument('--root', default=os.path.join(REPO, 'data', 'synthetic'),
                   help='where the benchmark is written (sets data_root and the lists)')
    p.add_argument('--seed', type=int, default=0, help='benchmark seed')
    p.add_argument('--train-images', type=int, default=1500)
    p.add_argument('--val-images', type=int, default=600)
    p.add_argument('--examples', type=int, default=6, help='episodes drawn in examples.png')
    p.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                   help='KEY VALUE pairs overriding the config (training and testing)')
    return p.parse_args(argv)


def say(message):
    print(f'[demo] {message}', flush=True)


def data_opts(root):
    """Config overrides pointing at the benchmark in root."""
    return ['data_root', root, 'train_list', os.path.join(root, LIST_NAMES['train']),
            'val_list', os.path.join(root, LIST_NAMES['val'])]


def prepare_data(args):
    if is_generated(args.root, args.seed, args.train_images, args.val_images):
        say(f'benchmark already in {args.root}')
        return
    start = time.time()
    write_benchmark(args.root, args.seed, args.train_images, args.val_images)
    say(f'wrote {args.train_images} + {args.val_images} images to {args.root} in '
        f'{time.time() - start:.0f}s')


def untrained_checkpoint(cfg, trained_path, path):
    """The weights training started from: the trainer seeds with manual_seed, then builds the
    model; doing the same gives them again. The frozen backbone must equal the trained one."""
    seed_all(cfg.manual_seed)
    net = build_model(cfg, cfg.backbone_weights)
    trained = torch.load(trained_path, map_location='cpu', weights_only=False)['state_dict']
    for name, value in net.state_dict().items():
        if name.startswith('backbone.') and not torch.equal(value, trained[name]):
            raise RuntimeError(f'{name} differs between {trained_path} and a model rebuilt from '
                               f'manual_seed {cfg.manual_seed}: cannot reconstruct its start')
    save_checkpoint({'state_dict': net.state_dict(), 'layers': cfg.layers, 'shot': cfg.shot,
                     'config': cfg.to_dict(), 'epoch': 0}, path)
    return path


def support_blind_predictor(dataset):
    """predict(batch) for util.evaluate: foreground = every pixel of any object (label not 0 and
    not 255), on the L×L canvas the original-size targets use (needs batch_size_val 1)."""
    label_of = {image: label for (image, label), _, _ in dataset.queries}

    def predict(batch):
        logits = []
        for image, (h, w) in zip(batch['query_path'], batch['original_size'].tolist()):
            label = torch.from_numpy(read_label(label_of[image]))
            objects = torch.zeros((max(h, w),) * 2)
            objects[:h, :w] = ((label != 0) & (label != 255)).float()
            logits.append(torch.stack([1 - objects, objects]))       # 2×L×L
        return torch.stack(logits)
    return predict


def score_support_blind(cfg, episodes):
    cfg = cfg.replace(batch_size_val=1)
    env = distributed.setup()
    dataset = episode_dataset(cfg, 'val')
    return run_episodes(torch.nn.Identity(), dataset, len(dataset.classes), cfg,
                        cfg.manual_seed, env, precision_for(cfg, env.device),
                        num_episodes=episodes, predict=support_blind_predictor(dataset),
                        desc='support-blind')


def test(config, opts, weight, episodes):
    report = test_sccan.main(['--config', config, '--weight', weight, '--episodes',
                              str(episodes), '--opts', *opts])
    return report['seeds'][0]


def first_episodes(cfg, weight, count):
    """The first `count` test episodes (the same seed as the scores) with the model's
    prediction: [(query, truth, prediction, supports, support_masks)], images normalised
    3×H×W at val_size, truth/prediction h×w at the original label size."""
    env = distributed.setup()
    net = test_sccan.load_model(cfg, weight, env.device)
    dataset = episode_dataset(cfg, 'val')
    episodes = []

    def keep(n, batch, b, prediction):
        h, w = batch['original_size'][b].tolist()
        episodes.append((batch['query'][b], batch['query_mask_original'][b][:h, :w],
                         prediction[:h, :w].cpu(), batch['support'][b], batch['support_masks'][b]))
    run_episodes(net, dataset, len(dataset.classes), cfg, cfg.manual_seed, env,
                 precision_for(cfg, env.device), num_episodes=count, on_episode=keep,
                 desc='examples')
    return episodes


def mask_tile(mask, size):
    """0/1/255 mask → RGB tile: foreground white, background black, ignore grey."""
    rgb = np.zeros(mask.shape + (3,), np.uint8)
    rgb[mask == 1] = 255
    rgb[mask == 255] = 110
    return cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST)


def content(image, mask):
    """RGB of a normalised 3×S×S image and its 0/1/255 mask without the val padding (the mask is
    255 on whole padded rows and columns)."""
    mask = mask.numpy().astype(np.uint8)
    h, w = (mask != 255).any(1).sum(), (mask != 255).any(0).sum()
    return np.ascontiguousarray(to_rgb(image)[:h, :w]), mask[:h, :w]


def support_tile(image, mask, width):
    rgb, mask = content(image, mask)
    foreground = (mask == 1).astype(np.uint8)
    rgb[cv2.dilate(foreground, np.ones((3, 3), np.uint8)) > foreground] = (255, 230, 0)
    size = (width, round(width * rgb.shape[0] / rgb.shape[1]))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST)


def example_row(episode, val_size, tile=160):
    """Tiles of one episode side by side: supports, query, ground truth, prediction."""
    query, truth, prediction, supports, support_masks = episode
    truth, prediction = truth.numpy().astype(np.uint8), prediction.numpy().astype(np.uint8)
    size = (tile, round(tile * truth.shape[0] / truth.shape[1]))
    qh, qw = val_resize_shape(*truth.shape, val_size)
    tiles = [support_tile(s, m, tile) for s, m in zip(supports, support_masks)]
    tiles += [cv2.resize(np.ascontiguousarray(to_rgb(query)[:qh, :qw]), size),
              mask_tile(truth, size), mask_tile(prediction, size)]
    height = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 6, cv2.BORDER_CONSTANT,
                                value=(255, 255, 255)) for t in tiles]
    return np.concatenate(tiles, axis=1)


def example_sheet(episodes, path, val_size, tile=160):
    """One row per episode: support(s) with the mask outlined, query, ground truth, prediction."""
    rows = [example_row(e, val_size, tile) for e in episodes]
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 6, 0, width - r.shape[1], cv2.BORDER_CONSTANT,
                               value=(255, 255, 255)) for r in rows]
    shot = len(episodes[0][3])
    titles = ['support (mask outlined)'] * shot + ['query', 'ground truth', 'prediction']
    header = np.full((24, width, 3), 255, np.uint8)
    for i, title in enumerate(titles):
        cv2.putText(header, title, (i * (tile + 6) + 2, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.concatenate([header, *rows])
    if not cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {path}')
    return path


def summary(results):
    """Margins of (a) over (b) and (c) in mIoU, and whether they reach TARGETS."""
    checks = {}
    for other, target in TARGETS.items():
        margin = results['trained']['mIoU'] - results[other]['mIoU']
        checks[other] = {'margin': margin, 'target': target, 'met': margin >= target}
    return checks


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
    lines += ['', 'Time: ' + ', '.join(f'{k} {v:.0f}s' for k, v in report['seconds'].items()),
              '', '![episodes](examples.png)',
              '', 'examples.png, one test episode per row: the support with its mask outlined, '
              'the query, its ground truth and the prediction of (a) (white: the support\'s '
              'class, grey: ignored border).', '']
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    seconds = {}
    opts = data_opts(args.root) + args.opts
    cfg = load_config(args.config, opts)

    say('1/4 synthetic benchmark')
    prepare_data(args)
    seconds['data'] = time.time() - start

    say(f'2/4 meta-training on the base classes of fold {cfg.split} ({args.config})')
    tick = time.time()
    trainer = train_sccan.main(['--config', args.config, '--opts', *opts])
    trained_path = trainer.latest_path
    seconds['training'] = time.time() - tick

    say('3/4 meta-testing on the held-out classes')
    tick = time.time()
    episodes = cfg.test_num
    out_dir = os.path.join(cfg.exp_dir, 'demo')
    os.makedirs(out_dir, exist_ok=True)
    untrained_path = untrained_checkpoint(cfg, trained_path,
                                          os.path.join(out_dir, 'untrained.pth'))
    results = {'trained': test(args.config, opts, trained_path, episodes),
               'untrained': test(args.config, opts, untrained_path, episodes),
               'support_blind': score_support_blind(cfg, episodes)}
    seconds['testing'] = time.time() - tick

    say('4/4 report')
    example_sheet(first_episodes(cfg, trained_path, args.examples),
                  os.path.join(out_dir, 'examples.png'), cfg.val_size)
    seconds['total'] = time.time() - start
    novel = results['trained']['class_ids']
    report = {'config': args.config, 'opts': opts, 'split': cfg.split, 'shot': cfg.shot,
              'episodes': episodes, 'novel_classes': novel, 'checkpoint': trained_path,
              'results': {k: {m: v[m] for m in ('mIoU', 'FB-IoU', 'pIoU', 'class_IoU')}
                          for k, v in results.items()},
              'checks': summary(results), 'seconds': seconds}
    with open(os.path.join(out_dir, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(os.path.join(out_dir, 'report.md'), 'w') as f:
        f.write(text)
    print('\n' + text.split('\n![')[0])
    say(f'report, examples and weights in {out_dir}')
    return report


if __name__ == '__main__':
    result = main()
    sys.exit(0 if all(c['met'] for c in result['checks'].values()) else 1)
