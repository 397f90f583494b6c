"""The synthetic benchmark generator (util/datasets/synthetic.py, tools/make_synthetic.py)."""
import hashlib
import os

import cv2
import numpy as np
import pytest

from helpers import assert_one_error, files_below, run_cli
from util.datasets import synthetic as S
from util.datasets.pascal_coco import EpisodeDataset
from util.lists import MIN_PIXELS
from util.transform import val_transform

DEMO_SEED = 0   # tools/demo.py's default


def test_same_seed_writes_the_same_bytes_another_seed_other_images(tmp_path):
    for name, seed in (('a', 3), ('b', 3), ('c', 4)):
        S.write_benchmark(str(tmp_path / name), seed=seed, n_train=4, n_val=3)
    a, b, c = (files_below(tmp_path / n) for n in 'abc')
    assert len(a) == 4 + 3 + 4 + 3 + 3      # jpg + png per image, two lists, manifest
    assert a == b
    labels = [k for k in a if k.endswith('.png')]
    assert all(a[k] != c[k] for k in labels)


def test_an_image_depends_only_on_seed_split_and_index():
    image, label = S.scene(7, 'val', 5)
    assert 5 + 1 in label           # image i shows class i mod 20 + 1
    again_image, again_label = S.scene(7, 'val', 5)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(label, again_label)
    _, train_label = S.scene(7, 'train', 5)
    assert not np.array_equal(label, train_label)


def test_ignore_band_separates_every_region():
    label = np.zeros((6, 7), np.uint8)
    label[2:4, 2:4] = 9
    expected = np.zeros((6, 7), np.uint8)
    expected[1:5, 1:5] = 255            # the 3x3 max != min band: one pixel on both sides
    np.testing.assert_array_equal(S.ignore_band(label), expected)


def neighbour_pairs(label):
    """(a, b) label values of all 8-neighbour pixel pairs."""
    pairs = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = label[max(dy, 0):, max(dx, 0):label.shape[1] + min(dx, 0)]
        b = label[:label.shape[0] - dy, max(-dx, 0):label.shape[1] - max(dx, 0)]
        pairs.append(np.stack([a.ravel(), b.ravel()], 1))
    return np.concatenate(pairs)


def test_scenes_hold_2_or_3_eligible_classes_fenced_by_ignore():
    counts = set()
    for i in range(25):
        image, label = S.scene(DEMO_SEED, 'train', i)
        assert image.shape == label.shape + (3,) and image.dtype == label.dtype == np.uint8
        assert S.IMAGE_H[0] <= label.shape[0] <= S.IMAGE_H[1]
        assert S.IMAGE_W[0] <= label.shape[1] <= S.IMAGE_W[1]
        classes = [c for c in np.unique(label) if c not in (0, 255)]
        counts.add(len(classes))
        assert all(1 <= c <= S.NUM_CLASSES for c in classes)
        assert sum((label == c).sum() >= MIN_PIXELS for c in classes) >= 2
        # no object pixel touches background or another object: the 255 band is in between
        pairs = neighbour_pairs(label)
        pairs = pairs[(pairs != 255).all(1)]
        assert (pairs[:, 0] == pairs[:, 1]).all()
        assert (label == 255).any()
    assert counts == {2, 3}


def test_class_appearances_are_distinct():
    styles = S.class_styles()
    assert len(styles) == S.NUM_CLASSES
    primaries = np.array([s.primary for s in styles])
    gaps = np.abs(primaries[:, None] - primaries[None]).max(-1)
    assert gaps[~np.eye(S.NUM_CLASSES, dtype=bool)].min() > 20   # RGB levels
    assert len({(s.texture, s.shape, s.period) for s in styles}) == S.NUM_CLASSES


@pytest.fixture(scope='module')
def benchmark(tmp_path_factory):
    # Images depend on (seed, split, index) only, so these are the first images of the demo's
    # data: coverage here implies coverage for the demo's larger lists.
    root = tmp_path_factory.mktemp('synthetic')
    lists = S.write_benchmark(str(root), seed=DEMO_SEED, n_train=110, n_val=50)
    return str(root), lists, str(tmp_path_factory.mktemp('lists'))


def test_the_pascal_loader_reads_it_and_every_fold_has_enough_images(benchmark):
    root, lists, cache = benchmark
    for split in range(4):
        for mode in ('train', 'val'):
            ds = EpisodeDataset('pascal', root, lists[mode], split, 1, mode,
                                transform=val_transform(57), list_cache_dir=cache)
            assert sorted(ds.class_files) == ds.classes
            assert min(len(f) for f in ds.class_files.values()) >= 2, (split, mode)
    item = ds[0]
    assert item['query'].shape == (3, 57, 57) and item['support'].shape == (1, 3, 57, 57)
    assert (item['query_mask'] == 1).any() and (item['support_masks'] == 1).any()
    assert set(item['query_mask'].unique().tolist()) <= {0, 1, 255}


def test_list_lines_have_the_pascal_format(benchmark):
    root, lists, _ = benchmark
    assert os.path.basename(lists['train']) == 'synthetic_train.txt'
    with open(lists['val']) as f:
        lines = f.read().splitlines()
    assert len(lines) == 50
    image, label = lines[0].split(' ')
    assert (image, label) == ('JPEGImages/syn_val_00000.jpg',
                              'SegmentationClassAug/syn_val_00000.png')
    assert cv2.imread(os.path.join(root, label), cv2.IMREAD_UNCHANGED).ndim == 2


def test_make_synthetic_cli_and_manifest(tmp_path):
    from tools import make_synthetic
    root = str(tmp_path / 'data')
    lists = make_synthetic.main(['--root', root, '--seed', '5', '--train', '2', '--val', '1'])
    assert sum(1 for _ in open(lists['train'])) == 2 and sum(1 for _ in open(lists['val'])) == 1
    assert S.is_generated(root, 5, 2, 1)
    assert not S.is_generated(root, 6, 2, 1) and not S.is_generated(root, 5, 3, 1)
    assert not S.is_generated(str(tmp_path / 'nothing'), 5, 2, 1)


def test_make_synthetic_never_replaces_another_benchmark_or_writes_among_other_files(tmp_path,
                                                                                     capsys):
    from tools import make_synthetic
    root = tmp_path / 'data'
    make_synthetic.main(['--root', str(root), '--seed', '5', '--train', '3', '--val', '2'])
    before = files_below(root)
    status, _, err = run_cli(make_synthetic.main, ['--root', str(root), '--seed', '6', '--train',
                                                   '2', '--val', '2'], capsys)
    assert_one_error(status, err, f'{root} holds another synthetic benchmark (seed 5, 3 + 2 '
                     'images); writing seed 6, 2 + 2 images would replace', '--overwrite')
    assert files_below(root) == before
    # the same benchmark again: left as it is
    status, out, _ = run_cli(make_synthetic.main, ['--root', str(root), '--seed', '5', '--train',
                                                   '3', '--val', '2'], capsys)
    assert status == 0 and 'holds this benchmark already' in out and files_below(root) == before
    # --overwrite replaces it whole: no image of the old one is left unlisted
    make_synthetic.main(['--root', str(root), '--seed', '6', '--train', '2', '--val', '2',
                         '--overwrite'])
    fresh = tmp_path / 'fresh'
    S.write_benchmark(str(fresh), seed=6, n_train=2, n_val=2)
    assert files_below(root) == files_below(fresh)
    # a folder of one's own images is refused, and with --overwrite they stay
    photos = tmp_path / 'photos'
    (photos / 'JPEGImages').mkdir(parents=True)
    (photos / 'JPEGImages' / 'holiday.jpg').write_bytes(b'mine')
    status, _, err = run_cli(make_synthetic.main, ['--root', str(photos), '--train', '2',
                                                   '--val', '1'], capsys)
    assert_one_error(status, err, f'{photos} holds files that are not a synthetic benchmark (1, '
                     f'e.g. {photos / "JPEGImages" / "holiday.jpg"})')
    assert files_below(photos) == {'JPEGImages/holiday.jpg': hashlib.sha1(b'mine').hexdigest()}
    make_synthetic.main(['--root', str(photos), '--train', '2', '--val', '1', '--overwrite'])
    assert (photos / 'JPEGImages' / 'holiday.jpg').read_bytes() == b'mine'
    assert S.is_generated(str(photos), 0, 2, 1)


def test_bad_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match='n_train and n_val must be positive'):
        S.write_benchmark(str(tmp_path), n_train=0, n_val=3)


def test_processes_write_the_same_bytes(tmp_path):
    """Drawn in other processes (the GPU kit's data step), each image is the one a single
    process writes, and the lists keep their order."""
    for name, processes in (('one', 1), ('three', 3)):
        S.write_benchmark(str(tmp_path / name), seed=2, n_train=5, n_val=4, processes=processes)
    assert files_below(tmp_path / 'one') == files_below(tmp_path / 'three')
