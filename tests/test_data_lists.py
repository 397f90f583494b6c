"""Lists built from the data: eligibility, fold filtering, the scan cache, bad input."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

import util.lists as lists
from helpers import make_from_labels, make_pascal
from util.datasets.pascal_coco import EpisodeDataset
from util.files.image_io import BadFileError


def label_with(pixel_counts, size=(80, 80)):
    """A label holding exactly pixel_counts[c] pixels of each class c (row-major runs)."""
    label = np.zeros(size, np.uint8).ravel()
    start = 0
    for c, n in pixel_counts.items():
        label[start:start + n] = c
        start += n
    return label.reshape(size)


@pytest.fixture
def mixed(tmp_path):
    """Five images (PASCAL ids): fold 0 has novel classes 1..5."""
    labels = [label_with({1: 2047, 2: 2048}),        # 0: only class 2 eligible
              label_with({6: 3000, 1: 10}),          # 1: base 6 + a speck of novel 1
              label_with({1: 3000, 6: 3000}),        # 2: novel 1 and base 6, both eligible
              label_with({7: 2048, 255: 500}),       # 3: base only
              label_with({8: 100})]                  # 4: nothing eligible
    root, data_list, pairs = make_from_labels(tmp_path, labels)
    return root, data_list, pairs, str(tmp_path / 'cache')


def derive(mixed, split, mode, min_pixels=lists.MIN_PIXELS):
    root, data_list, pairs, cache = mixed
    listed, records = lists.class_pixels('pascal', root, data_list, cache)
    assert listed == pairs
    from util.folds import fold_classes
    base, novel = fold_classes('pascal', split)
    classes = base if mode == 'train' else novel
    queries, class_files, sizes = lists.fold_lists(listed, records, classes, novel, mode,
                                                   min_pixels)
    return {pairs.index(q[0]): q[1] for q in queries}, class_files, pairs


def test_eligibility_threshold_is_2048_pixels(mixed):
    eligible, class_files, pairs = derive(mixed, 0, 'val')
    assert eligible[0] == [2]                     # 2047 px of class 1 do not count, 2048 do
    assert pairs[0] not in class_files[1] and pairs[0] in class_files[2]
    eligible, _, _ = derive(mixed, 0, 'val', min_pixels=2047)
    assert eligible[0] == [1, 2]


def test_train_drops_images_with_any_novel_pixel_and_val_keeps_them(mixed):
    train, class_files, pairs = derive(mixed, 0, 'train')
    assert sorted(train) == [3]                   # 1 has a 10-px novel speck, 2 a novel object
    assert class_files[6] == [] and class_files[7] == [pairs[3]]
    val, _, _ = derive(mixed, 0, 'val')
    assert sorted(val) == [0, 2] and val[2] == [1]
    # in fold 2 (novel 11..15) nothing is dropped: base classes 1, 2, 6, 7 eligible
    train2, _, _ = derive(mixed, 2, 'train')
    assert train2 == {0: [2], 1: [6], 2: [1, 6], 3: [7]}


def test_scan_records_sizes_and_pixel_counts(mixed):
    root, data_list, pairs, cache = mixed
    _, records = lists.class_pixels('pascal', root, data_list, cache)
    assert records[3] == {'size': [80, 80], 'pixels': [[7, 2048]]}   # 255 not counted
    assert records[1]['pixels'] == [[1, 10], [6, 3000]]


def test_cache_reused_and_rebuilt_when_list_changes(mixed, monkeypatch):
    root, data_list, pairs, cache = mixed
    lists.class_pixels('pascal', root, data_list, cache)
    path = lists.cache_path('pascal', root, data_list, cache)
    assert os.path.isfile(path)
    assert path.startswith(cache)
    with open(path) as f:                          # relative paths only
        assert root not in f.read()

    calls = []
    real_scan = lists.scan_labels
    monkeypatch.setattr(lists, 'scan_labels', lambda *a, **k: calls.append(1) or real_scan(*a, **k))
    lists.class_pixels('pascal', root, data_list, cache)
    assert calls == []                             # reused
    with open(data_list) as f:
        lines = f.readlines()
    with open(data_list, 'w') as f:
        f.writelines(lines[:3])                    # the list changed
    listed, records = lists.class_pixels('pascal', root, data_list, cache)
    assert calls == [1] and len(records) == 3
    lists.class_pixels('pascal', root, data_list, cache)
    assert calls == [1]


def test_cache_rebuilt_when_format_or_data_set_differs(mixed, monkeypatch):
    root, data_list, pairs, cache = mixed
    lists.class_pixels('pascal', root, data_list, cache)
    path = lists.cache_path('pascal', root, data_list, cache)
    with open(path) as f:
        content = json.load(f)
    content['key']['format'] = -1
    content['records'] = []
    with open(path, 'w') as f:
        json.dump(content, f)
    _, records = lists.class_pixels('pascal', root, data_list, cache)
    assert len(records) == 5
    assert (lists.cache_key('coco', root, data_list, pairs)
            != lists.cache_key('pascal', root, data_list, pairs))


def test_cache_rebuilt_when_a_label_is_regenerated(mixed, monkeypatch):
    root, data_list, pairs, cache = mixed
    lists.class_pixels('pascal', root, data_list, cache)
    calls = []
    real_scan = lists.scan_labels
    monkeypatch.setattr(lists, 'scan_labels', lambda *a, **k: calls.append(1) or real_scan(*a, **k))
    label = os.path.join(root, pairs[0][1])
    stat = os.stat(label)
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # rewritten a second later
    lists.class_pixels('pascal', root, data_list, cache)
    assert calls == [1]


def test_same_list_name_under_two_data_roots_keeps_two_caches(mixed, tmp_path):
    root, data_list, _, cache = mixed
    other_root = tmp_path / 'copy'
    shutil.copytree(root, other_root)
    assert lists.cache_path('pascal', root, data_list, cache) != \
        lists.cache_path('pascal', str(other_root), data_list, cache)


def test_duplicate_lines_are_dropped(tmp_path):
    path = tmp_path / 'l.txt'
    path.write_text('a.jpg a.png\n\nb.jpg b.png\na.jpg a.png\n')
    assert lists.read_list(str(path)) == [('a.jpg', 'a.png'), ('b.jpg', 'b.png')]


def test_malformed_list_line_names_file_and_line(tmp_path):
    path = tmp_path / 'l.txt'
    path.write_text('a.jpg a.png\nonly_one_field.jpg\n')
    with pytest.raises(ValueError, match=r'l\.txt:2'):
        lists.read_list(str(path))


# ---- bad input: each a clear error naming the path or value ----

@pytest.fixture(scope='module')
def pascal(tmp_path_factory):
    return make_pascal(tmp_path_factory.mktemp('pascal'))


def dataset(root, data_list, cache, **kw):
    return EpisodeDataset('pascal', root, data_list, 0, 1, 'val', list_cache_dir=str(cache), **kw)


def test_missing_data_root(tmp_path, pascal):
    with pytest.raises(FileNotFoundError, match='data root not found: .*nowhere'):
        dataset(str(tmp_path / 'nowhere'), pascal[2], tmp_path)


def test_missing_list_file(tmp_path, pascal):
    with pytest.raises(FileNotFoundError, match='list file not found: .*missing.txt'):
        dataset(pascal[0], str(tmp_path / 'missing.txt'), tmp_path)


@pytest.mark.parametrize('missing', ['image', 'label'])
def test_list_line_to_missing_file(tmp_path, missing):
    root, data_list, pairs = make_from_labels(tmp_path, [label_with({1: 3000})] * 3)
    gone = pairs[1][0 if missing == 'image' else 1]
    os.remove(os.path.join(root, gone))
    with pytest.raises(FileNotFoundError, match=f'{missing} not found: .*{gone}'):
        dataset(root, data_list, tmp_path / 'cache')


def test_unreadable_label(tmp_path):
    root, data_list, pairs = make_from_labels(tmp_path, [label_with({1: 3000})] * 3)
    with open(os.path.join(root, pairs[2][1]), 'wb') as f:
        f.write(b'not a png at all')
    with pytest.raises(BadFileError, match='lab_0002.png: cannot be decoded'):
        dataset(root, data_list, tmp_path / 'cache')


def test_colour_label_refused(tmp_path):
    root, data_list, pairs = make_from_labels(tmp_path, [label_with({1: 3000})] * 3)
    cv2.imwrite(os.path.join(root, pairs[0][1]), np.zeros((80, 80, 3), np.uint8))
    with pytest.raises(BadFileError, match='lab_0000.png: label must be a single-channel'):
        dataset(root, data_list, tmp_path / 'cache')


def test_label_values_outside_classes(tmp_path):
    root, data_list, pairs = make_from_labels(tmp_path, [label_with({1: 3000})] * 2 +
                                              [label_with({1: 3000, 21: 5, 254: 1})])
    with pytest.raises(BadFileError, match=r'lab_0002.png: label values \[21, 254\] outside'):
        dataset(root, data_list, tmp_path / 'cache')


def test_label_values_are_fine_for_coco(tmp_path):
    root, data_list, _ = make_from_labels(tmp_path, [label_with({21: 3000, 80: 2100})])
    _, records = lists.class_pixels('coco', root, data_list, str(tmp_path / 'cache'))
    assert records[0]['pixels'] == [[21, 3000], [80, 2100]]


def test_class_with_too_few_eligible_images(tmp_path):
    labels = [label_with({c: 3000}) for c in (1, 2, 3, 4, 5) for _ in range(2)]
    labels[0] = label_with({1: 2000})              # class 1 keeps 1 eligible image
    root, data_list, _ = make_from_labels(tmp_path, labels)
    with pytest.raises(ValueError, match=r'shot \+ 1 = 2 .*\{1: 1\}'):
        dataset(root, data_list, tmp_path / 'cache')
    with pytest.raises(ValueError, match=r'shot \+ 1 = 6 .*\{1: 1, 2: 2, 3: 2, 4: 2, 5: 2\}'):
        EpisodeDataset('pascal', root, data_list, 0, 5, 'val',
                       list_cache_dir=str(tmp_path / 'cache'))


def test_a_list_without_episodes_says_why(tmp_path):
    """Fold 0's training drops every image showing a novel class (1-5), however little of it."""
    labels = [label_with({c: 3000, 1: 5}) for c in (6, 7)] + [label_with({8: 100})]
    root, data_list, _ = make_from_labels(tmp_path, labels)
    train = dict(split=0, shot=1, mode='train', list_cache_dir=str(tmp_path / 'cache'))
    with pytest.raises(ValueError) as refused:
        EpisodeDataset('pascal', root, data_list, **train)
    assert str(refused.value) == (
        f'{data_list}: no image has a train class of fold 0 (pascal) with 2048 pixels or more; 2 '
        'of its 3 images show a novel class of the fold [1, 2, 3, 4, 5] (any pixel of it), and '
        'training leaves those out')
    with pytest.raises(ValueError, match=r'with 2048 pixels or more$'):
        dataset(root, data_list, tmp_path / 'cache')      # testing keeps them: too few pixels


def test_skip_bad_files_while_building_lists(tmp_path):
    labels = [label_with({c: 3000}) for c in (1, 2, 3, 4, 5) for _ in range(3)]
    root, data_list, pairs = make_from_labels(tmp_path, labels)
    with open(os.path.join(root, pairs[4][1]), 'wb') as f:
        f.write(b'garbage')
    ds = dataset(root, data_list, tmp_path / 'cache', skip_bad_files=True)
    assert [pair for pair, _ in ds.bad_files] == [pairs[4]]
    assert len(ds.queries) == 14 and len(ds.class_files[2]) == 2


def test_a_coco_val_list_out_of_the_authors_order_is_flagged(tmp_path, monkeypatch, caplog):
    """Testing scores the first test_num queries in list order: a COCO val list in another
    order than the authors' tests other images, and says so; their order (here: a list whose
    digest stands in for theirs) passes silently, and path prefixes do not matter."""
    pairs = [(f'val2014/COCO_val2014_{i:012d}.jpg', f'annotations/val2014/COCO_val2014_{i:012d}.png')
             for i in (3, 1, 2)]
    monkeypatch.setitem(lists.AUTHORS_VAL_ORDER, 'coco', lists.image_order(pairs))
    elsewhere = [('../data/' + image, '../data/' + label) for image, label in pairs]
    lists.check_val_order('coco', 'val.txt', elsewhere)
    lists.check_val_order('pascal', 'val.txt', pairs[::-1])     # PASCAL: no known order
    assert not caplog.records
    lists.check_val_order('coco', 'sorted_val.txt', sorted(pairs))
    assert "sorted_val.txt: its images are not in the order of the authors' lists/coco/val.txt" in caplog.text
    assert lists.image_order(pairs) != lists.image_order(sorted(pairs))


@pytest.mark.parametrize('content', [[1, 2, 3], {'records': 'x'}, 'key', None])
def test_a_cache_of_valid_json_but_the_wrong_shape_is_rebuilt(mixed, content):
    root, data_list, pairs, cache = mixed
    _, expected = lists.class_pixels('pascal', root, data_list, cache)
    path = lists.cache_path('pascal', root, data_list, cache)
    with open(path) as f:
        saved = json.load(f)
    for broken in (content, {**saved, 'records': saved['records'][:2]},
                   {**saved, 'records': [content] * len(pairs)}):
        with open(path, 'w') as f:
            json.dump(broken, f)
        assert lists.class_pixels('pascal', root, data_list, cache)[1] == expected
