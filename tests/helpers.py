"""What several test modules share (test modules never import each other): tiny data sets on
disk, the tiny run every script test uses, checks shared with tests/test_cuda.py (a step and a
validation over processes, the feature cache), and checks of the command-line scripts.

Data sets. Tiny PASCAL-5i / COCO-20i data sets in the real formats.

`make_pascal(root)` writes root/JPEGImages/*.jpg, root/SegmentationClassAug/*.png (one byte per
pixel: 0 background, class id on the object, 255 on a 2-pixel band around it) and root/train.txt,
root/val.txt with lines "JPEGImages/x.jpg SegmentationClassAug/x.png" (the authors' format).
`make_coco(root)` writes root/{train2014,val2014}/*.jpg, root/annotations/{train2014,val2014}/*.png
(class ids 1..80) and the two lists with lines "train2014/x.jpg annotations/train2014/x.png".

Every image holds two objects (each >= 2,048 px at the default size) of two classes that are novel
in the same fold under every fold scheme, so no fold's training list loses an image to a novel
class, and with the default counts every class of every fold has >= 6 eligible images in both
lists: 1- and 5-shot episodes work for all folds. Image sizes vary a little (and are not square)
so size mistakes show. All functions return (data_root, train_list, val_list).
"""
import hashlib
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist

from model import build_sccan
from tools.dev.random_episodes import random_episode
from util import distributed
from util.cli import run_main
from util.config import load_config
from util.datasets import episode_dataset
from util.episodes import TRAINING_INPUTS, Episode
from util.evaluation.evaluate import (TIMINGS, cached_predictor, forward_predictor, make_predictor,
                                      run_episodes)
from util.evaluation.feature_cache import FeatureCache
from util.evaluation.manifest import EpisodeRecord, make_header, write_manifest
from util.evaluation.uncertainty import RunCounts
from util.experiment import ready_model
from util.files.image_io import IGNORE_LABEL, write_image
from util.optim import build_optimizers, forward_backward, optimizer_step, set_sgd_lr
from util.precision import Precision
from util.seeding import without_dropout

BORDER = 2          # width of the 255 band around objects, as in VOC labels
SIZE = 33           # network input side of the tiny runs
# --opts of a tiny run: the tiny model at 33×33, a random backbone, data loaded in-process
TINY = ['model', 'tiny', 'train_h', str(SIZE), 'train_w', str(SIZE), 'val_size', str(SIZE),
        'backbone_weights', 'None', 'workers', '0']


def class_colour(c):
    """A fixed RGB colour per class id, so images carry their class."""
    rng = np.random.default_rng(1000 + c)
    return rng.integers(40, 256, size=3)


def second_class(c, num_classes):
    """The class sharing c's image: novel in the same fold as c under every fold scheme
    (PASCAL: same block of 5; COCO: same block of 20 and same id mod 4)."""
    if num_classes == 20:
        block, step = 5, 1
    else:
        block, step = 20, 4
    start = (c - 1) // block * block
    return start + ((c - 1 - start) + step) % block + 1


def draw_scene(classes, size, rng):
    """RGB uint8 image and uint8 label of `size` (h, w) with one rectangle-ish object per class:
    the first in the top-left quarter-and-more, the second in the bottom-right one."""
    h, w = size
    image = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
    label = np.zeros((h, w), np.uint8)
    boxes = [(0, 0), (h // 2, w // 2)]
    for c, (y0, x0) in zip(classes, boxes):
        y0 += BORDER + int(rng.integers(0, 3))
        x0 += BORDER + int(rng.integers(0, 3))
        y1, x1 = y0 + h // 2 - 2 * BORDER - 2, x0 + w // 2 - 2 * BORDER - 2
        band = np.zeros_like(label, dtype=bool)
        band[max(y0 - BORDER, 0):y1 + BORDER, max(x0 - BORDER, 0):x1 + BORDER] = True
        label[band & (label == 0)] = IGNORE_LABEL
        label[y0:y1, x0:x1] = c
        image[y0:y1, x0:x1] = class_colour(c) - rng.integers(0, 30, size=(y1 - y0, x1 - x0, 3))
    return image, label


def image_size(i, size):
    """Sizes vary with the index: +0/8/16 rows, +0/8 columns."""
    h, w = size
    return h + 8 * (i % 3), w + 8 * (i % 2)


def write_pair(data_root, image_rel, label_rel, image, label):
    write_image(os.path.join(data_root, image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    write_image(os.path.join(data_root, label_rel), label)


def write_list(path, pairs):
    with open(path, 'w') as f:
        f.writelines(f'{image} {label}\n' for image, label in pairs)
    return path


def make_split(data_root, n, num_classes, size, rng, name_pair, first_index=0):
    """n scenes; scene i holds classes (i mod num_classes)+1 and its second_class."""
    pairs = []
    for i in range(first_index, first_index + n):
        c = i % num_classes + 1
        image, label = draw_scene((c, second_class(c, num_classes)), image_size(i, size), rng)
        pair = name_pair(i)
        write_pair(data_root, *pair, image, label)
        pairs.append(pair)
    return pairs


def make_pascal(root, n_train=80, n_val=60, size=(112, 120), seed=0):
    """PASCAL-5i layout under root (= data_root). Defaults give each class 8 train and
    6 val images. Returns (data_root, train_list, val_list)."""
    rng = np.random.default_rng(seed)
    root = str(root)

    def name_pair(i):
        return f'JPEGImages/2008_{i:06d}.jpg', f'SegmentationClassAug/2008_{i:06d}.png'

    train = make_split(root, n_train, 20, size, rng, name_pair)
    val = make_split(root, n_val, 20, size, rng, name_pair, first_index=n_train)
    return (root, write_list(os.path.join(root, 'train.txt'), train),
            write_list(os.path.join(root, 'val.txt'), val))


def make_coco(root, n_train=240, n_val=240, size=(112, 120), seed=0):
    """COCO-20i layout under root (= data_root). Defaults give each class 6 images per list.
    Returns (data_root, train_list, val_list)."""
    rng = np.random.default_rng(seed)
    root = str(root)

    def namer(split):
        def name_pair(i):
            stem = f'COCO_{split}_{i:012d}'
            return f'{split}/{stem}.jpg', f'annotations/{split}/{stem}.png'
        return name_pair

    train = make_split(root, n_train, 80, size, rng, namer('train2014'))
    val = make_split(root, n_val, 80, size, rng, namer('val2014'), first_index=n_train)
    return (root, write_list(os.path.join(root, 'train.txt'), train),
            write_list(os.path.join(root, 'val.txt'), val))


def make_from_labels(root, labels, list_name='list.txt', folder='custom'):
    """A dataset of the given label maps (uint8 arrays): image k is the label's colour coding
    (class_colour per class) saved as JPEG. Returns (data_root, list_path, pairs)."""
    root = str(root)
    pairs = []
    for k, label in enumerate(labels):
        image = np.zeros(label.shape + (3,), np.uint8)
        for c in np.unique(label):
            image[label == c] = class_colour(int(c)) if c not in (0, IGNORE_LABEL) else 0
        pair = (f'{folder}/img_{k:04d}.jpg', f'{folder}/lab_{k:04d}.png')
        write_pair(root, *pair, image, np.asarray(label, np.uint8))
        pairs.append(pair)
    return root, write_list(os.path.join(root, list_name), pairs), pairs


def write_palette_png(path, indices, palette):
    """An 8-bit palette PNG (colour type 3), as VOC's SegmentationClass files are; OpenCV can
    read but not write those. indices: H×W uint8; palette: N×3 uint8 RGB."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack('>I', len(data)) + body + struct.pack('>I', zlib.crc32(body))

    h, w = indices.shape
    rows = b''.join(b'\x00' + np.ascontiguousarray(row, np.uint8).tobytes() for row in indices)
    png = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 3, 0, 0, 0)) +
           chunk(b'PLTE', np.asarray(palette, np.uint8).tobytes()) +
           chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(png)


def make_pascal_config(root, extra='', **sizes):
    """make_pascal data under root/data and a config file root/tiny.yaml pointing at it (lists
    cached in root/lists); `extra` is appended YAML. Returns the config path."""
    data_root, train_list, val_list = make_pascal(os.path.join(root, 'data'), **sizes)
    path = os.path.join(root, 'tiny.yaml')
    with open(path, 'w') as f:
        f.write(f'Data:\n  data_root: {data_root}\n  train_list: {train_list}\n'
                f'  val_list: {val_list}\n  list_dir: {os.path.join(root, "lists")}\n{extra}')
    return path


# ---- a step and a validation over processes (test_distributed.py, torchrun_step.py) ----
def tiny_net(cfg):
    """The config's SCCAN, seeded, without dropout (its draws differ between processes)."""
    torch.manual_seed(0)
    return without_dropout(ready_model(cfg.replace(backbone_weights=None), 'cpu'))


def validate_and_step(env, config):
    """A validation of 7 episodes (dealt unevenly over 2 processes), then one training step on
    this process's share of a fixed batch of 4 episodes; returns (metrics, gradients, weights
    after the step)."""
    cfg = load_config(config, TINY + ['batch_size_val', '2'])
    net = tiny_net(cfg).to(env.device)
    model = distributed.wrap_ddp(net, env) if dist.is_initialized() else net
    sgd, adamw = build_optimizers(net, cfg)
    set_sgd_lr(sgd, cfg.base_lr)
    precision = Precision(env.device.type)
    dataset = episode_dataset(cfg, 'val')
    result = without_timings(run_episodes(net, dataset, cfg, 321, env, precision,
                                          num_episodes=7, show_progress=False))
    scaler = precision.grad_scaler()
    batch = dict(zip(TRAINING_INPUTS, random_episode(b=4, size=SIZE, seed=1)))
    share = {k: v[env.rank::env.world_size] for k, v in batch.items()}
    model.train()
    forward_backward(model, share, precision, scaler, env.device)
    grads = {n: p.grad.to('cpu', copy=True) for n, p in net.named_parameters() if p.grad is not None}
    optimizer_step(scaler, (sgd, adamw))
    return result, grads, {k: v.to('cpu', copy=True) for k, v in net.state_dict().items()}


def max_difference(a, b, keys):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def assert_same_step(one, many, config, tolerance=1.0):
    """`many` (what validate_and_step saved from several processes) against `one`
    (validate_and_step of one process with the whole batch); the float tolerances are
    multiplied by `tolerance`."""
    one_result, one_grads, one_weights = one
    # gradients of 2 × 2 episodes averaged by DDP = gradients of the 4-episode batch
    assert one_grads.keys() == many['grads'].keys()
    assert max_difference(one_grads, many['grads'], one_grads) <= 1e-6 * tolerance
    # so are the SGD-trained weights after the step; AdamW's first step moves every weight by
    # about ±lr·g/(|g| + 1e-8), which turns rounding in near-zero gradients into ~1e-6 changes
    sgd_trained = [k for k in one_weights if not k.startswith('transformer.')]
    assert max_difference(one_weights, many['weights'], sgd_trained) <= 1e-6 * tolerance
    assert max_difference(one_weights, many['weights'], one_weights) <= 1e-5 * tolerance
    initial = tiny_net(load_config(config, TINY)).state_dict()
    moved = [k for k in initial if not torch.equal(initial[k], one_weights[k])]
    assert any(k.startswith('transformer.') for k in moved) and 'cls_meta.3.bias' in moved
    # sharded validation: the same episodes, the same summed pixel counts
    # The cross-entropy is a float sum over batches of other sizes per process (and float
    # convolutions round differently per batch size); the pixel counts below are exact.
    many_result, one_result = dict(many['result']), dict(one_result)
    assert many_result.pop('loss') == pytest.approx(one_result.pop('loss'), rel=1e-6 * tolerance)
    assert many_result == one_result            # per_episode too: gathered in episode order
    assert one_result['episodes'] == 7 and one_result['FB-IoU'] > 0
    assert one_result['per_episode'].episode.tolist() == list(range(7))


# ---- the feature cache (test_feature_cache.py, test_cuda.py) ----
def without_timings(result):
    """An evaluation's result (or a report's seed) without what varies from run to run."""
    return {k: v for k, v in result.items() if k not in TIMINGS}


def check_cached_evaluation(config, shot, device, cache_device='same', tolerance=1e-6, capture=None):
    """Evaluates the same episodes without the cache, then twice with one cached predictor
    (features kept on `cache_device`; what follows the backbone replayed with `capture`, a
    strategy of util.evaluation.replay, when given), and checks that the results agree; returns the
    largest metric change between the plain and the cached run."""
    opts = TINY + ['batch_size_val', '2', 'shot', str(shot), 'feature_cache_device', cache_device]
    plain_cfg = load_config(config, opts)
    cached_cfg = load_config(config, opts + ['feature_cache_gb', '1'])
    torch.manual_seed(0)
    net = build_sccan('tiny').to(device).eval()
    env = distributed.DistEnv(0, 1, 0, device)
    precision = Precision(device.type)
    dataset = episode_dataset(plain_cfg, 'val')
    episodes = 12
    results = []
    predict = (cached_predictor(net, FeatureCache(1, cache_device), precision, device,
                                ('val', cached_cfg.val_size), capture)
               if capture else make_predictor(net, cached_cfg, precision, env.device))
    for cfg, predictor in ((plain_cfg, None), (cached_cfg, predict), (cached_cfg, predict)):
        results.append(without_timings(run_episodes(net, dataset, cfg, 321, env, precision,
                                                    num_episodes=episodes, predict=predictor,
                                                    show_progress=False)))
    assert results[0]['mIoU'] == pytest.approx(results[1]['mIoU'], abs=tolerance)
    assert results[0]['class_IoU'] == pytest.approx(results[1]['class_IoU'], abs=tolerance)
    assert results[1] == results[2]
    # The second evaluation ran no backbone at all; the first, each distinct image once.
    distinct = predict.cache.backbone_passes
    assert predict.cache.misses == distinct and predict.cache.hits == 2 * episodes * (1 + shot) - distinct
    assert distinct < episodes * (1 + shot)
    return max(abs(results[0][m] - results[1][m]) for m in ('mIoU', 'FB-IoU', 'pIoU'))


def evaluations_in_batches(config, device, runs, episodes=7):
    """The same 2-shot episodes evaluated once per (episodes per forward, capture strategy of
    util.evaluation.replay or None) in `runs`, by one tiny SCCAN whose random weights predict both
    classes. Returns [(result, predictor)] in the order of `runs`."""
    cfg = load_config(config, TINY + ['shot', '2'])
    torch.manual_seed(2)          # weights whose predictions mix foreground and background
    net = build_sccan('tiny').to(device).eval()
    env = distributed.DistEnv(0, 1, 0, device)
    precision = Precision(device.type)
    dataset = episode_dataset(cfg, 'val')
    done = []
    for batch, capture in runs:
        predict = forward_predictor(net, precision, device, capture)
        done.append((run_episodes(net, dataset, cfg.replace(batch_size_val=batch), 321, env,
                                  precision, num_episodes=episodes, predict=predict,
                                  show_progress=False), predict))
    # both classes predicted right somewhere, or the comparison would be trivial
    assert (done[0][0]['per_episode'].intersection > 0).any(0).all()
    return done


# ---- command-line scripts: run in the test process; what they must leave ----
def run_cli(main, argv, capsys, *failures):
    """(exit status, stdout, stderr) of `main(argv)` run as its script's `__main__` runs it:
    through util.cli.run_main with `failures`."""
    try:
        result = run_main(lambda: main(argv), *failures)
    except SystemExit as e:
        result = e.code
    out, err = capsys.readouterr()
    return (result if isinstance(result, int) else 0), out, err


def assert_one_error(status, err, *needles):
    """Exit status 2 and, last on stderr (below any progress bar), exactly one line
    `error: ...` holding every needle; no traceback."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith('error: ')]
    assert status == 2 and errors and errors == lines[-1:] and 'Traceback' not in err, err
    assert all(needle in errors[0] for needle in needles), errors[0]


def files_below(folder):
    """{relative path: SHA-1 of the content} of every file below `folder`, to show that a run
    left them as they were."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, folder)] = hashlib.sha1(f.read()).hexdigest()
    return found


# ---- per-episode counts and scored manifests (util.evaluation: uncertainty, manifest) ----
CLASSES = [1, 2, 3, 4, 5]


def synthetic_counts(per_class, num_classes=5, seed=0):
    """Counts of `per_class` episodes of each class: FG unions of 200..2000 pixels, each class
    with its own typical overlap, background of 5,000..20,000 pixels."""
    rng = np.random.default_rng(seed)
    class_index = np.repeat(np.arange(num_classes), per_class)
    quality = rng.uniform(0.3, 0.8, num_classes)[class_index]
    fg_union = rng.integers(200, 2000, len(class_index))
    fg_inter = (fg_union * np.clip(quality + rng.normal(0, 0.2, len(class_index)), 0, 1)).astype(np.int64)
    bg_union = rng.integers(5000, 20000, len(class_index))
    bg_inter = bg_union - (fg_union - fg_inter)
    return RunCounts.of(class_index, np.stack([bg_inter, fg_inter], 1),
                            np.stack([bg_union, fg_union], 1), num_classes)


def write_run(path, counts, seed=321, queries=None, classes=CLASSES):
    """A manifest of one seed's scored episodes (counts: util.evaluation.uncertainty.RunCounts);
    episode e queries image queries[e] (default e)."""
    return write_seeds(path, {seed: counts}, queries, classes)


def write_seeds(path, per_seed, queries=None, classes=CLASSES):
    """A manifest of several seeds' scored episodes: {seed: RunCounts}."""
    records = [EpisodeRecord(seed, e, Episode((f'q{queries[e] if queries else e}.jpg', f'q{e}.png'),
                                              ((f's{e}.jpg', f's{e}.png'),), classes[c]),
                             tuple(map(int, i)), tuple(map(int, u)))
               for seed, counts in per_seed.items()
               for e, (c, i, u) in enumerate(zip(counts.class_index, counts.intersection, counts.union))]
    header = make_header('pascal', 0, 1, classes, list(per_seed), len(records) // len(per_seed), 'test')
    return write_manifest(str(path), header, records)['path']
