"""Write tiny data sets in the on-disk layouts of PATNet's four cross-domain benchmarks, for tests,
CI and trying the commands without the real downloads:

    python tools/make_cross_domain_trees.py --root data/cross_domain_tiny [--seed 0]

writes, under --root (PATNet's --datapath layout):
  FSS-1000/<class>/{1..10}.jpg + .png      three of PATNet's 240 test classes and a training one
  fss_classes.txt                           the three test classes (a val_list for them)
  Deepglobe/{1..6}/test/{origin/*.jpg, groundtruth/*.png}
  ISIC/ISIC2018_Task1-2_Training_Input/{1,2,3}/*.jpg, ISIC/ISIC2018_Task1_Training_GroundTruth/
      <id>_segmentation.png
  LungSegmentation/{CXR_png/<name>.png, masks/<name>_mask.png}   (one image has no mask)
With --deepglobe-release DIR it also writes DIR/<id>_sat.jpg and DIR/<id>_mask.png, a 2448×2448
image of the Deepglobe land-cover release whose tiles exercise every rule of PATNet's
data/preprocess.py (tools/prepare_deepglobe.py).

Every class has at least 6 images (5-shot episodes), image sizes differ and are not square, and
the folders hold the names PATNet's listing leaves out (a hidden file, a second dot, another
extension). Masks are 0/255. The same seed writes the same files.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.catalogue import CATALOGUE, cross_domain_benchmarks  # noqa: E402
from util.cli import ArgumentParser, non_negative_int, run_main  # noqa: E402
from util.datasets.cross_domain_layouts import read_classes  # noqa: E402
from util.datasets.patnet import (DEEPGLOBE_GRID as GRID, DEEPGLOBE_LABELSET_BGR,  # noqa: E402
                                  DEEPGLOBE_UNKNOWN_BGR, LISTS)
from util.files.image_io import write_image  # noqa: E402
from util.files.writer import write_atomic  # noqa: E402

# the data set of each tree and the folder PATNet's loaders read it from
TREES = {name: CATALOGUE[name].folder for name in cross_domain_benchmarks()}
FSS_CLASS_LIST = 'fss_classes.txt'
DEEPGLOBE_IMAGES = (6, 9, 7, 12, 8, 10)        # per class 1..6
ISIC_IMAGES = (7, 12, 6)                        # per class 1, 2, 3
LUNG_MASKS = 8
IGNORED_NAMES = ('.hidden.jpg', 'copy.of.jpg', 'notes.txt')    # not listed by PATNet's glob rule

RELEASE_SIZE = 2448
TILE = RELEASE_SIZE // GRID


def image_and_mask(rng, min_side=24, max_side=56):
    """A noisy RGB image (uint8 H×W×3) of random size with a brighter rectangle, and its 0/255
    mask."""
    h, w = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    image = rng.integers(0, 120, size=(h, w, 3)).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    y1, x1 = y0 + int(rng.integers(h // 4, h // 2 + 1)), x0 + int(rng.integers(w // 4, w // 2 + 1))
    mask[y0:y1, x0:x1] = 255
    image[y0:y1, x0:x1] += 120
    return image, mask


def write_pair(rng, image_path, mask_path, mask_channels=1):
    image, mask = image_and_mask(rng)
    write_image(image_path, image[..., ::-1])
    write_image(mask_path, mask if mask_channels == 1 else np.repeat(mask[..., None], 3, 2))


def write_ignored(folder):
    for name in IGNORED_NAMES:
        write_atomic(os.path.join(folder, name), b'not part of the benchmark')


def fss_classes():
    """(test classes, training class) of the tree: the first two and the last of PATNet's sorted
    test list (class ids 760, 761, 999; one has an apostrophe) and a class of their training
    list, which no test episode uses."""
    test = read_classes(os.path.join(LISTS, 'fss_test.txt'))
    return [test[0], test[1], test[-1]], read_classes(os.path.join(LISTS, 'fss_trn.txt'))[0]


def write_fss(root, rng):
    test, train = fss_classes()
    for name in test + [train]:
        folder = os.path.join(root, 'FSS-1000', name)
        for k in range(1, 11):
            write_pair(rng, os.path.join(folder, f'{k}.jpg'), os.path.join(folder, f'{k}.png'))
    write_ignored(os.path.join(root, 'FSS-1000', test[0]))
    write_atomic(os.path.join(root, FSS_CLASS_LIST), ''.join(f'{name}\n' for name in test))


def write_deepglobe(root, rng):
    ids = rng.choice(np.arange(100, 999), size=sum(DEEPGLOBE_IMAGES), replace=False)
    start = 0
    for c, count in enumerate(DEEPGLOBE_IMAGES, 1):
        folder = os.path.join(root, 'Deepglobe', str(c), 'test')
        for tile_id in ids[start:start + count]:
            name = f'{tile_id}_{int(rng.integers(0, GRID))}{int(rng.integers(0, GRID))}'
            write_pair(rng, os.path.join(folder, 'origin', name + '.jpg'),
                       os.path.join(folder, 'groundtruth', name + '.png'), mask_channels=3)
        start += count
        write_ignored(os.path.join(folder, 'origin'))


def write_isic(root, rng):
    ids = rng.choice(np.arange(0, 9999), size=sum(ISIC_IMAGES), replace=False)
    start = 0
    for c, count in enumerate(ISIC_IMAGES, 1):
        for isic_id in ids[start:start + count]:
            name = f'ISIC_{isic_id:07d}'
            write_pair(rng, os.path.join(root, 'ISIC', 'ISIC2018_Task1-2_Training_Input', str(c),
                                         name + '.jpg'),
                       os.path.join(root, 'ISIC', 'ISIC2018_Task1_Training_GroundTruth',
                                    name + '_segmentation.png'))
        start += count
    write_ignored(os.path.join(root, 'ISIC', 'ISIC2018_Task1-2_Training_Input', '1'))


def write_lung(root, rng):
    folder = os.path.join(root, 'LungSegmentation')
    for n in range(LUNG_MASKS + 1):
        name = f'{("CHNCXR", "MCUCXR")[n % 2]}_{n:04d}_{n % 2}'
        image, mask = image_and_mask(rng)
        write_image(os.path.join(folder, 'CXR_png', name + '.png'), image[..., 0])   # grey
        if n < LUNG_MASKS:                  # the last image has no mask: PATNet never uses it
            write_image(os.path.join(folder, 'masks', name + '_mask.png'), mask)
    write_ignored(os.path.join(folder, 'masks'))


def write_trees(root, seed=0):
    """The four tiny benchmarks under `root` (module docstring). Returns {benchmark folder
    name: its path} and 'fss_classes': the FSS-1000 class list."""
    rng = np.random.default_rng(seed)
    for write in (write_fss, write_deepglobe, write_isic, write_lung):
        write(root, rng)
    return {**{name: os.path.join(root, name) for name in TREES.values()},
            'fss_classes': os.path.join(root, FSS_CLASS_LIST)}


# ---- a Deepglobe land-cover release image ---------------------------------------------------
def release_tiles():
    """36 tile label maps (TILE×TILE int8; -1 unknown, 0..5 PATNet's classes), row by row. The
    rules of PATNet's preprocess.py each get a tile: one colour (dropped), a second colour on
    exactly 7,990 pixels (4.7999 %: dropped) and on 7,991 (4.8004 %: kept), all seven colours,
    unknown beside one class; the rest mix 2-4 colours in random rectangles."""
    rng = np.random.default_rng(2448)
    area = TILE * TILE
    tiles = []

    def with_first(pixels, base, other):
        tile = np.full(area, base, np.int8)
        tile[:pixels] = other
        return tile.reshape(TILE, TILE)

    tiles.append(np.full((TILE, TILE), 0, np.int8))
    tiles.append(with_first(7990, 1, 3))
    tiles.append(with_first(7991, 1, 3))
    tiles.append(np.repeat(np.arange(-1, 6, dtype=np.int8), -(-area // 7))[:area].reshape(TILE, TILE))
    tiles.append(with_first(area // 2, -1, 4))
    tiles.append(np.full((TILE, TILE), -1, np.int8))
    while len(tiles) < GRID * GRID:
        labels = rng.choice(np.arange(-1, 6), size=int(rng.integers(2, 5)), replace=False)
        tile = np.full((TILE, TILE), labels[0], np.int8)
        for label in labels[1:]:
            h, w = (int(v) for v in rng.integers(20, TILE // 2, size=2))
            y, x = (int(v) for v in rng.integers(0, TILE - 20, size=2))
            tile[y:y + h, x:x + w] = label
        tiles.append(tile)
    return tiles


def write_deepglobe_release(folder, image_id='119'):
    """<folder>/<id>_sat.jpg and <id>_mask.png (the colours of the land-cover release) from
    release_tiles. Returns the two paths."""
    colours = np.array(DEEPGLOBE_LABELSET_BGR + (DEEPGLOBE_UNKNOWN_BGR,), np.uint8)  # -1: last
    tiles = release_tiles()
    rows = [np.concatenate(tiles[r * GRID:(r + 1) * GRID], axis=1) for r in range(GRID)]
    mask = colours[np.concatenate(rows, axis=0)]                       # BGR
    yy, xx = np.mgrid[0:RELEASE_SIZE, 0:RELEASE_SIZE]
    shade = ((np.sin(yy / 37.0) + np.cos(xx / 23.0)) * 30 + 60).astype(np.uint8)
    image = (mask // 3 + shade[..., None]).astype(np.uint8)
    paths = (os.path.join(folder, f'{image_id}_sat.jpg'), os.path.join(folder, f'{image_id}_mask.png'))
    write_image(paths[0], image)
    write_image(paths[1], mask)
    return paths


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', required=True, help='output folder (PATNet\'s --datapath layout)')
    p.add_argument('--seed', type=non_negative_int, default=0)
    p.add_argument('--deepglobe-release', metavar='DIR',
                   help='also write a 2448×2448 release image and mask into DIR')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Never into an existing tree: stale files would change the episodes, and removing a
    # folder that may hold real data is not this tool's to do.
    for path in (os.path.join(args.root, name) for name in (*TREES.values(), FSS_CLASS_LIST)):
        if os.path.lexists(path):
            raise FileExistsError(f'{path} exists already: write the trees to a new --root')
    paths = write_trees(args.root, args.seed)
    for name in TREES.values():
        print(f'wrote {paths[name]}')
    if args.deepglobe_release:
        for path in write_deepglobe_release(args.deepglobe_release):
            print(f'wrote {path}')
    return paths


if __name__ == '__main__':
    run_main(main)
