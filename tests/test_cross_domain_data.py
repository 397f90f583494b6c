"""The cross-domain data sets (util/datasets/cross_domain*.py, patnet.py): PATNet's listing and
random draws by hand, the items `load` gives, one's own classes for training, and the errors."""
import logging
import os
import random
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from tools import make_cross_domain_trees as trees
from util.config import DEFAULT_TEST_NUM, ConfigError, load_config
from util.datasets import episode_dataset
from util.datasets.cross_domain import PatnetEpisodes
from util.datasets.cross_domain_layouts import layout_of
from util.datasets.patnet import listing, patnet_mask, pick
from util.files.image_io import BadFileError
from util.folds import fold_classes
from util.transform import train_transform, val_transform


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    return trees.write_trees(str(tmp_path_factory.mktemp('trees')), seed=0)


@pytest.fixture
def copy(tree, tmp_path):
    """A copy of one benchmark folder of the tree, to break."""
    def make(name):
        return shutil.copytree(tree[name], tmp_path / name)
    return make


def data_set(layout, data_set, shot, size=33):
    return PatnetEpisodes(layout, data_set, shot, val_transform(size))


def test_listing_keeps_the_names_patnets_glob_and_split_keep(tmp_path):
    for name in ('b.jpg', 'a.jpg', '10.jpg', '2.jpg', '.h.jpg', 'x.y.jpg', 'z.JPG', 'noext',
                 'm.jpg.bak', 'n.png'):
        (tmp_path / name).write_bytes(b'')
    # sorted by name; no hidden file; the text after the FIRST dot decides ('m.jpg.bak' stays)
    assert listing(str(tmp_path), 'jpg') == ['10.jpg', '2.jpg', 'a.jpg', 'b.jpg', 'm.jpg.bak']
    assert listing(str(tmp_path / 'absent'), 'jpg') == []


def test_pick_draws_what_np_random_choice_draws():
    """Their `np.random.choice(seq, 1, replace=False)[0]` after np.random.seed(s), for lists of
    several lengths in a row, and our pick on RandomState(s): the same indices."""
    sizes = [10, 3, 7, 10, 1, 25, 2] * 5
    np.random.seed(11)
    theirs = [int(np.random.choice(range(n), 1, replace=False)[0]) for n in sizes]
    rng = np.random.RandomState(11)
    assert [pick(rng, n) for n in sizes] == theirs


def test_a_shorter_plan_is_a_prefix_and_fss_queries_come_round_again(tree, caplog):
    ds = data_set(layout_of('fss', tree['FSS-1000'], tree['fss_classes']), 'fss', 5)
    with caplog.at_level(logging.WARNING, logger='sccan'):
        long = ds.plan(3, 70)
    assert 'past one pass over its 30 query images' in caplog.text
    assert ds.plan(3, 10) == long[:10]
    assert [e.query for e in long[30:60]] == [e.query for e in long[:30]]
    assert [e.query[0] for e in long[:11]] == [f'{long[0].query[0].split("/")[0]}/{n}.jpg'
                                               for n in (1, 10, 2, 3, 4, 5, 6, 7, 8, 9)] + \
        [long[10].query[0]]          # sorted names: 1, 10, 2, ...; then the next class
    assert [e.class_id for e in long[:30]] == [760] * 10 + [761] * 10 + [999] * 10


def test_class_cycle_episodes_go_round_the_classes(tree):
    ds = data_set(layout_of('deepglobe', tree['Deepglobe']), 'deepglobe', 1)
    episodes = ds.plan(0, 13)
    assert [e.class_id for e in episodes] == [0, 1, 2, 3, 4, 5] * 2 + [0]
    assert all(e.query[0].startswith(f'{e.class_id + 1}/test/origin/') for e in episodes)
    assert ds.class_names[0] == 'agriculture'
    # the episodes a test runs by default (test_num): PATNet's `num=600`
    assert DEFAULT_TEST_NUM['deepglobe'] == 600


def test_mask_is_binarised_at_128_then_resized_nearest(tmp_path):
    grey = np.array([[0, 127, 128, 255], [1, 200, 129, 90], [128, 127, 0, 0], [255, 255, 3, 4]],
                    np.uint8)
    cv2.imwrite(str(tmp_path / 'm.png'), grey)
    binary = (grey >= 128).astype(np.uint8)
    assert np.array_equal(patnet_mask(str(tmp_path / 'm.png'), size=8),
                          np.kron(binary, np.ones((2, 2), np.uint8)))


def test_load_gives_sccan_its_input_and_the_scorer_patnets_mask(tree):
    ds = data_set(layout_of('isic', tree['ISIC']), 'isic', 2, size=33)
    episode = ds.plan(0, 2)[1]
    item = ds.load(episode)
    assert item['query'].shape == (3, 33, 33) and item['query_mask'].shape == (33, 33)
    assert item['support'].shape == (2, 3, 33, 33) and item['support_masks'].shape == (2, 33, 33)
    assert torch.equal(item['original_size'], torch.tensor([400, 400]))
    scored = torch.from_numpy(patnet_mask(os.path.join(tree['ISIC'], episode.query[1]))).long()
    assert torch.equal(item['query_mask_original'], scored)
    assert item['class_index'] == ds.classes.index(episode.class_id) == 1
    assert item['query_path'] == os.path.join(tree['ISIC'], episode.query[0])
    assert item['episode'] == episode


def test_own_classes_train_with_distinct_supports_under_the_training_transform(tree, tmp_path):
    classes = tmp_path / 'train.txt'
    classes.write_text('accordion\nwooden_spoon\n')
    layout = layout_of('folder', tree['FSS-1000'], str(classes))
    assert layout.classes == [0, 1] and layout.candidates is None
    ds = PatnetEpisodes(layout, 'folder', 3, train_transform(33))
    random.seed(5)
    item = ds[13]
    assert item['query'].shape == (3, 33, 33) and item['support'].shape == (3, 3, 33, 33)
    assert item['class_index'] == 1 and item['query_path'].endswith('wooden_spoon/3.jpg')  # 1, 10, 2, 3
    assert len(set(item['support_paths'])) == 3 and item['query_path'] not in item['support_paths']
    assert set(np.unique(item['query_mask'].numpy())) <= {0, 1, 255}


def test_a_class_with_fewer_than_shot_plus_one_images_is_refused(copy, tmp_path):
    root = copy('FSS-1000')
    classes = tmp_path / 'classes.txt'
    classes.write_text('accordion\n')
    for n in range(4, 11):
        os.remove(root / 'accordion' / f'{n}.jpg')
    layout = layout_of('folder', str(root), str(classes))
    data_set(layout, 'folder', 2)
    with pytest.raises(ValueError, match=r'accordion: 3 images, fewer than shot \+ 1 = 6$'):
        data_set(layout, 'folder', 5)


def test_an_empty_support_mask_is_refused_for_ones_own_data_and_named_for_a_benchmark(
        copy, tree, tmp_path, caplog):
    """The rule of support masks: the folder data set refuses a support without foreground (it
    scored such a class IoU 0, averaged into mIoU without a word); PATNet's benchmarks, whose
    episodes are fixed, score it and name it in a warning."""
    root = copy('FSS-1000')
    classes = tmp_path / 'classes.txt'
    classes.write_text('accordion\nwooden_spoon\n')
    for n in range(1, 11):
        mask = root / 'accordion' / f'{n}.png'
        cv2.imwrite(str(mask), np.zeros(cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).shape, np.uint8))
    own = data_set(layout_of('folder', str(root), str(classes)), 'folder', 1)
    episode = next(e for e in own.plan(0, 20) if e.class_id == 0)
    with pytest.raises(BadFileError, match=re.escape(
            f'{root / episode.supports[0][1]} (a support mask) has no foreground pixels: a '
            'support must show its object (tools/check_data.py lists such masks)')):
        own.load(episode)
    with pytest.raises(BadFileError, match='has no foreground pixels'):
        PatnetEpisodes(layout_of('folder', str(root), str(classes)), 'folder', 1,
                       train_transform(33))[0]
    benchmark = data_set(layout_of('fss', str(root), tree['fss_classes']), 'fss', 1)
    episode = next(e for e in benchmark.plan(0, 20) if 'accordion' in e.query[0])
    with caplog.at_level(logging.WARNING, logger='sccan'):
        item = benchmark.load(episode)
    assert not (item['support_masks'] == 1).any()
    assert f'{root / episode.supports[0][1]} (a support mask) has no foreground pixels' in caplog.text


def test_fss_needs_its_ten_numbered_images_and_every_mask(copy, tree):
    root = copy('FSS-1000')
    os.remove(root / 'accordion' / '7.jpg')
    with pytest.raises(FileNotFoundError, match=r'accordion: 7.jpg not found \(an FSS-1000 class'):
        data_set(layout_of('fss', str(root), tree['fss_classes']), 'fss', 1)
    os.remove(root / 'wooden_spoon' / '3.png')
    layout = layout_of('folder', str(root), tree['fss_classes'])
    assert [kind for kind, _, _ in layout.problems] == ['missing']
    with pytest.raises(FileNotFoundError, match=r'wooden_spoon/3.png: mask not found \(of '):
        data_set(layout, 'folder', 1)


def test_chest_xray_masks_must_name_their_image(copy):
    root = copy('LungSegmentation')
    masks = sorted(os.listdir(root / 'masks'))
    os.rename(root / 'masks' / masks[0], root / 'masks' / 'MCUCXR_0001_1.png')
    os.remove(root / 'CXR_png' / masks[1].replace('_mask', ''))
    layout = layout_of('lung', str(root))
    kinds = [(kind, os.path.basename(path)) for kind, path, _ in layout.problems]
    assert kinds == [('name', 'MCUCXR_0001_1.png'), ('missing', masks[1].replace('_mask', ''))]
    with pytest.raises(ValueError, match=r'MCUCXR_0001_1.png: a mask name must end in _mask.png.* '
                                         r'\(1 more problems'):
        data_set(layout, 'lung', 1)
    assert layout.unused == ['CXR_png/CHNCXR_0008_0.png']


def test_configs_refuse_what_cannot_be_right(tree):
    deepglobe = load_config('config/cross_domain/deepglobe_resnet50.yaml',
                            ['data_root', tree['Deepglobe'], 'model', 'tiny'])
    with pytest.raises(ConfigError, match='deepglobe is a test benchmark'):
        episode_dataset(deepglobe, 'train')
    with pytest.raises(ConfigError, match=r'ori_resize: False would score at val_size'):
        episode_dataset(deepglobe.replace(ori_resize=False), 'val')
    with pytest.raises(ConfigError, match='skip_bad_files is not available for deepglobe'):
        episode_dataset(deepglobe.replace(skip_bad_files=True), 'val')
    assert episode_dataset(deepglobe, 'val').classes == list(range(6))
    pascal = load_config('config/pascal/pascal_all_resnet50.yaml')
    with pytest.raises(ConfigError, match='split 4 trains on every class and leaves none novel'):
        episode_dataset(pascal, 'val')


def test_split_4_trains_on_every_class():
    assert fold_classes('pascal', 4) == (list(range(1, 21)), [])
    assert fold_classes('coco', 4, use_split_coco=True)[0] == list(range(1, 81))
