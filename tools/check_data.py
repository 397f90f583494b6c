"""Check a dataset before training: every image and label of the lists is opened and checked.

Problems found (one line each in the report file, "kind<TAB>path<TAB>detail"):
  missing       a listed image or label file does not exist
  unreadable    the file cannot be decoded, is truncated (a JPEG without its end-of-image marker,
                a PNG without its IEND chunk), or a label is not a single-channel 8-bit image
  size          image and label differ in height or width
  values        the label holds values other than 0, the data set's class ids and 255
For PATNet's cross-domain layouts (fss, deepglobe, isic, lung, and folder: docs/cross_domain.md)
every (image, mask) pair the benchmark uses, masks read as PATNet reads them (grey):
  missing       a mask, image or class folder (or FSS-1000's 1.jpg .. 10.jpg) is not there
  name          a Chest X-ray mask whose name does not end in _mask.png
  few           a class with fewer than shot + 1 images
  unreadable, size   as above
  values        a mask with grey levels other than 0 and 255 (PATNet binarises at 128: a 0/1
                mask would be all background)

    python tools/check_data.py --config config/pascal/pascal_split0_resnet50.yaml
    python tools/check_data.py --data-set pascal --data-root ../data/VOCdevkit2012/VOC2012 \\
        --list lists/pascal/val.txt
    python tools/check_data.py --config config/cross_domain/deepglobe_resnet50.yaml
    python tools/check_data.py --data-set lung --data-root ../data/CDFSL/LungSegmentation
Exit status 1 when anything was found (2, with one line `error: ...`, when the check itself
cannot run, e.g. a malformed list line). Training with skip_bad_files: True skips such files.
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.datasets.cross_domain import CROSS_DOMAIN  # noqa: E402
from util.datasets.cross_domain_layouts import layout_of  # noqa: E402
from util.datasets.patnet import grey_values, open_image  # noqa: E402
from util.folds import NUM_CLASSES, num_classes  # noqa: E402
from util.image_io import BadFileError, check_label_values, read_image, read_label  # noqa: E402
from util.lists import REPO_LISTS, read_list  # noqa: E402
from util.log import progress_map  # noqa: E402
from util.outputs import write_atomic  # noqa: E402

KINDS = ('missing', 'unreadable', 'size', 'values')
LAYOUT_KINDS = ('missing', 'name', 'few', 'unreadable', 'size', 'values')    # cross-domain


def check_pair(data_root, pair, classes):
    """[(kind, path, detail)] of one list entry (empty when it is fine)."""
    image_path, label_path = (os.path.join(data_root, p) for p in pair)
    problems, loaded = [], {}
    for path, reader in ((image_path, read_image), (label_path, read_label)):
        if not os.path.isfile(path):
            problems.append(('missing', path, 'file not found'))
            continue
        try:
            loaded[path] = reader(path)
        except BadFileError as e:
            problems.append(('unreadable', path, str(e)))
    if len(loaded) < 2:
        return problems
    image, label = loaded[image_path], loaded[label_path]
    if image.shape[:2] != label.shape:
        problems.append(('size', label_path, f'label {label.shape[0]}x{label.shape[1]}, image '
                                             f'{image.shape[0]}x{image.shape[1]}'))
    try:
        check_label_values(label, label_path, classes)
    except BadFileError as e:
        problems.append(('values', label_path, str(e)))
    return problems


def check_list(data_set, data_root, data_list, workers=8):
    """All problems of one list file."""
    pairs = read_list(data_list)
    classes = num_classes(data_set)
    results = progress_map(lambda p: check_pair(data_root, p, classes), pairs, workers,
                           desc=os.path.basename(data_list), unit='pair')
    return len(pairs), [problem for found in results for problem in found]


def check_mask_pair(root, pair):
    """[(kind, path, detail)] of one (image, mask) pair of a cross-domain layout, both opened as
    PATNet opens them (Pillow)."""
    paths = [os.path.join(root, p) for p in pair]
    problems, sizes = [], []
    for path in paths:
        try:
            sizes.append(open_image(path).size)
        except BadFileError as e:
            problems.append(('unreadable', path, str(e)))
    if problems:
        return problems
    if sizes[0] != sizes[1]:
        problems.append(('size', paths[1], f'mask {sizes[1][1]}x{sizes[1][0]}, image '
                                           f'{sizes[0][1]}x{sizes[0][0]}'))
    levels = grey_values(paths[1])
    if not set(levels) <= {0, 255}:
        shown = ', '.join(map(str, levels[:6])) + (' ...' if len(levels) > 6 else '')
        problems.append(('values', paths[1], f'grey levels {shown}: expected 0 and 255 '
                                             '(PATNet binarises at 128)'))
    return problems


def check_layouts(data_set, data_root, class_lists, shot, workers=8):
    """(pairs checked, problems, notes) of a cross-domain layout: its own problems (names,
    missing files, classes with fewer than shot + 1 images), then every pair's."""
    layouts = [layout_of(data_set, data_root, class_list) for class_list in class_lists or [None]]
    problems = [problem for layout in layouts for problem in layout.problems]
    missing = {path for kind, path, _ in problems if kind == 'missing'}
    notes = []
    for layout in layouts:
        problems += [('few', os.path.join(data_root, folder), f'{len(pairs)} image(s), fewer '
                      f'than shot + 1 = {shot + 1}')
                     for folder, pairs in zip(layout.folders, layout.pairs)
                     if len(pairs) < shot + 1 and os.path.join(data_root, folder) not in missing]
        if layout.unused:
            notes.append(f'{len(layout.unused)} image(s) without a mask, not used (as in '
                         f'PATNet), e.g. {os.path.join(data_root, layout.unused[0])}')
    pairs = [pair for pair in dict.fromkeys(p for layout in layouts for pairs in layout.pairs
                                            for p in pairs)
             if not {os.path.join(data_root, p) for p in pair} & missing]
    results = progress_map(lambda p: check_mask_pair(data_root, p), pairs, workers,
                           desc=data_set, unit='pair')
    return len(pairs), problems + [problem for found in results for problem in found], notes


def sources_from_args(args):
    """(data_set, data_root, [list files], shot) from --config or the explicit arguments."""
    if args.config:
        from util.config import load_config
        cfg = load_config(args.config, args.opts)
        lists = [p for p in (cfg.train_list, cfg.val_list) if p]
        return cfg.data_set, cfg.data_root, lists, cfg.shot
    if not (args.data_set and args.data_root and (args.list or args.data_set in CROSS_DOMAIN)):
        raise ValueError('give --config, or --data-set, --data-root and at least one --list')
    return args.data_set, args.data_root, args.list, args.shot


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', help='experiment config: checks its train_list and val_list')
    parser.add_argument('--opts', nargs=argparse.REMAINDER, default=[],
                        help='config overrides, KEY VALUE ...')
    parser.add_argument('--data-set', choices=sorted(NUM_CLASSES) + list(CROSS_DOMAIN))
    parser.add_argument('--data-root', help='folder the list paths are relative to (a '
                        "cross-domain benchmark's own folder)")
    parser.add_argument('--list', action='append', help='list file (repeatable; fss and folder: '
                        'a class list, default for fss its 240 test classes)')
    parser.add_argument('--shot', type=positive_int, default=1,
                        help='cross-domain layouts: report classes with fewer than shot + 1 '
                             'images (default 1; --config gives its own)')
    parser.add_argument('--out', help='report file (default: lists/<data_set>/bad_files.txt)')
    parser.add_argument('--workers', type=positive_int, default=min(8, os.cpu_count() or 1))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    data_set, data_root, lists, shot = sources_from_args(args)
    if not os.path.isdir(data_root):
        raise FileNotFoundError(f'data root not found: {data_root}')
    lists = lists or []
    problems, total, notes = [], 0, []
    if data_set in CROSS_DOMAIN:
        total, problems, notes = check_layouts(data_set, data_root, lists, shot, args.workers)
    else:
        for data_list in lists:
            count, found = check_list(data_set, data_root, data_list, args.workers)
            total += count
            problems += found
    out = args.out or os.path.join(REPO_LISTS, data_set, 'bad_files.txt')
    write_atomic(out, ''.join(f'{kind}\t{path}\t{detail}\n' for kind, path, detail in problems))
    counts = collections.Counter(kind for kind, _, _ in problems)
    where = data_set if data_set in CROSS_DOMAIN and not lists else f'{len(lists)} list(s)'
    kinds = LAYOUT_KINDS if data_set in CROSS_DOMAIN else KINDS
    print(f'{total} image/label pairs checked in {where}: ' +
          ', '.join(f'{counts[k]} {k}' for k in kinds))
    for note in notes:
        print(f'  note: {note}')
    for kind, path, detail in problems[:20]:
        print(f'  {kind}: {detail if path in detail else path + ": " + detail}')
    if len(problems) > 20:
        print(f'  ... {len(problems) - 20} more')
    print(f'report: {out}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(run_main(main))
