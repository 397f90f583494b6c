"""Prepare PASCAL-5i: SegmentationClassAug labels (VOC2012 + SBD) and the train/val lists.

Labels: one single-channel PNG of class ids per image (0 background, 1..20 classes, 255 the
"void" border), written to <voc>/SegmentationClassAug/<id>.png:
- from VOC2012 SegmentationClass (palette PNGs; the palette colour gives the class id, the
  cream border colour gives 255) for every image VOC annotates;
- from SBD cls/<id>.mat (GTcls.Segmentation, no border) for the other images of the training
  list. VOC's annotation wins where both exist.
Lists (lines "JPEGImages/<id>.jpg SegmentationClassAug/<id>.png", relative to <voc>):
- val.txt: VOC2012 ImageSets/Segmentation/val.txt (1,449 images);
- voc_sbd_merge_noduplicate.txt, the training list, by --train-list:
  'paper' (default): the 5,953 images the paper's models were trained on, PFENet's list as the
  authors ship it (image ids in lists/pascal/pfenet_train_ids.txt, in their order, with where
  they come from);
  'full': VOC2012 train, then the images of the SBD sets (--sbd-sets), without duplicates and
  without any VOC2012 val image (>= 7,049 images with SBD train).
Before anything is written, every listed id is checked to have its image and its label (one this
run writes, or with --lists-only one in SegmentationClassAug), and no list or label may replace a
file the tool reads (e.g. --lists-dir naming VOC's ImageSets/Segmentation).

    python tools/prepare_pascal.py --voc ../data/VOCdevkit2012/VOC2012 --sbd ../data/SBD/dataset
"""
import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.files.checks import InputFiles, check_outputs  # noqa: E402
from util.files.image_io import (IGNORE_LABEL, bad_file, colour_codes, decode,  # noqa: E402
                                 read_bytes, write_image)
from util.files.inputs import read_text  # noqa: E402
from util.files.writer import write_atomic  # noqa: E402
from util.lists import REPO_LISTS  # noqa: E402
from util.log import progress_map  # noqa: E402

TRAIN_LIST = 'voc_sbd_merge_noduplicate.txt'
AUG_LABELS = 'SegmentationClassAug'
VAL_LIST = 'val.txt'
PAPER_TRAIN_IDS = os.path.join(REPO_LISTS, 'pascal', 'pfenet_train_ids.txt')
TRAIN_LISTS = ('paper', 'full')


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


PALETTE_CODE = {int(code): index for index, code in
                enumerate(colour_codes(voc_palette())) if index <= 20 or
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
    """The image ids of a list, one a line; lines starting with '#' are comments."""
    lines = (line.strip() for line in read_text(path, 'image id list').splitlines())
    return [line for line in lines if line and not line.startswith('#')]


def label_sources(voc, sbd, train_ids):
    """{image id: (reader, source path)}: VOC's palette PNG for every image VOC annotates, SBD's
    .mat for the training images VOC does not."""
    voc_labels = os.path.join(voc, 'SegmentationClass')
    if not os.path.isdir(voc_labels):
        raise FileNotFoundError(f'VOC2012 SegmentationClass folder not found: {voc_labels}')
    sources = {name[:-4]: (read_voc_label, os.path.join(voc_labels, name))
               for name in sorted(os.listdir(voc_labels)) if name.endswith('.png')}
    from_sbd = [i for i in train_ids if i not in sources]
    if from_sbd and not sbd:
        raise FileNotFoundError(f'{len(from_sbd)} training images have no VOC2012 label (the '
                                f'first: {from_sbd[0]}): give the SBD folder with --sbd')
    for i in from_sbd:
        sources[i] = (read_sbd_label, os.path.join(sbd, 'cls', f'{i}.mat'))
    return sources


def convert_labels(sources, out_dir, workers):
    """Write <out_dir>/<id>.png for every source."""
    def convert(item):
        image_id, (reader, path) = item
        write_image(os.path.join(out_dir, f'{image_id}.png'), reader(path))

    progress_map(convert, sorted(sources.items()), workers, desc='labels', unit='label')


def image_path(voc, image_id):
    return os.path.join(voc, 'JPEGImages', f'{image_id}.jpg')


def label_path(voc, image_id):
    return os.path.join(voc, AUG_LABELS, f'{image_id}.png')


def check_listed(ids, voc, sources):
    """Before anything is written: every listed id has its image and its label, one this run
    writes (`sources`) or, with --lists-only (sources None), one in SegmentationClassAug
    already; the SBD files the labels come from exist."""
    for i in ids:
        if not os.path.isfile(image_path(voc, i)):
            raise FileNotFoundError(f'image of listed id {i} not found: {image_path(voc, i)}')
        if sources is None:
            if not os.path.isfile(label_path(voc, i)):
                raise FileNotFoundError(f'label of listed id {i} not found: {label_path(voc, i)} '
                                        '(--lists-only lists the labels written before: run '
                                        'without it to write them)')
        elif i not in sources:
            raise FileNotFoundError(f'listed id {i} has no label: '
                                    f'{os.path.join(voc, "SegmentationClass", i + ".png")} not '
                                    'found (a validation image needs its VOC2012 label)')
        elif not os.path.isfile(sources[i][1]):
            raise FileNotFoundError(f'label of listed id {i} not found: {sources[i][1]}')


def write_list(path, ids):
    write_atomic(path, ''.join(f'JPEGImages/{i}.jpg {AUG_LABELS}/{i}.png\n' for i in ids))
    print(f'{path}: {len(ids)} images')


def val_id_list(voc):
    return os.path.join(voc, 'ImageSets', 'Segmentation', 'val.txt')


def train_id_lists(voc, sbd, sbd_sets, train_list):
    """The id lists the training list is made of: the paper's (shipped) or VOC2012 train and
    the SBD sets."""
    if train_list == 'paper':
        return [PAPER_TRAIN_IDS]
    return [os.path.join(voc, 'ImageSets', 'Segmentation', 'train.txt')] + [
        os.path.join(sbd, f'{name}.txt') for name in (sbd_sets if sbd else ())]


def listed_ids(voc, id_lists):
    """(training ids, validation ids): the ids of the training `id_lists` without duplicates
    and never a validation image; VOC2012's validation ids."""
    train = [i for path in id_lists for i in read_ids(path)]
    val = read_ids(val_id_list(voc))
    held_out = set(val)
    return [i for i in dict.fromkeys(train) if i not in held_out], val


def check_run_outputs(args, id_lists, sources, listed):
    """Before anything is written: no label or list this run writes replaces a file it reads
    (id lists, images, VOC and SBD labels); its own earlier labels and lists are replaced."""
    inputs = InputFiles(id_lists)
    inputs.add((image_path(args.voc, i) for i in listed), follow_links=False)
    inputs.add((path for _, path in (sources or {}).values()), follow_links=False)
    labels = [label_path(args.voc, i) for i in sources or ()]
    check_outputs(labels + [os.path.join(args.lists_dir, name) for name in (VAL_LIST, TRAIN_LIST)],
                  inputs, overwrite=True)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--voc', required=True,
                        help='VOC2012 folder (JPEGImages, SegmentationClass, ImageSets); also the '
                             'data_root of the configs')
    parser.add_argument('--sbd', help='SBD "dataset" folder (cls/*.mat, train.txt, val.txt); '
                                      'without it only VOC labels are used')
    parser.add_argument('--train-list', choices=TRAIN_LISTS, default='paper',
                        help="'paper': the 5,953 images the paper trained on (PFENet's list, "
                             "shipped in lists/pascal/pfenet_train_ids.txt; default); 'full': "
                             'VOC2012 train + the SBD sets (--sbd-sets)')
    parser.add_argument('--sbd-sets',
                        help='with --train-list full: comma-separated SBD id lists merged into '
                             'training (default: train)')
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
    if args.sbd_sets and args.train_list != 'full':
        raise ValueError('--sbd-sets chooses the SBD images of --train-list full; the paper\'s '
                         'list (the default) is fixed')
    sbd_sets = [s for s in (args.sbd_sets or 'train').split(',') if s]
    id_lists = train_id_lists(args.voc, args.sbd, sbd_sets, args.train_list)
    train, val = listed_ids(args.voc, id_lists)
    sources = None if args.lists_only else label_sources(args.voc, args.sbd, train)
    for ids in (val, train):
        check_listed(ids, args.voc, sources)
    check_run_outputs(args, [val_id_list(args.voc)] + id_lists, sources, val + train)
    if sources:
        convert_labels(sources, os.path.join(args.voc, AUG_LABELS), args.workers)
    write_list(os.path.join(args.lists_dir, VAL_LIST), val)
    write_list(os.path.join(args.lists_dir, TRAIN_LIST), train)


if __name__ == '__main__':
    run_main(main)
