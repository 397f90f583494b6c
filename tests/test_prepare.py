"""Data preparation tools on tiny VOC / SBD / COCO inputs in their real formats."""
import json
import os

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from helpers import assert_one_error, run_cli, write_palette_png

from tools import prepare_coco  # noqa: E402
from tools import prepare_pascal  # noqa: E402


def write_jpeg(path, h, w):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def read_ids(path):
    with open(path) as f:
        return [line.split()[0][len('JPEGImages/'):-4] for line in f]


# ---- PASCAL ----

def voc_label(c):
    label = np.zeros((20, 30), np.uint8)
    label[4:12, 5:20] = c
    label[3, 5:20] = 255                     # VOC's void border
    return label


def sbd_label(c):
    label = np.zeros((20, 30), np.uint8)
    label[10:18, 2:9] = c
    return label


@pytest.fixture
def voc_sbd(tmp_path):
    voc, sbd = tmp_path / 'VOC2012', tmp_path / 'SBD'
    ids = ['2007_000001', '2007_000002', '2008_000003', '2008_000004', '2008_000005']
    for i in ids:
        write_jpeg(voc / 'JPEGImages' / f'{i}.jpg', 20, 30)
    palette = prepare_pascal.voc_palette()
    for i, c in (('2007_000001', 1), ('2007_000002', 15), ('2008_000003', 20)):
        write_palette_png(str(voc / 'SegmentationClass' / f'{i}.png'), voc_label(c), palette)
    sets = voc / 'ImageSets' / 'Segmentation'
    sets.mkdir(parents=True)
    (sets / 'train.txt').write_text('2007_000001\n')
    (sets / 'val.txt').write_text('2007_000002\n2008_000003\n')
    (sbd / 'cls').mkdir(parents=True)
    for i, c in (('2007_000001', 7), ('2008_000003', 8), ('2008_000004', 9), ('2008_000005', 12)):
        savemat(str(sbd / 'cls' / f'{i}.mat'),
                {'GTcls': {'Segmentation': sbd_label(c), 'CategoriesPresent': np.array([c])}})
    (sbd / 'train.txt').write_text('2008_000004\n2007_000001\n2008_000003\n')
    (sbd / 'val.txt').write_text('2008_000005\n')
    return str(voc), str(sbd), str(tmp_path / 'lists')


def aug_label(voc, i):
    return cv2.imread(os.path.join(voc, 'SegmentationClassAug', f'{i}.png'),
                      cv2.IMREAD_UNCHANGED)


def test_voc_palette_by_hand():
    palette = prepare_pascal.voc_palette()
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]
    assert palette[20].tolist() == [0, 64, 128] and palette[255].tolist() == [224, 224, 192]


def test_prepare_pascal_labels_and_lists(voc_sbd):
    voc, sbd, lists = voc_sbd
    prepare_pascal.main(['--voc', voc, '--sbd', sbd, '--lists-dir', lists, '--workers', '2',
                         '--train-list', 'full'])
    assert np.array_equal(aug_label(voc, '2007_000001'), voc_label(1))    # VOC wins over SBD
    assert np.array_equal(aug_label(voc, '2007_000002'), voc_label(15))
    assert np.array_equal(aug_label(voc, '2008_000004'), sbd_label(9))
    assert aug_label(voc, '2008_000005') is None                         # SBD val not asked
    assert read_ids(os.path.join(lists, 'val.txt')) == ['2007_000002', '2008_000003']
    # VOC train first, then SBD train without duplicates and without VOC val images
    assert read_ids(os.path.join(lists, prepare_pascal.TRAIN_LIST)) == ['2007_000001',
                                                                        '2008_000004']
    with open(os.path.join(lists, 'val.txt')) as f:
        assert f.readline() == 'JPEGImages/2007_000002.jpg SegmentationClassAug/2007_000002.png\n'


def test_prepare_pascal_with_sbd_val_and_lists_only(voc_sbd):
    voc, sbd, lists = voc_sbd
    prepare_pascal.main(['--voc', voc, '--sbd', sbd, '--sbd-sets', 'train,val',
                         '--lists-dir', lists, '--train-list', 'full'])
    assert np.array_equal(aug_label(voc, '2008_000005'), sbd_label(12))
    assert read_ids(os.path.join(lists, prepare_pascal.TRAIN_LIST))[-1] == '2008_000005'
    os.remove(os.path.join(voc, 'SegmentationClassAug', '2008_000005.png'))
    prepare_pascal.main(['--voc', voc, '--lists-dir', lists, '--lists-only', '--train-list',
                         'full'])
    assert read_ids(os.path.join(lists, prepare_pascal.TRAIN_LIST)) == ['2007_000001']
    assert aug_label(voc, '2008_000005') is None


def test_prepare_pascal_errors(voc_sbd):
    voc, sbd, lists = voc_sbd
    odd = prepare_pascal.voc_palette().copy()
    odd[3] = (1, 2, 3)
    write_palette_png(os.path.join(voc, 'SegmentationClass', '2008_000004.png'), voc_label(3),
                      odd)
    with pytest.raises(ValueError, match=r'2008_000004.png: colour RGB\(1, 2, 3\) is not a VOC'):
        prepare_pascal.main(['--voc', voc, '--lists-dir', lists, '--workers', '1',
                             '--train-list', 'full'])
    os.remove(os.path.join(voc, 'JPEGImages', '2007_000002.jpg'))
    with pytest.raises(FileNotFoundError, match='2007_000002'):
        prepare_pascal.main(['--voc', voc, '--lists-dir', lists, '--lists-only',
                             '--train-list', 'full'])
    with pytest.raises(FileNotFoundError, match=r'SBD annotation not found: .*2008_000009\.mat'):
        prepare_pascal.read_sbd_label(os.path.join(sbd, 'cls', '2008_000009.mat'))


def test_the_paper_training_list_is_the_default(voc_sbd, tmp_path):
    voc, _, lists = voc_sbd
    paper = prepare_pascal.read_ids(prepare_pascal.PAPER_TRAIN_IDS)
    assert len(paper) == len(set(paper)) == 5953            # PFENet's list, as the authors ship it
    assert paper[:2] == ['2008_000008', '2008_000015'] and paper[-1] == '2011_003151'
    os.makedirs(os.path.join(voc, 'SegmentationClassAug'))
    for i in paper + ['2007_000002', '2008_000003']:        # --lists-only reads no pixels
        for path in (f'JPEGImages/{i}.jpg', f'SegmentationClassAug/{i}.png'):
            open(os.path.join(voc, path), 'a').close()
    prepare_pascal.main(['--voc', voc, '--lists-dir', lists, '--lists-only'])
    assert read_ids(os.path.join(lists, prepare_pascal.TRAIN_LIST)) == paper
    assert read_ids(os.path.join(lists, 'val.txt')) == ['2007_000002', '2008_000003']
    os.remove(os.path.join(voc, 'JPEGImages', f'{paper[100]}.jpg'))
    with pytest.raises(FileNotFoundError, match=f'image of listed id {paper[100]} not found'):
        prepare_pascal.main(['--voc', voc, '--lists-dir', lists, '--lists-only'])


def test_the_paper_list_takes_labels_from_sbd_where_voc_has_none(voc_sbd):
    voc, sbd, _ = voc_sbd
    sources = prepare_pascal.label_sources(voc, sbd, ['2008_000004', '2007_000001'])
    assert sources['2008_000004'] == (prepare_pascal.read_sbd_label,
                                      os.path.join(sbd, 'cls', '2008_000004.mat'))
    assert sources['2007_000001'][0] is prepare_pascal.read_voc_label    # VOC wins
    assert '2008_000005' not in sources                                  # not a training image
    with pytest.raises(FileNotFoundError, match='1 training images have no VOC2012 label '
                                                r'\(the first: 2008_000004\): give the SBD'):
        prepare_pascal.label_sources(voc, None, ['2008_000004'])
    with pytest.raises(ValueError, match='--sbd-sets chooses the SBD images of --train-list full'):
        prepare_pascal.main(['--voc', voc, '--sbd', sbd, '--sbd-sets', 'train,val'])


# ---- COCO ----

def uncompressed_rle(mask):
    """COCO's crowd format: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.flatten(order='F')
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {'size': list(mask.shape), 'counts': counts}


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / 'MSCOCO2014'
    images = [{'id': 10, 'file_name': 'COCO_train2014_000000000010.jpg', 'height': 40, 'width': 50},
              {'id': 11, 'file_name': 'COCO_train2014_000000000011.jpg', 'height': 30, 'width': 30},
              {'id': 12, 'file_name': 'COCO_train2014_000000000012.jpg', 'height': 30, 'width': 30}]
    for im in images:
        write_jpeg(root / 'train2014' / im['file_name'], im['height'], im['width'])
    crowd = np.zeros((30, 30), np.uint8)
    crowd[5:10, 10:20] = 1
    annotations = [
        # a small toothbrush drawn first in the file, lying on a large person
        {'id': 1, 'image_id': 10, 'category_id': 90, 'iscrowd': 0, 'area': 36.0,
         'segmentation': [[10, 10, 16, 10, 16, 16, 10, 16]], 'bbox': [10, 10, 6, 6]},
        {'id': 2, 'image_id': 10, 'category_id': 1, 'iscrowd': 0, 'area': 600.0,
         'segmentation': [[0, 0, 30, 0, 30, 20, 0, 20]], 'bbox': [0, 0, 30, 20]},
        {'id': 3, 'image_id': 11, 'category_id': 3, 'iscrowd': 1, 'area': 50.0,
         'segmentation': uncompressed_rle(crowd), 'bbox': [10, 5, 10, 5]}]
    categories = [{'id': 90, 'name': 'toothbrush'}, {'id': 1, 'name': 'person'},
                  {'id': 3, 'name': 'car'}]
    write_annotations(root, 'train2014', images, annotations, categories)
    return str(root), str(tmp_path / 'lists'), crowd


def write_annotations(root, set_name, images, annotations, categories):
    os.makedirs(root / 'annotations', exist_ok=True)
    with open(root / 'annotations' / f'instances_{set_name}.json', 'w') as f:
        json.dump({'images': images, 'annotations': annotations, 'categories': categories}, f)


def coco_label(root, n):
    return cv2.imread(os.path.join(root, 'annotations', 'train2014',
                                   f'COCO_train2014_{n:012d}.png'), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize('workers', [1, 2])
def test_prepare_coco_labels_and_lists(coco, workers):
    root, lists, crowd = coco
    prepare_coco.main(['--coco', root, '--sets', 'train2014', '--lists-dir', lists,
                       '--workers', str(workers)])
    label = coco_label(root, 10)
    assert label.shape == (40, 50) and set(np.unique(label)) == {0, 1, 3}   # ids 1, 90 → 1, 3
    assert label[13, 13] == 3 and label[2, 25] == 1 and label[30, 40] == 0  # small on top
    assert np.array_equal(coco_label(root, 11), crowd * 2)                 # id 3 → 2
    assert coco_label(root, 12) is None                                    # no annotation
    with open(os.path.join(lists, 'train.txt')) as f:
        assert f.read().splitlines() == [
            'train2014/COCO_train2014_000000000010.jpg '
            'annotations/train2014/COCO_train2014_000000000010.png',
            'train2014/COCO_train2014_000000000011.jpg '
            'annotations/train2014/COCO_train2014_000000000011.png']


def test_prepare_coco_crowd_ignore_and_errors(coco):
    root, lists, crowd = coco
    prepare_coco.main(['--coco', root, '--sets', 'train2014', '--lists-dir', lists,
                       '--crowd', 'ignore', '--workers', '1'])
    assert np.array_equal(coco_label(root, 11), crowd * 255)
    with pytest.raises(FileNotFoundError, match='instances_val2014.json'):
        prepare_coco.main(['--coco', root, '--lists-dir', lists, '--workers', '1'])
    os.remove(os.path.join(root, 'train2014', 'COCO_train2014_000000000011.jpg'))
    with pytest.raises(FileNotFoundError, match='COCO_train2014_000000000011.jpg'):
        prepare_coco.main(['--coco', root, '--sets', 'train2014', '--lists-dir', lists])


def test_prepare_coco_writes_val_in_the_order_of_another_list(tmp_path, capsys):
    """--order-from: the val list follows a given list's image order (the authors' val.txt,
    whose paths differ from ours), images it does not name follow by id; --lists-only then
    rewrites only the list."""
    root = tmp_path / 'MSCOCO2014'
    ids = (5, 7, 9, 11)
    name = 'COCO_val2014_{:012d}'.format
    images = [{'id': i, 'file_name': name(i) + '.jpg', 'height': 20, 'width': 20} for i in ids]
    for im in images:
        write_jpeg(root / 'val2014' / im['file_name'], 20, 20)
    square = [[2, 2, 9, 2, 9, 9, 2, 9]]
    annotations = [{'id': n, 'image_id': i, 'category_id': 1, 'iscrowd': 0, 'area': 49.0,
                    'segmentation': square, 'bbox': [2, 2, 7, 7]} for n, i in enumerate(ids, 1)]
    write_annotations(root, 'val2014', images, annotations, [{'id': 1, 'name': 'person'}])
    theirs = tmp_path / 'theirs.txt'
    theirs.write_text(''.join(f'../data/MSCOCO2014/val2014/{name(i)}.jpg '
                              f'../data/MSCOCO2014/annotations/val2014/{name(i)}.png\n'
                              for i in (9, 3, 5)))        # 3: not in this set
    lists = tmp_path / 'lists'
    argv = ['--coco', str(root), '--sets', 'val2014', '--lists-dir', str(lists), '--workers', '1',
            '--order-from', str(theirs)]
    prepare_coco.main(argv)
    listed = [line.split()[0] for line in (lists / 'val.txt').read_text().splitlines()]
    assert listed == [f'val2014/{name(i)}.jpg' for i in (9, 5, 7, 11)]
    assert '2 images in the order of' in capsys.readouterr().out
    label = root / 'annotations' / 'val2014' / (name(5) + '.png')
    os.remove(label)
    prepare_coco.main(argv + ['--lists-only'])
    assert not label.exists()
    assert [line.split()[0] for line in (lists / 'val.txt').read_text().splitlines()] == listed


@pytest.mark.parametrize('module', [prepare_pascal, prepare_coco])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(['--help'])
    assert exit_info.value.code == 0 and 'usage' in capsys.readouterr().out


# ---- failures: one line naming the file, exit status 2, nothing reported as done ----

def one_line_error(status, out, err, *needles):
    assert_one_error(status, err, *needles)
    assert 'lists' not in out             # no list written, none reported


def test_prepare_pascal_labels_that_cannot_be_written_stop_it(voc_sbd, capsys):
    voc, sbd, lists = voc_sbd
    with open(os.path.join(voc, 'SegmentationClassAug'), 'w') as f:
        f.write('a file where the label folder should be')
    result = run_cli(prepare_pascal.main, ['--voc', voc, '--sbd', sbd, '--lists-dir', lists,
                                           '--workers', '2', '--train-list', 'full'], capsys)
    one_line_error(*result, f'cannot write {voc}/SegmentationClassAug/', '.png: File exists')
    assert not os.path.exists(lists)


@pytest.mark.parametrize('case', ['grey label', 'empty VOC folder', 'listed id without image'])
def test_prepare_pascal_input_errors_are_one_line(voc_sbd, capsys, tmp_path, case):
    voc, sbd, lists = voc_sbd
    argv = ['--voc', voc, '--lists-dir', lists, '--workers', '1', '--train-list', 'full']
    if case == 'grey label':
        grey = os.path.join(voc, 'SegmentationClass', '2007_000002.png')
        cv2.imwrite(grey, voc_label(15))
        needles = [f'{grey}: a single-channel image, not a VOC palette label']
    elif case == 'empty VOC folder':
        argv[1] = str(tmp_path / 'empty')
        os.makedirs(argv[1])
        needles = ['image id list not found: ', 'empty/ImageSets/Segmentation/train.txt']
    else:
        os.remove(os.path.join(voc, 'JPEGImages', '2008_000003.jpg'))
        needles = ['image of listed id 2008_000003 not found: ', 'JPEGImages/2008_000003.jpg']
    one_line_error(*run_cli(prepare_pascal.main, argv, capsys), *needles)


def test_prepare_coco_unknown_category_is_one_line_naming_file_and_image(coco, capsys):
    root, lists, _ = coco
    ann_file = os.path.join(root, 'annotations', 'instances_train2014.json')
    with open(ann_file) as f:
        content = json.load(f)
    content['annotations'][2]['category_id'] = 99
    with open(ann_file, 'w') as f:
        json.dump(content, f)
    result = run_cli(prepare_coco.main, ['--coco', root, '--sets', 'train2014', '--lists-dir',
                                         lists], capsys)
    one_line_error(*result, f'{ann_file}: annotation 3 of COCO_train2014_000000000011.jpg has '
                            'category id 99, which is not among')
    assert not os.path.exists(os.path.join(root, 'annotations', 'train2014'))


def test_prepare_coco_write_failure_in_a_worker_process_stops_it(coco, capsys, monkeypatch):
    root, lists, _ = coco
    monkeypatch.setattr(cv2, 'imencode', lambda *a, **k: (False, None))   # forked workers too
    result = run_cli(prepare_coco.main, ['--coco', root, '--sets', 'train2014', '--lists-dir',
                                         lists, '--workers', '2'], capsys)
    one_line_error(*result, f'cannot write {root}/annotations/train2014/COCO_train2014_0000000000',
                   '.png: OpenCV cannot encode')
    assert not os.path.exists(os.path.join(lists, 'train.txt'))


def test_make_synthetic_over_a_file_is_one_line(tmp_path, capsys):
    from tools import make_synthetic
    root = tmp_path / 'file'
    root.write_text('not a folder')
    result = run_cli(make_synthetic.main, ['--root', str(root), '--train', '2', '--val', '1'],
                     capsys)
    one_line_error(*result, f'benchmark root {root} exists and is not a folder')
    assert root.read_text() == 'not a folder'


# ---- every label a list names exists; no list or label over an input ----

@pytest.mark.parametrize('case', ['val id without a VOC label', 'lists only, no labels'])
def test_prepare_pascal_never_lists_a_label_that_is_not_there(voc_sbd, capsys, case):
    voc, sbd, lists = voc_sbd
    argv = ['--voc', voc, '--sbd', sbd, '--lists-dir', lists, '--workers', '1', '--train-list',
            'full']
    if case == 'val id without a VOC label':      # it has an image, and an SBD label
        with open(os.path.join(voc, 'ImageSets', 'Segmentation', 'val.txt'), 'a') as f:
            f.write('2008_000004\n')
        needles = [f'listed id 2008_000004 has no label: {voc}/SegmentationClass/2008_000004.png '
                   'not found (a validation image needs its VOC2012 label)']
    else:
        argv = ['--voc', voc, '--lists-dir', lists, '--lists-only', '--train-list', 'full']
        needles = [f'label of listed id 2007_000002 not found: {voc}/SegmentationClassAug/'
                   '2007_000002.png (--lists-only lists the labels written before']
    one_line_error(*run_cli(prepare_pascal.main, argv, capsys), *needles)
    assert not os.path.exists(lists) and not os.path.exists(os.path.join(voc, 'SegmentationClassAug'))


@pytest.mark.parametrize('where', ['voc', 'sbd'])
def test_prepare_pascal_never_writes_its_lists_over_the_id_lists_it_reads(voc_sbd, capsys, where):
    voc, sbd, _ = voc_sbd
    lists = os.path.join(voc, 'ImageSets', 'Segmentation') if where == 'voc' else sbd
    with open(os.path.join(lists, 'val.txt')) as f:
        before = f.read()
    status, _, err = run_cli(prepare_pascal.main, ['--voc', voc, '--sbd', sbd, '--train-list',
                                                   'full', '--sbd-sets', 'train,val',
                                                   '--lists-dir', lists], capsys)
    assert_one_error(status, err, f'output {lists}/val.txt would overwrite the input '
                                  f'{lists}/val.txt')
    with open(os.path.join(lists, 'val.txt')) as f:
        assert f.read() == before
    assert not os.path.exists(os.path.join(voc, 'SegmentationClassAug'))
