"""EpisodeDataset: episode semantics, reproducibility, DataLoader use, bad files."""
import os
import random
import re

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import make_coco, make_from_labels, make_pascal
from util import transform
from util.datasets.pascal_coco import EpisodeDataset, binarise, fill_boxes, support_mask
from util.config import default_config
from util.datasets import episode_dataset
from util.episodes import batches_of, collate_episodes, episode_seed
from util.files.image_io import BadFileError, read_label


@pytest.fixture(scope='module')
def pascal(tmp_path_factory):
    folder = tmp_path_factory.mktemp('pascal')
    root, train, val = make_pascal(folder)
    return root, train, val, str(folder / 'cache')


def make(pascal, mode='val', shot=1, split=0, **kw):
    root, train, val, cache = pascal
    return EpisodeDataset('pascal', root, train if mode == 'train' else val, split, shot, mode,
                          list_cache_dir=cache, **kw)


def label_of(image_path, ds):
    label_path = next(lab for (img, lab), _, _ in ds.queries if ds.full_path(img) == image_path)
    return read_label(ds.full_path(label_path))


def top_left(h, w):
    """A transform keeping the top-left h×w (helpers.make_pascal images are at least 112×120), so that
    K supports of different sizes stack and labels compare pixel for pixel."""
    return transform.Compose([lambda image, label: (image[:h, :w], label[:h, :w]), transform.ToTensor()])


@pytest.mark.parametrize('mode', ['train', 'val'])
@pytest.mark.parametrize('shot', [1, 5])
def test_episode_semantics(pascal, mode, shot):
    ds = make(pascal, mode, shot, split=1, transform=top_left(112, 120))
    assert ds.classes == ([1, 2, 3, 4, 5] + list(range(11, 21)) if mode == 'train'
                          else [6, 7, 8, 9, 10])
    for i in range(len(ds)):
        random.seed(i)
        item = ds[i]
        c = ds.classes[item['class_index']]
        query_label = label_of(item['query_path'], ds)
        assert np.count_nonzero(query_label == c) >= 2048        # an eligible class
        expected = binarise(query_label, c)[:112, :120]
        assert torch.equal(item['query_mask'], torch.from_numpy(expected).long())
        assert set(item['query_mask'].unique().tolist()) == {0, 1, 255}
        paths = item['support_paths']
        assert len(paths) == shot == len(set(paths)) and item['query_path'] not in paths
        assert item['support'].shape[:2] == (shot, 3) and item['support_masks'].shape[0] == shot
        for path, mask in zip(paths, item['support_masks']):
            assert path in [ds.full_path(p[0]) for p in ds.class_files[c]]
            expected = binarise(label_of_file(path, ds, c), c)[:112, :120]
            assert torch.equal(mask, torch.from_numpy(expected).long())


def label_of_file(image_path, ds, c):
    labels = {ds.full_path(image): ds.full_path(label) for image, label in ds.class_files[c]}
    return read_label(labels[image_path])


def test_val_items_carry_original_label_on_fixed_canvas_and_collate(pascal):
    ds = make(pascal, 'val', transform=transform.val_transform(65))
    assert ds.original_canvas == 128                # largest generated label: 128×128
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_episodes)))
    assert batch['query'].shape == (3, 3, 65, 65)
    assert batch['query_mask_original'].shape == (3, 128, 128)
    for b in range(3):
        h, w = batch['original_size'][b].tolist()
        label = label_of(batch['query_path'][b], ds)
        assert (h, w) == label.shape
        c = ds.classes[batch['class_index'][b]]
        canvas = batch['query_mask_original'][b]
        assert torch.equal(canvas[:h, :w], torch.from_numpy(binarise(label, c)).long())
        assert (canvas[h:] == 255).all() and (canvas[:, w:] == 255).all()


def test_a_configs_training_episodes_take_its_crop_and_augmentation(pascal):
    root, train, val, cache = pascal
    cfg = default_config().replace(data_root=root, train_list=train, val_list=val, list_dir=cache,
                                   train_h=57, train_w=65, scale_min=1.5, scale_max=1.5,
                                   rotate_min=0.0, rotate_max=0.0)
    ds = episode_dataset(cfg, 'train')
    scale, rotate = ds.transform.transforms[:2]
    assert (scale.scale_min, scale.scale_max, rotate.rotate_min, rotate.rotate_max) == (1.5, 1.5, 0, 0)
    item = ds[0]
    assert item['query'].shape == (3, 57, 65) and item['support'].shape == (1, 3, 57, 65)


def test_train_items_have_no_original_label(pascal):
    item = make(pascal, 'train', transform=transform.train_transform(57, 57))[0]
    assert 'query_mask_original' not in item and item['query'].shape == (3, 57, 57)


def test_a_plan_cycles_through_the_queries_and_a_shorter_one_is_its_prefix(pascal):
    ds = make(pascal, 'val', shot=2)
    plan = ds.plan(321, 40)
    assert len(ds) == len(ds.queries) == 15 and len(plan) == 40
    assert [episode.query for episode in plan] == [tuple(ds.queries[e % 15][0]) for e in range(40)]
    assert ds.plan(321, 7) == plan[:7] and ds.plan(123, 40) != plan
    for episode in plan:
        assert episode.class_id in ds.classes and len(episode.supports) == 2
        assert episode.query[0] not in [image for image, _ in episode.supports]


def test_a_planned_episode_is_the_one_drawn_under_its_episode_seed(pascal):
    """Episode e of seed s is what `ds[e % len(ds)]` draws with Python's `random` seeded by
    episode_seed(s, e) (how evaluation drew its episodes before plans), and `load` reads it."""
    ds = make(pascal, 'val', shot=2, transform=transform.val_transform(57))
    for e, episode in enumerate(ds.plan(5, 20)):
        random.seed(episode_seed(5, e))
        item = ds[e % len(ds)]
        assert item['episode'] == episode
        loaded = ds.load(episode)
        assert loaded['episode'] == episode and loaded['class_index'] == item['class_index']
        assert loaded['query_path'] == ds.full_path(episode.query[0]) == item['query_path']
        assert loaded['support_paths'] == [ds.full_path(i) for i, _ in episode.supports]
        for key in ('query', 'query_mask', 'support', 'support_masks', 'query_mask_original'):
            assert torch.equal(loaded[key], item[key]), key


def test_same_seed_same_episode_other_seed_other_episode(pascal):
    ds = make(pascal, 'train', shot=5, transform=transform.train_transform(57, 57))
    random.seed(7)
    a = ds[4]
    random.seed(7)
    b = ds[4]
    for key in ('query', 'query_mask', 'support', 'support_masks'):
        assert torch.equal(a[key], b[key])
    random.seed(8)
    c = ds[4]
    assert not torch.equal(a['support'], c['support'])


def test_dataloader_workers_draw_different_episodes(pascal):
    """The same index in two workers must not give the same augmentation and supports."""
    ds = make(pascal, 'train', shot=5, transform=transform.train_transform(57, 57))
    loader = DataLoader(ds, batch_size=1, sampler=[0, 0], num_workers=2,
                        generator=torch.Generator().manual_seed(0), collate_fn=collate_episodes)
    first, second = list(loader)
    assert first['query_path'] == second['query_path']
    assert not torch.equal(first['query'], second['query'])


def test_coco_episodes(tmp_path):
    root, train, val = make_coco(tmp_path)
    for scheme in (True, False):
        ds = EpisodeDataset('coco', root, val, 2, 5, 'val', use_split_coco=scheme,
                            transform=transform.val_transform(57), list_cache_dir=str(tmp_path / 'cache'))
        assert len(ds.classes) == 20 and all(len(f) >= 6 for f in ds.class_files.values())
        item = ds[0]
        assert ds.classes[item['class_index']] in ds.queries[0][1]


def test_query_class_rule_eligible_or_present(tmp_path):
    labels = [np.full((70, 70), c, np.uint8) for c in (1, 2, 3, 4, 5) for _ in range(3)]
    speck = np.full((70, 70), 1, np.uint8)
    speck[:10, :10] = 2                            # 100 px of class 2: present, not eligible
    root, data_list, _ = make_from_labels(tmp_path, [speck] + labels)
    chosen = {}
    for rule in ('eligible', 'present'):
        ds = EpisodeDataset('pascal', root, data_list, 0, 1, 'val', query_classes=rule,
                            list_cache_dir=str(tmp_path / 'c'))
        assert ds.queries[0][1:] == ([1], [1, 2])
        chosen[rule] = set()
        for seed in range(20):
            random.seed(seed)
            item = ds[0]
            chosen[rule].add(ds.classes[item['class_index']])
            assert item['query_path'] not in item['support_paths']
    assert chosen == {'eligible': {1}, 'present': {1, 2}}


def authors_class_choice(label, mode_classes):
    """The query's class as the authors' SemData.__getitem__ draws it (util/dataset.py of their
    repo), restated: np.unique of the label without 0 and 255, the classes of the mode, then
    label_class[random.randint(1, len(label_class)) - 1]."""
    label_class = [c for c in np.unique(label).tolist() if c not in (0, 255) and c in mode_classes]
    return label_class[random.randint(1, len(label_class)) - 1]


def test_query_classes_are_the_authors_given_the_same_draws(tmp_path):
    """Queries holding an eligible novel class, small novel classes (a speck of 2, 3 or 4
    pixels' worth) and a base class: with the same seed, our episode draws the authors' class."""
    queries = []
    for k in range(4):
        label = np.full((70, 70), 1 + k % 2, np.uint8)      # eligible: 1 or 2
        label[:6, :6 + k] = 3                               # specks of novel classes
        label[10:12, :3] = 4 + k % 2
        label[20:40, 20:40] = 7                             # a base class of fold 0
        label[50:52] = 255
        queries.append(label)
    supports = [np.full((70, 70), c, np.uint8) for c in (1, 2, 3, 4, 5) for _ in range(3)]
    root, data_list, _ = make_from_labels(tmp_path, queries + supports)
    ds = EpisodeDataset('pascal', root, data_list, 0, 1, 'val', list_cache_dir=str(tmp_path / 'c'))
    assert ds.query_classes == 'present'          # the default is the authors' rule
    chosen = set()
    for i in range(len(queries)):
        label = read_label(ds.full_path(ds.queries[i][0][1]))
        for seed in range(25):
            random.seed(seed)
            ours = ds.classes[ds[i]['class_index']]
            random.seed(seed)
            assert ours == authors_class_choice(label, ds.classes), (i, seed)
            chosen.add(ours)
    assert chosen == {1, 2, 3, 4, 5}              # the specks are drawn too


def test_supports_are_stacked_in_reverse_draw_order(pascal, monkeypatch):
    """The authors' SemData prepends each support it draws: the last drawn comes first."""
    ds = make(pascal, 'val', shot=2, transform=top_left(112, 120))
    drawn = []
    draw = ds.draw_supports
    monkeypatch.setattr(ds, 'draw_supports',
                        lambda c, q, rng: drawn.append(draw(c, q, rng)) or drawn[-1])
    (episode,) = ds.plan(0, 1)
    assert episode.supports == (drawn[0][1], drawn[0][0])


# ---- weak (bbox) support annotations ----

def test_fill_boxes_by_hand():
    mask = np.zeros((8, 9), np.uint8)
    mask[1, 1:4] = 1
    mask[2:4, 1] = 1                   # an L: bounding box rows 1..3, cols 1..3
    mask[6, 6] = 1                     # a single pixel
    boxes = fill_boxes(mask)
    expected = np.zeros_like(mask)
    expected[1:5, 1:5] = 1             # the authors' inclusive corner: one pixel more
    expected[6:8, 6:8] = 1
    assert np.array_equal(boxes, expected)


def test_bbox_support_mask_keeps_ignore():
    label = np.zeros((6, 6), np.uint8)
    label[1, 1] = label[2, 2] = label[3, 3] = 4    # one 8-connected component (a diagonal)
    label[1, 3] = 255                  # ignore inside the box stays ignore
    label[0, 5] = 9                    # another class
    mask = support_mask(label, 4, 'bbox')
    expected = np.zeros_like(label)
    expected[1:5, 1:5] = 1
    expected[1, 3] = 255
    assert np.array_equal(mask, expected)
    assert np.array_equal(support_mask(label, 4, 'mask'), binarise(label, 4))


def test_bbox_episodes(tmp_path):
    disc = np.zeros((90, 90), np.uint8)
    cv2.circle(disc, (45, 45), 30, 1, -1)          # 2821 px, bounding box 61×61
    root, data_list, _ = make_from_labels(tmp_path, [disc * c for c in (1, 2, 3, 4, 5)] * 3)
    for ann_type, area in (('mask', np.count_nonzero(disc)), ('bbox', 62 * 62)):
        ds = EpisodeDataset('pascal', root, data_list, 0, 2, 'val', ann_type=ann_type,
                            list_cache_dir=str(tmp_path / 'cache'))
        item = ds[0]
        assert [int(m.sum()) for m in item['support_masks']] == [area, area]
        assert int(item['query_mask'].sum()) == np.count_nonzero(disc)   # query stays a mask


# ---- bad files at episode time ----

@pytest.fixture
def small(tmp_path):
    labels = [np.full((70, 70), c, np.uint8) for c in (1, 2, 3, 4, 5) for _ in range(3)]
    root, data_list, pairs = make_from_labels(tmp_path, labels)
    EpisodeDataset('pascal', root, data_list, 0, 1, 'val', list_cache_dir=str(tmp_path / 'c'))
    return root, data_list, pairs, str(tmp_path / 'c')


def small_dataset(small, **kw):
    root, data_list, _, cache = small
    return EpisodeDataset('pascal', root, data_list, 0, 1, 'val', list_cache_dir=cache, **kw)


def test_unreadable_image_names_file_and_can_be_skipped(small):
    root, _, pairs, _ = small
    with open(os.path.join(root, pairs[0][0]), 'wb') as f:
        f.write(b'\xff\xd8 broken jpeg')
    ds = small_dataset(small)
    with pytest.raises(BadFileError, match='img_0000.jpg: cannot be decoded'):
        ds[0]
    ds = small_dataset(small, skip_bad_files=True)
    random.seed(0)
    item = ds[0]
    assert item['query_path'] != os.path.join(root, pairs[0][0]) and ds.skipped == 1
    # the item records the episode loaded in place of the bad one
    assert item['query_path'] == ds.full_path(item['episode'].query[0])
    assert item['support_paths'] == [ds.full_path(i) for i, _ in item['episode'].supports]


def test_size_mismatch_names_both_files(small):
    root, _, pairs, _ = small
    cv2.imwrite(os.path.join(root, pairs[0][1]), np.full((60, 70), 1, np.uint8))
    with pytest.raises(BadFileError, match=r'lab_0000.png: label size 60x70 differs from image '
                                           r'.*img_0000.jpg size 70x70'):
        small_dataset(small)[0]


@pytest.mark.parametrize('damage, error, message', [
    ('remove', FileNotFoundError, 'image not found: .*img_0000.jpg'),
    ('corrupt', BadFileError, 'img_0000.jpg: cannot be decoded')])
def test_error_in_dataloader_worker_names_file(small, damage, error, message):
    root, _, pairs, _ = small
    path = os.path.join(root, pairs[0][0])
    if damage == 'remove':
        os.remove(path)
    else:
        with open(path, 'wb') as f:
            f.write(b'garbage')
    raised, text = first_batch_error(DataLoader(small_dataset(small), batch_size=1,
                                                num_workers=1))
    assert raised is error and re.search(message, text)


def first_batch_error(loader):
    """(type, message) of the error loading the first batch."""
    with batches_of(loader) as batches:
        try:
            next(batches)
        except Exception as e:
            return type(e), str(e)
    raise AssertionError('no error raised')


def test_supports_of_different_sizes_need_a_transform(tmp_path):
    labels = [np.full((70 + 8 * k, 70), c, np.uint8) for c in (1, 2, 3, 4, 5) for k in range(3)]
    root, data_list, _ = make_from_labels(tmp_path, labels)
    ds = EpisodeDataset('pascal', root, data_list, 0, 2, 'val',
                        list_cache_dir=str(tmp_path / 'c'))
    with pytest.raises(ValueError, match='different sizes'):
        ds[0]


@pytest.mark.parametrize('kw, message', [({'mode': 'test'}, 'unknown mode'),
                                         ({'ann_type': 'scribble'}, 'unknown ann_type'),
                                         ({'shot': 0}, 'shot must be')])
def test_bad_arguments(small, kw, message):
    root, data_list, _, cache = small
    args = {'mode': 'val', 'shot': 1, **kw}
    with pytest.raises(ValueError, match=message):
        EpisodeDataset('pascal', root, data_list, 0, args.pop('shot'), args.pop('mode'),
                       list_cache_dir=cache, **args)


def test_a_truncated_image_is_a_bad_file_and_can_be_skipped(small):
    root, _, pairs, _ = small
    path = os.path.join(root, pairs[0][0])
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 3])       # libjpeg would decode it, grey below the cut
    with pytest.raises(BadFileError, match='img_0000.jpg: truncated or corrupt JPEG'):
        small_dataset(small)[0]
    ds = small_dataset(small, skip_bad_files=True)
    random.seed(0)
    assert ds[0]['query_path'] != path and ds.skipped == 1


def test_an_image_the_val_resize_cannot_shrink_is_a_bad_file_naming_it(tmp_path):
    thin = np.full((10, 600), 1, np.uint8)            # at val_size 57: 0×56
    labels = [thin] + [np.full((70, 70), c, np.uint8) for c in (1, 2, 3, 4, 5) for _ in range(2)]
    root, data_list, pairs = make_from_labels(tmp_path, labels)
    with pytest.raises(BadFileError, match=r'img_0000.jpg: 10×600 image: too thin to keep a '
                                           r'pixel of its short side at val_size 57'):
        EpisodeDataset('pascal', root, data_list, 0, 1, 'val', transform=transform.val_transform(57),
                       list_cache_dir=str(tmp_path / 'c'))      # found from the list's sizes


def test_loading_workers_are_capped_at_the_cpus_with_a_note(monkeypatch, caplog):
    """The configs' 8 workers on a 2-core machine: 2, said once in the log."""
    import logging

    from util import episodes
    monkeypatch.setattr(episodes.os, 'sched_getaffinity', lambda pid: {0, 1}, raising=False)
    episodes._note_capped.cache_clear()
    with caplog.at_level(logging.INFO, logger='sccan'):
        loaders = [episodes.make_loader(list(range(4)), None, 2, 8, drop_last=False) for _ in range(2)]
        assert episodes.make_loader(list(range(4)), None, 2, 1, drop_last=False).num_workers == 1
    assert [loader.num_workers for loader in loaders] == [2, 2]
    assert [r.getMessage() for r in caplog.records] == [
        'workers 8: 2 CPU(s) available, loading with 2 processes (the same episodes)']
