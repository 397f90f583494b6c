"""Data faults found before the long work starts, naming the file: images the validation resize
cannot take (known from the list scan's sizes), malformed list-cache records, preparation inputs
that cannot give what was asked."""
import json
import logging
import os

import numpy as np
import pytest

import train_sccan
import util.lists as lists
from helpers import assert_one_error, make_pascal_config, run_cli, write_pair
from util.config import load_config
from util.datasets import episode_dataset
from util.files.image_io import BadFileError

from tools import check_data  # noqa: E402

TINY_RUN = ['model', 'tiny', 'backbone_weights', 'None', 'train_h', '57', 'train_w', '57',
            'val_size', '57', 'batch_size', '2', 'batch_size_val', '2', 'workers', '0',
            'test_num', '4', 'epochs', '1']


@pytest.fixture
def thin_val(tmp_path):
    """A tiny PASCAL tree whose val list also names a 10×600 image of class 1 (fold 0's first
    novel class): at val_size 57 its short side would shrink to nothing."""
    config = make_pascal_config(str(tmp_path), n_train=20, n_val=10)
    data_root = str(tmp_path / 'data')
    label = np.full((10, 600), 1, np.uint8)
    pair = ('JPEGImages/thin.jpg', 'SegmentationClassAug/thin.png')
    write_pair(data_root, *pair, np.zeros((10, 600, 3), np.uint8), label)
    with open(os.path.join(data_root, 'val.txt'), 'a') as f:
        f.write(' '.join(pair) + '\n')
    return {'config': config, 'image': os.path.join(data_root, pair[0]),
            'val_list': os.path.join(data_root, 'val.txt'), 'exp': str(tmp_path / 'exp')}


THIN = '10×600 image: too thin to keep a pixel of its short side at val_size 57'


def test_a_validation_image_too_thin_for_val_size_stops_training_before_it_starts(thin_val, capsys):
    status, _, err = run_cli(train_sccan.main, ['--config', thin_val['config'], '--opts', *TINY_RUN,
                                                'exp_dir', thin_val['exp']], capsys)
    assert_one_error(status, err, f'{thin_val["image"]}: {THIN} (listed in {thin_val["val_list"]}); '
                                  'remove it from the list, or set skip_bad_files: True to leave '
                                  'such images out (tools/check_data.py --config lists them)')
    assert 'epoch 1/1' not in err        # not one training step
    snapshot = os.path.join(thin_val['exp'], 'pascal', 'SCCAN', 'split0', 'resnet14', 'snapshot')
    assert not os.path.isdir(snapshot) or not os.listdir(snapshot)


def test_with_skip_bad_files_the_thin_image_is_left_out_of_the_lists(thin_val):
    cfg = load_config(thin_val['config'], [*TINY_RUN, 'skip_bad_files', 'true'])
    dataset = episode_dataset(cfg, 'val')
    assert dataset.bad_files == [(('JPEGImages/thin.jpg', 'SegmentationClassAug/thin.png'),
                                  f'BadFileError: {thin_val["image"]}: {THIN}')]
    named = {pair[0] for pair, _, _ in dataset.queries} | {
        image for files in dataset.class_files.values() for image, _ in files}
    assert 'JPEGImages/thin.jpg' not in named and len(dataset.queries) == 5     # classes 1..5
    with pytest.raises(BadFileError, match='too thin'):
        episode_dataset(cfg.replace(skip_bad_files=False), 'val')


def test_check_data_with_the_config_finds_the_same_image(thin_val, tmp_path, capsys):
    report = str(tmp_path / 'report.txt')
    status = check_data.main(['--config', thin_val['config'], '--out', report, '--opts',
                              'model', 'tiny', 'val_size', '57'])
    with open(report) as f:
        rows = [line.rstrip('\n').split('\t') for line in f]
    assert status == 1 and rows == [['thin', thin_val['image'], THIN]]
    assert '1 thin' in capsys.readouterr().out
    # at 489 its short side keeps 8 rows: nothing is found
    assert check_data.main(['--config', thin_val['config'], '--out', report + '.2',
                            '--opts', 'val_size', '489']) == 0


@pytest.mark.parametrize('entry', ['pixels', 'size', 'key'])
def test_a_cache_record_with_a_malformed_entry_is_rebuilt_not_half_used(tmp_path, entry, caplog):
    config = make_pascal_config(str(tmp_path), n_train=20, n_val=10)
    cfg = load_config(config)
    pairs, records = lists.class_pixels('pascal', cfg.data_root, cfg.val_list, cfg.list_dir)
    path = lists.cache_path('pascal', cfg.data_root, cfg.val_list, cfg.list_dir)
    with open(path) as f:
        saved = json.load(f)
    record = saved['records'][3]
    if entry == 'pixels':       # a count as a string: the class would silently not count
        record['pixels'][0][1] = str(record['pixels'][0][1])
    elif entry == 'size':
        record['size'] = [0, record['size'][1]]
    else:
        record['error'] = 'a record is either a scan or an error'
    with open(path, 'w') as f:
        json.dump(saved, f)
    with caplog.at_level(logging.WARNING, logger='sccan'):
        assert lists.class_pixels('pascal', cfg.data_root, cfg.val_list, cfg.list_dir) == (pairs, records)
    assert f'{path} does not hold the records of its list: rebuilding' in caplog.text


# ---- tools/prepare_coco.py ----

@pytest.fixture
def coco_val(tmp_path):
    """MSCOCO2014/ with two val2014 images of one person each, and their annotation file."""
    import cv2
    root = tmp_path / 'MSCOCO2014'
    images = [{'id': i, 'file_name': f'COCO_val2014_{i:012d}.jpg', 'height': 20, 'width': 20}
              for i in (5, 7)]
    for image in images:
        os.makedirs(root / 'val2014', exist_ok=True)
        cv2.imwrite(str(root / 'val2014' / image['file_name']), np.zeros((20, 20, 3), np.uint8))
    annotations = [{'id': n, 'image_id': image['id'], 'category_id': 1, 'iscrowd': 0,
                    'area': 49.0, 'segmentation': [[2, 2, 9, 2, 9, 9, 2, 9]], 'bbox': [2, 2, 7, 7]}
                   for n, image in enumerate(images, 1)]
    os.makedirs(root / 'annotations')
    ann_file = root / 'annotations' / 'instances_val2014.json'
    ann_file.write_text(json.dumps({'images': images, 'annotations': annotations,
                                    'categories': [{'id': 1, 'name': 'person'}]}))
    return {'root': str(root), 'ann_file': str(ann_file), 'lists': str(tmp_path / 'lists'),
            'argv': ['--coco', str(root), '--sets', 'val2014', '--lists-dir',
                     str(tmp_path / 'lists'), '--workers', '1']}


def test_prepare_coco_order_from_a_list_of_none_of_the_val_images_is_refused(coco_val, tmp_path,
                                                                             capsys):
    from tools import prepare_coco
    train_list = tmp_path / 'train.txt'      # e.g. the authors' train list given by mistake
    train_list.write_text('train2014/COCO_train2014_000000000009.jpg '
                          'annotations/train2014/COCO_train2014_000000000009.png\n')
    status, out, err = run_cli(prepare_coco.main, coco_val['argv'] + ['--order-from',
                                                                      str(train_list)], capsys)
    assert_one_error(status, err, f'--order-from {train_list}: none of its 1 images is one of the '
                                  '2 of this set (e.g. COCO_train2014_000000000009.jpg is not)')
    assert not os.path.exists(os.path.join(coco_val['lists'], 'val.txt'))


def test_prepare_coco_truncated_annotations_are_named(coco_val, capsys):
    from tools import prepare_coco
    with open(coco_val['ann_file'], 'r+') as f:
        f.truncate(len(f.read()) // 2)
    status, _, err = run_cli(prepare_coco.main, coco_val['argv'], capsys)
    assert_one_error(status, err, f'{coco_val["ann_file"]}: not a readable COCO annotation file '
                                  '(truncated JSON?): ')


def test_a_list_cache_that_cannot_be_written_is_a_warning_naming_it(tmp_path, monkeypatch, caplog):
    """The scan is in memory: a full disk (or a read-only lists folder) costs the next run a new
    scan, not this run."""
    import errno
    import tempfile
    config = make_pascal_config(str(tmp_path), n_train=20, n_val=10)
    cfg = load_config(config)
    real_mkstemp = tempfile.mkstemp

    def full_disk(*args, prefix='', **kwargs):
        if prefix.startswith('.val-'):        # the val list's cache file
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_mkstemp(*args, prefix=prefix, **kwargs)
    monkeypatch.setattr(tempfile, 'mkstemp', full_disk)
    with caplog.at_level(logging.WARNING, logger='sccan'):
        dataset = episode_dataset(cfg, 'val')
    path = lists.cache_path('pascal', cfg.data_root, cfg.val_list, cfg.list_dir)
    assert len(dataset.queries) == 5 and not os.path.exists(path)
    assert (f'cannot write {path}: no space left on device: the list scan is not cached (set '
            'list_dir to a writable folder)') in caplog.text
