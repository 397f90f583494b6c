"""The cross-domain tools: preparation of Deepglobe and ISIC, the layout checks of
tools/check_data.py, the class split for one's own data, the tiny trees. Bad input ends in one
`error:` line naming the file; no tool writes over its input."""
import os
import shutil

import cv2
import numpy as np
import pytest

from helpers import assert_one_error, files_below, run_cli
from tools import check_data, make_cross_domain_trees, prepare_deepglobe, prepare_isic, split_classes
from util.datasets.cross_domain import PatnetEpisodes
from util.datasets.cross_domain_layouts import layout_of
from util.transform import val_transform


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    return make_cross_domain_trees.write_trees(str(tmp_path_factory.mktemp('trees')), seed=0)


def small_release(folder, colour_at_corner=None):
    """A 120×120 release pair: the left half urban, the right half water (RGB colours), and
    optionally one corner pixel of another colour (RGB)."""
    os.makedirs(folder, exist_ok=True)
    mask = np.zeros((120, 120, 3), np.uint8)
    mask[:, :60] = (0, 255, 255)            # urban (RGB)
    mask[:, 60:] = (0, 0, 255)              # water
    if colour_at_corner is not None:
        mask[0, 0] = colour_at_corner
    cv2.imwrite(os.path.join(folder, '7_sat.jpg'), np.full((120, 120, 3), 90, np.uint8))
    cv2.imwrite(os.path.join(folder, '7_mask.png'), mask[..., ::-1])


def test_deepglobe_tiles_split_by_colour_and_counted(tmp_path, capsys):
    small_release(tmp_path / 'release')
    status, out, _ = run_cli(prepare_deepglobe.main, ['--release', str(tmp_path / 'release'),
                                                      '--out', str(tmp_path / 'Deepglobe')], capsys)
    # 6×6 tiles of 20 px: columns 0-2 urban only, 3-5 water only: one colour each, all dropped
    assert status == 0 and '1 release images, 36 tiles: 0 kept, 36 dropped' in out
    shutil.rmtree(tmp_path / 'Deepglobe')
    mask = cv2.imread(str(tmp_path / 'release' / '7_mask.png'))
    mask[:, 50:70] = (255, 0, 0)            # a water band across the tile boundary at 60
    cv2.imwrite(str(tmp_path / 'release' / '7_mask.png'), mask)
    total = prepare_deepglobe.prepare(str(tmp_path / 'release'), str(tmp_path / 'Deepglobe'), 1)
    # tile column 2 (x 40..60) is half urban, half water: 6 tiles in class 2 (urban) and 5
    assert (total['kept'], total[2], total[5]) == (6, 6, 6)
    truth = cv2.imread(str(tmp_path / 'Deepglobe' / '2' / 'test' / 'groundtruth' / '7_02.png'),
                       cv2.IMREAD_UNCHANGED)
    assert truth.shape == (20, 20) and (truth[:, :10] == 255).all() and (truth[:, 10:] == 0).all()


def test_deepglobe_colour_outside_the_table_is_an_error_and_nothing_is_written(tmp_path, capsys):
    small_release(tmp_path / 'release', colour_at_corner=(1, 2, 3))
    before = files_below(tmp_path / 'release')
    status, _, err = run_cli(prepare_deepglobe.main, ['--release', str(tmp_path / 'release'),
                                                      '--out', str(tmp_path / 'Deepglobe')], capsys)
    assert_one_error(status, err, '7_mask.png', 'colours outside the Deepglobe table',
                     'RGB(1, 2, 3) on 1 pixels')
    assert not os.path.exists(tmp_path / 'Deepglobe') and os.listdir(tmp_path) == ['release']
    assert files_below(tmp_path / 'release') == before


def test_deepglobe_refuses_an_existing_output_and_an_image_without_mask(tmp_path, capsys):
    small_release(tmp_path / 'release')
    status, _, err = run_cli(prepare_deepglobe.main, ['--release', str(tmp_path / 'release'),
                                                      '--out', str(tmp_path / 'release')], capsys)
    assert_one_error(status, err, 'exists already')
    os.remove(tmp_path / 'release' / '7_mask.png')
    status, _, err = run_cli(prepare_deepglobe.main, ['--release', str(tmp_path / 'release'),
                                                      '--out', str(tmp_path / 'out')], capsys)
    assert_one_error(status, err, '7_sat.jpg has no', '7_mask.png')


@pytest.fixture
def isic_download(tree, tmp_path):
    """The tree's ISIC images flattened as the download holds them, the masks, and a class table
    of them (as PATNet's, whose class names it uses)."""
    images, masks = tmp_path / 'input', tmp_path / 'truth'
    images.mkdir()
    rows = ['ID,Class']
    for c, name in enumerate(('melanoma', 'nevus', 'seborrheic_keratosis'), 1):
        folder = os.path.join(tree['ISIC'], 'ISIC2018_Task1-2_Training_Input', str(c))
        for image in sorted(f for f in os.listdir(folder) if f.endswith('.jpg') and '.' not in f[:-4]):
            if not image.startswith('ISIC_'):
                continue
            shutil.copy(os.path.join(folder, image), images / image)
            rows.append(f'{image[:-4]},{name}')
    shutil.copytree(os.path.join(tree['ISIC'], 'ISIC2018_Task1_Training_GroundTruth'), masks)
    (tmp_path / 'table.csv').write_text('\n'.join(rows) + '\n')
    return images, masks, tmp_path / 'table.csv'


def test_isic_folders_follow_the_class_table_and_order(isic_download, tree, tmp_path, capsys):
    images, masks, table = isic_download
    before = files_below(images)
    status, out, _ = run_cli(prepare_isic.main, ['--images', str(images), '--masks', str(masks),
                                                 '--out', str(tmp_path / 'ISIC'), '--classes',
                                                 str(table)], capsys)
    assert status == 0 and 'class 1 (melanoma): 7 images' in out and 'class 2 (nevus): 12' in out
    for c in '123':     # the default order puts the tree's own folders back
        made = os.path.join(tmp_path, 'ISIC', 'ISIC2018_Task1-2_Training_Input', c)
        origin = os.path.join(tree['ISIC'], 'ISIC2018_Task1-2_Training_Input', c)
        assert sorted(os.listdir(made)) == sorted(f for f in os.listdir(origin) if f.startswith('ISIC_'))
    assert files_below(images) == before
    ds = PatnetEpisodes(layout_of('isic', str(tmp_path / 'ISIC')), 'isic', 5, val_transform(33))
    assert len(ds.plan(0, 6)) == 6
    # copies: editing a mask of the benchmark leaves the download as it was
    truth = tmp_path / 'ISIC' / 'ISIC2018_Task1_Training_GroundTruth'
    mask = sorted(truth.iterdir())[0]
    assert mask.stat().st_nlink == 1
    downloaded = files_below(masks)
    mask.write_bytes(b'edited')
    assert files_below(masks) == downloaded
    status, out, _ = run_cli(prepare_isic.main, [
        '--images', str(images), '--masks', str(masks), '--out', str(tmp_path / 'ISIC2'),
        '--classes', str(table), '--class-order', 'nevus,melanoma,seborrheic_keratosis', '--link'],
        capsys)
    assert len(os.listdir(tmp_path / 'ISIC2' / 'ISIC2018_Task1-2_Training_Input' / '1')) == 12
    assert (f'note: the files of {tmp_path / "ISIC2"} are hard links to {images} and {masks}: '
            'each pair is one file, and editing either edits both') in out


def test_isic_image_without_class_or_mask_is_an_error(isic_download, tmp_path, capsys):
    images, masks, table = isic_download
    shutil.copy(next(images.iterdir()), images / 'ISIC_9999999.jpg')
    args = ['--images', str(images), '--masks', str(masks), '--out', str(tmp_path / 'ISIC'),
            '--classes', str(table)]
    status, _, err = run_cli(prepare_isic.main, args, capsys)
    assert_one_error(status, err, 'ISIC_9999999.jpg: no class in the class table')
    os.remove(images / 'ISIC_9999999.jpg')
    os.remove(next(masks.iterdir()))
    status, _, err = run_cli(prepare_isic.main, args, capsys)
    assert_one_error(status, err, '_segmentation.png not found', 'is in the class table')
    assert not os.path.exists(tmp_path / 'ISIC')


def test_shipped_isic_table_is_patnets_2594_images():
    table = prepare_isic.read_table(prepare_isic.CLASS_TABLE)
    counts = {name: list(table.values()).count(name) for name in set(table.values())}
    assert counts == {'nevus': 1867, 'melanoma': 519, 'seborrheic_keratosis': 208}


def read_report(path):
    with open(path) as f:
        return sorted(tuple(line.rstrip('\n').split('\t')[:2]) for line in f)


def test_check_data_finds_each_problem_of_the_layouts(tree, tmp_path, capsys):
    lung = shutil.copytree(tree['LungSegmentation'], tmp_path / 'lung')
    masks = sorted(n for n in os.listdir(lung / 'masks') if n.endswith('_mask.png'))
    os.rename(lung / 'masks' / masks[0], lung / 'masks' / 'MCUCXR_x.png')       # name
    grey = cv2.imread(str(lung / 'masks' / masks[1]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(lung / 'masks' / masks[1]), grey // 255)                   # 0/1: values, empty
    cv2.imwrite(str(lung / 'masks' / masks[2]), np.zeros((9, 9), np.uint8))     # size, empty
    (lung / 'CXR_png' / masks[3].replace('_mask', '')).write_bytes(b'\x89PNG\r\n\x1a\n')
    report = tmp_path / 'report.txt'
    status, out, _ = run_cli(check_data.main, ['--data-set', 'lung', '--data-root', str(lung),
                                               '--out', str(report), '--shot', '8'], capsys)
    assert status == 1 and '1 name, 1 few' in out
    assert '1 unreadable, 1 size, 1 values, 2 empty, 0 full' in out
    assert 'note: 2 image(s) without a mask, not used' in out     # MCUCXR_x's and one more
    assert read_report(report) == sorted([
        ('name', str(lung / 'masks' / 'MCUCXR_x.png')), ('few', str(lung / 'masks')),
        ('values', str(lung / 'masks' / masks[1])), ('size', str(lung / 'masks' / masks[2])),
        ('empty', str(lung / 'masks' / masks[1])), ('empty', str(lung / 'masks' / masks[2])),
        ('unreadable', str(lung / 'CXR_png' / masks[3].replace('_mask', '')))])
    deepglobe = shutil.copytree(tree['Deepglobe'], tmp_path / 'deepglobe')
    truth = deepglobe / '3' / 'test' / 'groundtruth'
    os.remove(truth / sorted(os.listdir(truth))[0])
    status, out, _ = run_cli(check_data.main, ['--data-set', 'deepglobe', '--data-root',
                                               str(deepglobe), '--out', str(report)], capsys)
    assert status == 1 and '51 image/label pairs checked in deepglobe: 1 missing' in out


def test_check_data_reports_empty_and_full_masks_of_ones_own_classes(tree, tmp_path, capsys):
    """The rule of support masks (util.files.image_io.support_mask_problem): a mask without
    foreground is reported (empty), and so is one without background (full)."""
    root = shutil.copytree(tree['FSS-1000'], tmp_path / 'own')
    (tmp_path / 'classes.txt').write_text('accordion\n')
    for n, value in ((1, 0), (2, 255)):
        mask = str(root / 'accordion' / f'{n}.png')
        cv2.imwrite(mask, np.full(cv2.imread(mask, cv2.IMREAD_UNCHANGED).shape, value, np.uint8))
    report = tmp_path / 'report.txt'
    status, out, _ = run_cli(check_data.main, [
        '--data-set', 'folder', '--data-root', str(root), '--list', str(tmp_path / 'classes.txt'),
        '--out', str(report)], capsys)
    assert status == 1 and '0 values, 1 empty, 1 full' in out
    assert read_report(report) == [('empty', str(root / 'accordion' / '1.png')),
                                   ('full', str(root / 'accordion' / '2.png'))]
    assert 'has no foreground pixels: a support must show its object (grey >= 128)' in out


def test_check_data_passes_the_tiny_trees_by_config(tree, tmp_path, capsys):
    for config, root in (('fss', 'FSS-1000'), ('isic', 'ISIC')):
        status, out, _ = run_cli(check_data.main, [
            '--config', f'config/cross_domain/{config}_resnet50_5s.yaml', '--out',
            str(tmp_path / 'r.txt'), '--opts', 'data_root', tree[root], 'val_list',
            tree['fss_classes']], capsys)
        assert status == 0 and ' 0 missing, 0 name, 0 few, 0 unreadable, 0 size, 0 values' in out


def test_class_split_is_seeded_and_refuses_to_overwrite(tree, tmp_path, capsys):
    args = ['--root', tree['FSS-1000'], '--test', '0.25', '--seed', '3', '--out', str(tmp_path)]
    status, out, _ = run_cli(split_classes.main, args, capsys)
    train, test = ((tmp_path / n).read_text().split() for n in split_classes.NAMES)
    assert status == 0 and len(test) == 1 and sorted(train + test) == sorted(os.listdir(tree['FSS-1000']))
    status, _, err = run_cli(split_classes.main, args, capsys)
    assert_one_error(status, err, 'exists already')
    status, _, _ = run_cli(split_classes.main, args + ['--overwrite'], capsys)
    assert status == 0 and (tmp_path / 'test_classes.txt').read_text().split() == test
    status, _, err = run_cli(split_classes.main, args[:3] + ['4', '--out', str(tmp_path / 'x')], capsys)
    assert_one_error(status, err, '--test 4.0: expected a fraction in (0, 1) or a whole number of '
                                  'classes below 4')


def test_tiny_trees_are_not_written_over(tree, capsys):
    status, _, err = run_cli(make_cross_domain_trees.main,
                             ['--root', os.path.dirname(tree['ISIC'])], capsys)
    assert_one_error(status, err, 'FSS-1000 exists already: write the trees to a new --root')
