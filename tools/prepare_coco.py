"""Prepare COCO-20i: per-image class-id PNGs from the COCO 2014 instance annotations, and lists.

For each of train2014 / val2014, every image with at least one annotation gets
<coco>/annotations/<set>/<image name>.png: one byte per pixel, 0 background, 1..80 the 80
categories numbered in increasing COCO category id (1 person ... 80 toothbrush). Instances are
painted largest first, so a smaller object lying on a larger one stays visible; crowd regions are
painted with their class (or 255 with --crowd ignore).
Lists (lines "<set>/<name>.jpg annotations/<set>/<name>.png", relative to <coco>): train.txt and
val.txt in --lists-dir (default lists/coco of the repo), by image id, or val.txt in the order of
another list with --order-from (the authors' test order: see docs/data.md, COCO-20i).

    python tools/prepare_coco.py --coco ../data/MSCOCO2014 --order-from authors_val.txt
expects <coco>/{train2014,val2014}/*.jpg and <coco>/annotations/instances_{train,val}2014.json.
"""
import argparse
import multiprocessing
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.files.checks import InputFiles, check_outputs  # noqa: E402
from util.files.image_io import IGNORE_LABEL, write_image  # noqa: E402
from util.files.writer import write_atomic  # noqa: E402
from util.lists import REPO_LISTS, read_list  # noqa: E402
from util.log import progress  # noqa: E402

SETS = {'train2014': 'train.txt', 'val2014': 'val.txt'}
_COCO = None          # the set being converted; module-level so forked workers share it
_OPTIONS = None


def class_ids(coco):
    """{COCO category id: contiguous class id 1..80} in increasing category id."""
    return {cat: i + 1 for i, cat in enumerate(sorted(coco.getCatIds()))}


def paint_label(coco, image_id, classes, crowd='class'):
    """H×W uint8 class-id label of one image."""
    info = coco.imgs[image_id]
    label = np.zeros((info['height'], info['width']), np.uint8)
    anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)),
                  key=lambda a: a['area'], reverse=True)
    for ann in anns:
        value = IGNORE_LABEL if ann.get('iscrowd') and crowd == 'ignore' else classes[ann['category_id']]
        label[coco.annToMask(ann) > 0] = value
    return label


def label_path(coco, image_id, out_dir):
    """<out_dir>/<image name>.png: where an image's label goes."""
    return os.path.join(out_dir, os.path.splitext(coco.imgs[image_id]['file_name'])[0] + '.png')


def convert_one(image_id):
    coco, (classes, out_dir, crowd) = _COCO, _OPTIONS
    write_image(label_path(coco, image_id, out_dir), paint_label(coco, image_id, classes, crowd))


def check_categories(coco, ann_file):
    """Refuse annotations whose category the file does not list (they have no class id)."""
    known = set(coco.getCatIds())
    unknown = [ann for ann in coco.anns.values() if ann['category_id'] not in known]
    if unknown:
        ann = unknown[0]
        image = coco.imgs.get(ann['image_id'], {}).get('file_name', f'image id {ann["image_id"]}')
        raise ValueError(f'{ann_file}: annotation {ann["id"]} of {image} has category id '
                         f'{ann["category_id"]}, which is not among the file\'s categories '
                         f'({len(unknown)} such annotations)')


def annotation_file(coco_root, set_name):
    return os.path.join(coco_root, 'annotations', f'instances_{set_name}.json')


def image_path(coco_root, set_name, coco, image_id):
    return os.path.join(coco_root, set_name, coco.imgs[image_id]['file_name'])


def load_set(coco_root, set_name):
    """(COCO annotations of one set, ids of its images with at least one annotation, sorted);
    every such image must exist and every annotation's category be listed."""
    from pycocotools.coco import COCO
    ann_file = annotation_file(coco_root, set_name)
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f'COCO annotation file not found: {ann_file}')
    try:
        coco = COCO(ann_file)
    except ValueError as e:         # json.JSONDecodeError, whose message names no file
        raise ValueError(f'{ann_file}: not a readable COCO annotation file (truncated JSON?): '
                         f'{e}') from None
    check_categories(coco, ann_file)
    image_ids = sorted(i for i in coco.imgs if coco.getAnnIds(imgIds=i, iscrowd=None))
    for image_id in image_ids:
        image = image_path(coco_root, set_name, coco, image_id)
        if not os.path.isfile(image):
            raise FileNotFoundError(f'image of {ann_file} not found: {image}')
    return coco, image_ids


def check_set_outputs(args, set_name, coco, image_ids, list_path):
    """Before a set is written: none of its labels or its list replaces a file this run reads
    (its annotations, its images, the --order-from list); earlier labels and lists of this
    tool are replaced."""
    inputs = InputFiles([annotation_file(args.coco, set_name)] +
                        ([args.order_from] if args.order_from else []))
    inputs.add((image_path(args.coco, set_name, coco, i) for i in image_ids), follow_links=False)
    label_dir = os.path.join(args.coco, 'annotations', set_name)
    labels = [] if args.lists_only else [label_path(coco, i, label_dir) for i in image_ids]
    check_outputs(labels + [list_path], inputs, overwrite=True)


def paint_labels(coco, image_ids, out_dir, crowd, workers):
    """Write the label PNG of every image into out_dir."""
    global _COCO, _OPTIONS
    os.makedirs(out_dir, exist_ok=True)
    _COCO, _OPTIONS = coco, (class_ids(coco), out_dir, crowd)
    if workers > 1:
        # Forked, not spawned: the workers share the annotations copy-on-write (train2014's take
        # gigabytes once loaded) rather than each loading them; they only paint and write PNGs.
        with multiprocessing.get_context('fork').Pool(workers) as pool:
            for _ in progress(pool.imap_unordered(convert_one, image_ids, chunksize=64),
                              total=len(image_ids), desc=os.path.basename(out_dir), unit='label'):
                pass
    else:
        for image_id in progress(image_ids, total=len(image_ids), desc=os.path.basename(out_dir),
                                 unit='label'):
            convert_one(image_id)


def list_lines(coco, image_ids, set_name):
    """Lines "<set>/<name>.jpg annotations/<set>/<name>.png" of the images, in the given order."""
    lines = []
    for image_id in image_ids:
        file_name = coco.imgs[image_id]['file_name']
        stem = os.path.splitext(file_name)[0]
        lines.append(f'{set_name}/{file_name} annotations/{set_name}/{stem}.png\n')
    return lines


def ordered_like(lines, order_list):
    """`lines` in the order of the images of another list file (matched by image file name, so
    its path prefixes do not matter); lines of images it does not name follow in their own
    order. The test protocol scores the first test_num queries of the val list in list order,
    so this order decides which images are tested."""
    reference = [os.path.basename(image) for image, _ in read_list(order_list)]
    by_name = {os.path.basename(line.split()[0]): line for line in lines}
    ordered = [by_name.pop(name) for name in reference if name in by_name]
    if not ordered:
        raise ValueError(f'--order-from {order_list}: none of its {len(reference)} images is '
                         f'one of the {len(lines)} of this set (e.g. {reference[0]} is not): the '
                         "authors' lists/coco/val.txt is the list meant")
    rest = [line for line in lines if os.path.basename(line.split()[0]) in by_name]
    print(f'{len(ordered)} images in the order of {order_list}; {len(rest)} not named there '
          f'(appended); {len(reference) - len(ordered)} of its images not in this set')
    return ordered + rest


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--coco', required=True,
                        help='COCO 2014 folder (train2014/, val2014/, annotations/); also the '
                             'data_root of the configs')
    parser.add_argument('--sets', default='train2014,val2014',
                        help='comma-separated sets to convert (default: train2014,val2014)')
    parser.add_argument('--lists-dir', default=os.path.join(REPO_LISTS, 'coco'),
                        help='where train.txt / val.txt go (default: lists/coco of the repo)')
    parser.add_argument('--crowd', choices=('class', 'ignore'), default='class',
                        help='crowd regions: painted with their class (default) or 255')
    parser.add_argument('--workers', type=positive_int, default=min(8, os.cpu_count() or 1),
                        help='processes painting labels (1: no subprocess)')
    parser.add_argument('--order-from', metavar='LIST',
                        help="write val.txt in the image order of LIST, e.g. the authors' "
                             'lists/coco/val.txt (default: by image id). Testing scores the first '
                             '4,000 queries in list order: the paper\'s numbers need their order')
    parser.add_argument('--lists-only', action='store_true',
                        help='only write the lists (the label PNGs exist already)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.coco):
        raise FileNotFoundError(f'COCO folder not found: {args.coco}')
    os.makedirs(args.lists_dir, exist_ok=True)
    for set_name in [s for s in args.sets.split(',') if s]:
        if set_name not in SETS:
            raise ValueError(f'unknown set {set_name!r}: expected {sorted(SETS)}')
        coco, image_ids = load_set(args.coco, set_name)
        path = os.path.join(args.lists_dir, SETS[set_name])
        check_set_outputs(args, set_name, coco, image_ids, path)
        if not args.lists_only:
            paint_labels(coco, image_ids, os.path.join(args.coco, 'annotations', set_name),
                         args.crowd, args.workers)
        lines = list_lines(coco, image_ids, set_name)
        if set_name == 'val2014' and args.order_from:
            lines = ordered_like(lines, args.order_from)
        write_atomic(path, ''.join(lines))
        print(f'{path}: {len(lines)} images')


if __name__ == '__main__':
    run_main(main)
