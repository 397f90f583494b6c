"""Make PATNet's ISIC benchmark from the ISIC-2018 Task 1 training data: the images sorted into
one folder per class, the masks beside them.

    python tools/prepare_isic.py --images ../data/isic/ISIC2018_Task1-2_Training_Input \\
        --masks ../data/isic/ISIC2018_Task1_Training_GroundTruth --out ../data/CDFSL/ISIC

writes
    <out>/ISIC2018_Task1-2_Training_Input/{1,2,3}/<id>.jpg
    <out>/ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png
as copies of the downloaded files, and prints the count per class. --link makes hard links
instead (no second copy of the ~10 GB of images; copies where a link cannot be made): a linked
file and its download are then one file, and editing either edits both, which the tool says. The
classes come from a table `ID,Class` (--classes; default PATNet's data/isic/class_id.csv,
shipped in util/datasets/patnet_lists/ with its source): 2,594 images of nevus, melanoma and
seborrheic keratosis. PATNet does not say which folder number holds which class; --class-order
gives it (default: the names sorted, melanoma = 1, nevus = 2, seborrheic_keratosis = 3). An
image of --images that the table does not classify, or a table id without its image or mask, is
an error. --out must not exist; it appears only when complete.
"""
import argparse
import csv
import io
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, run_main  # noqa: E402
from util.datasets.patnet import ISIC_INPUT, ISIC_TRUTH, LISTS  # noqa: E402
from util.files.inputs import read_text  # noqa: E402
from util.files.writer import folder_built_whole  # noqa: E402

CLASS_TABLE = os.path.join(LISTS, 'isic_class_id.csv')
DEFAULT_ORDER = 'melanoma,nevus,seborrheic_keratosis'


def read_table(path):
    """{image id: class name} of a CSV with the columns ID and Class."""
    rows = list(csv.reader(io.StringIO(read_text(path, 'class table'))))
    if not rows or [h.strip() for h in rows[0]] != ['ID', 'Class']:
        raise ValueError(f'{path}: expected a CSV whose first line is "ID,Class"')
    table = {}
    for number, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip():
            raise ValueError(f'{path}:{number}: expected "ID,Class", got {",".join(row)!r}')
        image_id, name = row[0].strip(), row[1].strip()
        if image_id in table:
            raise ValueError(f'{path}:{number}: {image_id} is listed twice')
        table[image_id] = name
    return table


def class_folders(table, order, table_path):
    """{class name: folder number} from the --class-order names."""
    names = [n.strip() for n in order.split(',') if n.strip()]
    unlisted = sorted(set(table.values()) - set(names))
    if unlisted or len(set(names)) != len(names):
        raise ValueError(f'--class-order {order!r} must name each class of {table_path} once: '
                         f'{", ".join(sorted(set(table.values())))}')
    return {name: n for n, name in enumerate(names, 1)}


def plan_links(images, masks, table, folders):
    """[(source, destination relative to --out)] for every image and mask of the table."""
    found = {n[:-4] for n in os.listdir(images) if n.endswith('.jpg')}
    unclassified = sorted(found - set(table))
    if unclassified:
        raise ValueError(f'{os.path.join(images, unclassified[0] + ".jpg")}: no class in the '
                         f'class table ({len(unclassified)} such images); give a table that '
                         'classifies every image (--classes)')
    links = []
    for image_id, name in sorted(table.items()):
        image = os.path.join(images, image_id + '.jpg')
        mask = os.path.join(masks, image_id + '_segmentation.png')
        for path in (image, mask):
            if not os.path.isfile(path):
                raise FileNotFoundError(f'{path} not found ({image_id} is in the class table)')
        links.append((image, os.path.join(ISIC_INPUT, str(folders[name]), image_id + '.jpg')))
        links.append((mask, os.path.join(ISIC_TRUTH, image_id + '_segmentation.png')))
    return links


def copy_or_link(source, destination, link=False):
    """Copy `source` (`link`: hard-link it, copy where a link cannot be made)."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    if link:
        try:
            os.link(source, destination)
            return
        except OSError:
            pass
    shutil.copy2(source, destination)


def prepare(images, masks, out, table_path=CLASS_TABLE, order=DEFAULT_ORDER, link=False):
    """Build `out` (in a sibling folder, renamed when complete) of copies of the downloaded
    files, or of hard links to them (`link`). Returns ({folder number: image count}, {class
    name: folder number})."""
    for folder, what in ((images, '--images'), (masks, '--masks')):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'{what} folder not found: {folder}')
    table = read_table(table_path)
    folders = class_folders(table, order, table_path)
    links = plan_links(images, masks, table, folders)
    with folder_built_whole(out) as partial:
        for source, destination in links:
            copy_or_link(source, os.path.join(partial, destination), link)
    return {n: sum(table[i] == name for i in table) for name, n in folders.items()}, folders


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--images', required=True, help='ISIC2018_Task1-2_Training_Input (*.jpg)')
    p.add_argument('--masks', required=True,
                   help='ISIC2018_Task1_Training_GroundTruth (*_segmentation.png)')
    p.add_argument('--out', required=True, help='the benchmark folder to create (data_root)')
    p.add_argument('--classes', default=CLASS_TABLE, help='class table, CSV "ID,Class" '
                   "(default: PATNet's data/isic/class_id.csv)")
    p.add_argument('--link', action='store_true',
                   help='hard links to the downloaded files instead of copies (saves their '
                        'space; editing a file of either folder then edits both)')
    p.add_argument('--class-order', default=DEFAULT_ORDER,
                   help='the class names of folders 1, 2, 3, comma-separated '
                        f'(default {DEFAULT_ORDER})')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    counts, folders = prepare(args.images, args.masks, args.out, args.classes, args.class_order,
                              args.link)
    for name, n in folders.items():
        print(f'class {n} ({name}): {counts[n]} images')
    print(f'wrote {args.out}')
    if args.link:
        print(f'note: the files of {args.out} are hard links to {args.images} and {args.masks}: '
              'each pair is one file, and editing either edits both')
    return counts


if __name__ == '__main__':
    run_main(main)
