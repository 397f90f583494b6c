"""Prepare PASCAL-5i: SegmentationClassAug labels (VOC2012 + SBD) and the train/val lists.

Labels: one single-channel PNG of class ids per image (0 background, 1..20 classes, 255 the
"void" border), written to <voc>/SegmentationClassAug/<id>.png:
- from VOC2012 SegmentationClass (palette PNGs; the palette colour gives the class id, the
  cream border colour gives 255) for every image VOC annotates;
- from SBD cls/<id>.mat (GTcls.Segmentation, no border) for the other images of the chosen SBD
  sets. VOC's annotation wins where both exist.
Lists (lines "JPEGImages/<id>.jpg SegmentationClassAug/<id>.png", relative to <voc>):
- val.txt: VOC2012 ImageSets/Segmentation/val.txt (1,449 images);
- voc_sbd_merge_noduplicate.txt: VOC2012 train, then the SBD sets' images, without duplicates and
  without any VOC2012 val image.

    python tools/prepare_pascal.py --voc ../data/VOCdevkit2012/VOC2012 --sbd ../data/SBD/dataset
"""
import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.image_io import IGNORE_LABEL, bad_file, decode, read_bytes, write_image  # noqa: E402
from util.inputs import read_text  # noqa: E402
from util.lists import REPO_LISTS  # noqa: E402
from util.log import progress_map  # noqa: E402
from util.outputs import write_atomic  # noqa: E402

TRAIN_LIST = 'voc_sbd_merge_noduplicate.txt'
VAL_LIST = 'val.txt'


def voc_palette():
    """256×3 RGB colours of the VOC palette: colour of index i spreads i's bits over the
    channels, three bits per round, from the highest bit of each channel down."""
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def colour_codes(rgb):
    """H×W×3 uint8 → H×W int32 packing r, g, b into one number."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


PALETTE_CODE = {int(code): index for index, code in
                enumerate(colour_codes(voc_palette()[:, None, :])[:, 0]) if index <= 20 or
                index == IGNORE_LABEL}


def read_voc_label(path):
    """Class ids of a VOC palette PNG (OpenCV expands the palette to colours; map them back)."""
    image = decode(read_bytes(path, 'VOC label'), path, cv2.IMREAD_UNCHANGED, 'a VOC label image')
    if image.ndim == 2:
        raise bad_file(path, 'a single-channel image, not a VOC palette label; class-id labels '
                             'belong in SegmentationClassAug (then run with --lists-only)')
    codes = colour_codes(image[..., 2::-1])
    label = np.empty(codes.shape, np.uint8)
    for code in np.unique(codes).tolist():
        if code not in PALETTE_CODE:
            rgb = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
            raise ValueError(f'{path}: colour RGB{rgb} is not a VOC class colour')
        label[codes == code] = PALETTE_CODE[code]
    return label


def read_sbd_label(path):
    """Class ids of an SBD cls/<id>.mat (GTcls.Segmentation)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError
    if not os.path.isfile(path):
        raise FileNotFoundError(f'SBD annotation not found: {path}')
    try:
        segmentation = loadmat(path)['GTcls']['Segmentation'][0, 0]
    except (KeyError, ValueError, IndexError, TypeError, MatReadError) as e:
        raise ValueError(f'{path}: not an SBD cls file with GTcls.Segmentation ({e})') from e
    if segmentation.max() > 20:
        raise ValueError(f'{path}: class ids up to {segmentation.max()}, expected 0..20')
    return segmentation.astype(np.uint8)


def read_ids(path):
    return [line.strip() for line in read_text(path, 'image id list').splitlines() if line.strip()]


def label_sources(voc, sbd, sbd_sets):
    """{image id: (reader, source path)}: VOC's palette PNG where it exists, else SBD's .mat."""
    sources = {}
    if sbd:
        for name in sbd_sets:
            for i in read_ids(os.path.join(sbd, f'{name}.txt')):
                sources[i] = (read_sbd_label, os.path.join(sbd, 'cls', f'{i}.mat'))
    voc_labels = os.path.join(voc, 'SegmentationClass')
    if not os.path.isdir(voc_labels):
        raise FileNotFoundError(f'VOC2012 SegmentationClass folder not found: {voc_labels}')
    for name in sorted(os.listdir(voc_labels)):
        if name.endswith('.png'):
            sources[name[:-4]] = (read_voc_label, os.path.join(voc_labels, name))
    return sources


def convert_labels(sources, out_dir, workers):
    """Write <out_dir>/<id>.png for every source."""
    def convert(item):
        image_id, (reader, path) = item
        write_image(os.path.join(out_dir, f'{image_id}.png'), reader(path))

    progress_map(convert, sorted(sources.items()), workers, desc='labels', unit='label')


def write_list(path, ids, voc):
    for i in ids:
        if not os.path.isfile(os.path.join(voc, 'JPEGImages', f'{i}.jpg')):
            raise FileNotFoundError(f'image of listed id {i} not found: '
                                    f'{os.path.join(voc, "JPEGImages", i + ".jpg")}')
    write_atomic(path, ''.join(f'JPEGImages/{i}.jpg SegmentationClassAug/{i}.png\n' for i in ids))
    print(f'{path}: {len(ids)} images')


def make_lists(voc, sbd, sbd_sets, out_dir):
    sets = os.path.join(voc, 'ImageSets', 'Segmentation')
    val = read_ids(os.path.join(sets, 'val.txt'))
    train = read_ids(os.path.join(sets, 'train.txt'))
    if sbd:
        for name in sbd_sets:
            train += read_ids(os.path.join(sbd, f'{name}.txt'))
    held_out = set(val)
    train = [i for i in dict.fromkeys(train) if i not in held_out]
    write_list(os.path.join(out_dir, VAL_LIST), val, voc)
    write_list(os.path.join(out_dir, TRAIN_LIST), train, voc)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--voc', required=True,
                        help='VOC2012 folder (JPEGImages, SegmentationClass, ImageSets); also the '
                             'data_root of the configs')
    parser.add_argument('--sbd', help='SBD "dataset" folder (cls/*.mat, train.txt, val.txt); '
                                      'without it only VOC labels are used')
    parser.add_argument('--sbd-sets', default='train',
                        help='comma-separated SBD id lists merged into training (default: train)')
    parser.add_argument('--lists-dir', default=os.path.join(REPO_LISTS, 'pascal'),
                        help='where val.txt and voc_sbd_merge_noduplicate.txt go '
                             '(default: lists/pascal of the repo)')
    parser.add_argument('--lists-only', action='store_true',
                        help='only write the lists (SegmentationClassAug exists already)')
    parser.add_argument('--workers', type=positive_int, default=min(8, os.cpu_count() or 1),
                        help='threads converting labels')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.voc):
        raise FileNotFoundError(f'VOC2012 folder not found: {args.voc}')
    if args.sbd and not os.path.isdir(args.sbd):
        raise FileNotFoundError(f'SBD folder not found: {args.sbd}')
    sbd_sets = [s for s in args.sbd_sets.split(',') if s]
    if not args.lists_only:
        convert_labels(label_sources(args.voc, args.sbd, sbd_sets),
                       os.path.join(args.voc, 'SegmentationClassAug'), args.workers)
    make_lists(args.voc, args.sbd, sbd_sets, args.lists_dir)


if __name__ == '__main__':
    run_main(main)
