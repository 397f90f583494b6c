"""PATNet's cross-domain protocol, against golden files written by running PATNet's own code
(tools/dev/make_patnet_golden.py): the episodes their test loop draws, the 400×400 images and masks
their loaders return, their mIoU / FB-IoU bookkeeping, and their Deepglobe preprocessing."""
import json
import os

import cv2
import pytest
import torch

from tools import make_cross_domain_trees as trees
from tools import prepare_deepglobe
from tools.dev.make_patnet_golden import (BENCHMARKS, LOAD_CHECKS, METRIC_CLASSES, SEEDS, SHOTS,
                                          metric_cases, run_key, sha1)
from util.datasets.cross_domain import PatnetEpisodes
from util.datasets.cross_domain_layouts import layout_of
from util.datasets.patnet import patnet_image, patnet_mask
from util.evaluation.metrics import IoUMeter
from util.transform import val_transform

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')


def golden(name):
    with open(os.path.join(GOLDEN, name)) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """The trees the golden episodes were drawn on (make_cross_domain_trees, seed 0)."""
    root = str(tmp_path_factory.mktemp('cross_domain'))
    assert golden('patnet_episodes.json')['trees_seed'] == 0
    return trees.write_trees(root, seed=0)


def data_set(tree, benchmark, shot):
    layout = layout_of(benchmark, tree[BENCHMARKS[benchmark]], tree['fss_classes'])
    return PatnetEpisodes(layout, benchmark, shot, val_transform(57))


def as_patnet_draws(benchmark, episodes):
    """(class id, query, supports) as their loader names them: the image, or for lung the mask
    (DatasetLung lists the masks)."""
    which = 1 if benchmark == 'lung' else 0
    return [[e.class_id, e.query[which]] + [pair[which] for pair in e.supports] for e in episodes]


@pytest.mark.parametrize('shot', SHOTS)
@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('benchmark', list(BENCHMARKS))
def test_episodes_are_patnets(tree, benchmark, seed, shot):
    theirs = golden('patnet_episodes.json')['benchmarks'][benchmark]
    expected = [[c] + [theirs['names'][i] for i in names]
                for c, *names in theirs['runs'][run_key(seed, shot)]]
    ours = as_patnet_draws(benchmark, data_set(tree, benchmark, shot).plan(seed, len(expected)))
    first_difference = next((e for e, (a, b) in enumerate(zip(ours, expected)) if a != b), None)
    assert first_difference is None, (first_difference, ours[first_difference],
                                      expected[first_difference])
    assert len(ours) == len(expected)


def test_fss_supports_repeat_and_skip_the_query_as_theirs(tree):
    """The quirk kept: a 5-shot support set may hold one image twice, never the query."""
    episodes = data_set(tree, 'fss', 5).plan(0, 30)
    assert any(len(set(e.supports)) < 5 for e in episodes)
    assert all(e.query not in e.supports for e in episodes)


@pytest.mark.parametrize('benchmark', list(BENCHMARKS))
def test_images_and_masks_are_patnets(tree, benchmark):
    """The 400×400 image (Pillow bilinear, as torchvision's Resize on a PIL image) and the
    binarised, nearest-resized mask of the first episodes, as their __getitem__ returns them."""
    ds = data_set(tree, benchmark, 5)
    loads = golden('patnet_episodes.json')['benchmarks'][benchmark]['loads']
    for episode, expected in zip(ds.plan(0, LOAD_CHECKS), loads):
        pairs = [episode.query] + list(episode.supports)
        found = [[sha1(patnet_image(ds.full_path(image))), sha1(patnet_mask(ds.full_path(mask)))]
                 for image, mask in pairs]
        assert found == [expected['query']] + expected['supports']


@pytest.mark.parametrize('benchmark', list(METRIC_CLASSES))
def test_metrics_are_patnets_bookkeeping(benchmark):
    """mIoU over the benchmark's classes (absent ones count 0) and FB-IoU, as their Evaluator
    and AverageMeter compute them (in percent, float32 sums)."""
    classes = list(METRIC_CLASSES[benchmark])
    meter = IoUMeter(len(classes))
    for class_id, prediction, truth in metric_cases(benchmark):
        meter.update(torch.from_numpy(prediction).long()[None],
                     torch.from_numpy(truth).long()[None], [classes.index(class_id)])
    ours = meter.summary()
    theirs = golden('patnet_metrics.json')['benchmarks'][benchmark]
    assert ours['episodes'] == theirs['episodes']
    assert ours['mIoU'] * 100 == pytest.approx(theirs['mIoU'], abs=1e-4)
    assert ours['FB-IoU'] * 100 == pytest.approx(theirs['FB-IoU'], abs=1e-4)


def test_deepglobe_preparation_gives_patnets_tiles_and_masks(tmp_path):
    """tools/prepare_deepglobe.py on a 2448² release image: the tiles their preprocess.py keeps,
    per class the same binary masks and the same re-encoded image tiles (names mapped from
    their <id>_mask_<ij> / <id>_sat_<ij> to our <id>_<ij>)."""
    theirs = golden('patnet_deepglobe_prep.json')
    trees.write_deepglobe_release(str(tmp_path / 'release'))
    out = tmp_path / 'Deepglobe'
    total = prepare_deepglobe.prepare(str(tmp_path / 'release'), str(out), workers=1)
    assert total['kept'] == len(theirs['kept_label_tiles'])
    assert total['kept'] + total['dropped'] == 36
    for c, masks in theirs['class_masks'].items():
        folder = out / c / 'test'
        expected = {name.replace('_mask_', '_'): digest for name, digest in masks.items()}
        assert sorted(p[:-4] for p in os.listdir(folder / 'groundtruth')) == sorted(expected)
        assert sorted(p[:-4] for p in os.listdir(folder / 'origin')) == sorted(expected)
        for name, digest in expected.items():
            mask = cv2.imread(str(folder / 'groundtruth' / f'{name}.png'), cv2.IMREAD_GRAYSCALE)
            assert sha1(mask) == digest, (c, name)
            image = cv2.imread(str(folder / 'origin' / f'{name}.jpg'), cv2.IMREAD_COLOR)
            assert sha1(image) == theirs['image_tiles'][name.replace('_', '_sat_', 1)], (c, name)
        assert total[int(c)] == len(expected)
