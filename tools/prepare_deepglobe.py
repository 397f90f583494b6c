"""Make PATNet's Deepglobe benchmark from the Deepglobe land-cover release, as their
data/preprocess.py does:

    python tools/prepare_deepglobe.py --release ../data/deepglobe/train --out ../data/CDFSL/Deepglobe

--release: a folder of <id>_sat.jpg images and <id>_mask.png colour masks (the release's train
folder, the only one with masks). Each pair is cut into a 6×6 grid (tile bounds
int(i·size/6)); a tile is kept when its mask holds at least two colours and each covers more
than 4.8 % of it (their filter counts 408×408 = 166,464 pixels, a tile of a 2448×2448 image;
here the tile's own area, the same for the release); for every class colour present in a kept
tile (their labelset, matched against OpenCV's BGR pixels: 1 agriculture, 2 urban, 3 rangeland,
4 forest, 5 water, 6 barren) it writes
    <out>/<class>/test/origin/<id>_<i><j>.jpg       the image tile, re-encoded as their
                                                    cv2.imwrite does (JPEG quality 95)
    <out>/<class>/test/groundtruth/<id>_<i><j>.png  255 on the class colour, 0 elsewhere
and prints the tile counts. A mask colour other than the six classes and black (the release's
'unknown') is an error naming the file. --out must not exist; it appears only when complete.
PATNet's own preprocessed copy names tiles differently; the order of the names, and so the
episodes, is the same (docs/cross_domain.md).
"""
import argparse
import collections
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.datasets.patnet import (DEEPGLOBE_CLASSES, DEEPGLOBE_GRID, DEEPGLOBE_LABELSET_BGR,  # noqa: E402
                                  DEEPGLOBE_MIN_SHARE, DEEPGLOBE_UNKNOWN_BGR)
from util.files.image_io import (bad_file, colour_codes, decode, read_bytes,  # noqa: E402
                                 write_image)
from util.files.writer import folder_built_whole, write_atomic  # noqa: E402
from util.log import progress_map  # noqa: E402

SAT, MASK = '_sat.jpg', '_mask.png'


# One integer per BGR colour (util.files.image_io.colour_codes packs the channels in their order)
CLASS_CODES = [int(colour_codes(c)) for c in DEEPGLOBE_LABELSET_BGR]
KNOWN_CODES = set(CLASS_CODES) | {int(colour_codes(DEEPGLOBE_UNKNOWN_BGR))}


def release_pairs(release):
    """[(id, image path, mask path)] of a release folder, sorted by id; an image without its
    mask or a mask without its image is an error."""
    names = set(os.listdir(release))
    ids = sorted({n[:-len(SAT)] for n in names if n.endswith(SAT)} |
                 {n[:-len(MASK)] for n in names if n.endswith(MASK)})
    if not ids:
        raise FileNotFoundError(f'{release}: no <id>{SAT} / <id>{MASK} files (the land-cover '
                                "release's train folder holds them)")
    for i in ids:
        for have, need in ((SAT, MASK), (MASK, SAT)):
            if i + have in names and i + need not in names:
                raise FileNotFoundError(f'{os.path.join(release, i + have)} has no '
                                        f'{os.path.join(release, i + need)}')
    return [(i, os.path.join(release, i + SAT), os.path.join(release, i + MASK)) for i in ids]


def tile_bounds(size):
    """Their step 1: [(start, end)] of the 6 tiles along a side of `size` pixels."""
    return [(int(k * size / DEEPGLOBE_GRID), int((k + 1) * size / DEEPGLOBE_GRID))
            for k in range(DEEPGLOBE_GRID)]


def keep_tile(counts, area):
    """Their step 2: at least two colours, each covering more than 4.8 % of the tile."""
    return len(counts) > 1 and min(counts) / area > DEEPGLOBE_MIN_SHARE


def check_colours(codes, counts, mask_path):
    unknown = [(int(c), int(n)) for c, n in zip(codes, counts) if int(c) not in KNOWN_CODES]
    if unknown:
        shown = ', '.join(f'RGB({c & 255}, {(c >> 8) & 255}, {c >> 16}) on {n} pixels'
                          for c, n in unknown[:3])
        raise bad_file(mask_path, f'colours outside the Deepglobe table (6 classes and black): '
                                  f'{shown}{" ..." if len(unknown) > 3 else ""}')


def tiles_of(image_path, mask_path):
    """[(tile name suffix 'ij', image tile BGR, mask tile colour codes, the tile's colours and
    their pixel counts)] of one release pair, whose colours are checked against the table."""
    image = decode(read_bytes(image_path, 'image'), image_path)
    mask = decode(read_bytes(mask_path, 'mask'), mask_path, cv2.IMREAD_COLOR, 'a mask')
    if image.shape != mask.shape:
        raise bad_file(mask_path, f'mask size {mask.shape[0]}x{mask.shape[1]} differs from image '
                                  f'{image_path} size {image.shape[0]}x{image.shape[1]}')
    codes = colour_codes(mask)
    tiles = [(f'{i}{j}', image[y0:y1, x0:x1], codes[y0:y1, x0:x1],
              *np.unique(codes[y0:y1, x0:x1], return_counts=True))
             for i, (y0, y1) in enumerate(tile_bounds(image.shape[0]))
             for j, (x0, x1) in enumerate(tile_bounds(image.shape[1]))]
    # the tiles cover the mask: its colours and counts are those of the tiles, summed
    values, where = np.unique(np.concatenate([t[3] for t in tiles]), return_inverse=True)
    check_colours(values, np.bincount(where, np.concatenate([t[4] for t in tiles])), mask_path)
    return tiles


def prepare_pair(pair, out):
    """Write the kept tiles of one release pair under `out`; returns {'kept': n, 'dropped': n,
    class number: tiles written}."""
    image_id, image_path, mask_path = pair
    tally = collections.Counter()
    for suffix, image, codes, values, counts in tiles_of(image_path, mask_path):
        if not keep_tile(counts, codes.size):
            tally['dropped'] += 1
            continue
        tally['kept'] += 1
        name = f'{image_id}_{suffix}'
        encoded = cv2.imencode('.jpg', image)[1].tobytes()      # cv2.imwrite's JPEG, quality 95
        for c, code in enumerate(CLASS_CODES, 1):
            if code in values:
                folder = os.path.join(out, str(c), 'test')
                # no fsync per file (as write_image): the folder is renamed once complete
                write_atomic(os.path.join(folder, 'origin', name + '.jpg'), encoded, sync=False)
                write_image(os.path.join(folder, 'groundtruth', name + '.png'),
                            np.where(codes == code, 255, 0).astype(np.uint8))
                tally[c] += 1
    return tally


def prepare(release, out, workers):
    """All pairs of `release` into `out` (built in a sibling folder, renamed when complete).
    Returns the summed tally."""
    pairs = release_pairs(release)
    with folder_built_whole(out) as partial:
        tallies = progress_map(lambda p: prepare_pair(p, partial), pairs, workers,
                               desc='release images', unit='image')
    total = sum(tallies, collections.Counter())
    total['images'] = len(pairs)
    return total


def report(total):
    lines = [f"{total['images']} release images, {total['images'] * DEEPGLOBE_GRID ** 2} tiles: "
             f"{total['kept']} kept, {total['dropped']} dropped (one colour, or a colour on "
             f"<= {DEEPGLOBE_MIN_SHARE:.1%})"]
    lines += [f'  class {c} ({name}): {total[c]} tiles'
              for c, name in enumerate(DEEPGLOBE_CLASSES, 1)]
    return '\n'.join(lines)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--release', required=True, help='folder of <id>_sat.jpg and <id>_mask.png')
    p.add_argument('--out', required=True, help='the benchmark folder to create (data_root)')
    p.add_argument('--workers', type=positive_int, default=min(8, os.cpu_count() or 1))
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.release):
        raise FileNotFoundError(f'release folder not found: {args.release}')
    total = prepare(args.release, args.out, args.workers)
    print(report(total))
    print(f'wrote {args.out}')
    return total


if __name__ == '__main__':
    run_main(main)
