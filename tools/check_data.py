"""Check a dataset before training: every image and label of the lists is opened and checked.

Problems found (the first 20 printed; with --out FILE, every one written there, a line
"kind<TAB>path<TAB>detail" each; nothing is written without --out):
  missing       a listed image or label file does not exist (or is a link to nothing)
  unreadable    the file cannot be decoded, is truncated (a JPEG without its end-of-image marker,
                a PNG without its IEND chunk), a label is not a single-channel 8-bit image, or
                the path is a folder or a loop of symbolic links
  size          image and label differ in height or width
  values        the label holds values other than 0, the data set's class ids and 255
  thin          (--config, its val_list) an image too thin for the config's val_size: the
                validation resize would shrink its short side to nothing
For PATNet's cross-domain layouts (fss, deepglobe, isic, lung, and folder: docs/cross_domain.md)
every (image, mask) pair the benchmark uses, masks read as PATNet reads them (grey):
  missing       a mask, image or class folder (or FSS-1000's 1.jpg .. 10.jpg) is not there
  name          a Chest X-ray mask whose name does not end in _mask.png
  few           a class with fewer than shot + 1 images
  unreadable, size   as above
  values        a mask with grey levels other than 0 and 255 (PATNet binarises at 128: a 0/1
                mask would be all background)
  empty         a mask without a foreground pixel (grey >= 128): as a support it shows nothing
                (util.files.image_io.support_mask_problem, the rule of every tool: the folder data
                set and predict_sccan.py refuse it, PATNet's benchmarks warn)
  full          a mask that is foreground everywhere: an inverted mask? no background to tell

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
from util.datasets.patnet import MASK_THRESHOLD, grey_values, open_image  # noqa: E402
from util.files.checks import InputFiles, check_outputs  # noqa: E402
from util.files.image_io import (BadFileError, check_label_values, read_image,  # noqa: E402
                                 read_label, support_mask_problem)
from util.files.inputs import NOT_FOUND, file_problem  # noqa: E402
from util.files.writer import write_atomic  # noqa: E402
from util.folds import NUM_CLASSES, num_classes  # noqa: E402
from util.lists import list_inputs, read_list  # noqa: E402
from util.log import progress_map  # noqa: E402

KINDS = ('missing', 'unreadable', 'size', 'values', 'thin')
LAYOUT_KINDS = ('missing', 'name', 'few', 'unreadable', 'size', 'values', 'empty',
                'full')    # cross-domain


def check_pair(data_root, pair, classes, size_problem=None):
    """[(kind, path, detail)] of one list entry (empty when it is fine); `size_problem(h, w)`:
    why the transforms the list goes through cannot take an image of that size, or None."""
    image_path, label_path = (os.path.join(data_root, p) for p in pair)
    problems, loaded = [], {}
    for path, reader in ((image_path, read_image), (label_path, read_label)):
        problem = file_problem(path)
        if problem is not None:
            missing, detail = problem
            problems.append(('missing' if missing else 'unreadable', path,
                             'file not found' if detail == NOT_FOUND else f'is {detail}'))
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
    problem = size_problem and size_problem(*label.shape)
    if problem:
        problems.append(('thin', image_path, problem))
    return problems


def check_list(data_set, data_root, pairs, desc, workers=8, size_problem=None):
    """All problems of one list's (image, label) pairs (check_pair)."""
    classes = num_classes(data_set)
    results = progress_map(lambda p: check_pair(data_root, p, classes, size_problem), pairs,
                           workers, desc=desc, unit='pair')
    return [problem for found in results for problem in found]


Sources = collections.namedtuple('Sources', 'data_set data_root lists list_dir config shot')


def check_mask_pair(root, pair):
    """[(kind, path, detail)] of one (image, mask) pair of a cross-domain layout, both opened as
    PATNet opens them (Pillow)."""
    paths = [os.path.join(root, p) for p in pair]
    problems, opened = [], []
    for path in paths:
        try:
            opened.append(open_image(path))
        except BadFileError as e:
            problems.append(('unreadable', path, str(e)))
    if problems:
        return problems
    sizes = [image.size for image in opened]
    if sizes[0] != sizes[1]:
        problems.append(('size', paths[1], f'mask {sizes[1][1]}x{sizes[1][0]}, image '
                                           f'{sizes[0][1]}x{sizes[0][0]}'))
    levels = grey_values(opened[1])
    if not set(levels) <= {0, 255}:
        shown = ', '.join(map(str, levels[:6])) + (' ...' if len(levels) > 6 else '')
        problems.append(('values', paths[1], f'grey levels {shown}: expected 0 and 255 '
                                             '(PATNet binarises at 128)'))
    foreground = [level >= MASK_THRESHOLD for level in levels]
    empty = support_mask_problem(any(foreground))
    if empty:
        problems.append(('empty', paths[1], f'{empty} (grey >= {MASK_THRESHOLD})'))
    elif all(foreground):
        problems.append(('full', paths[1], f'every pixel is foreground (grey >= {MASK_THRESHOLD}):'
                                           ' an inverted mask? A support needs background too'))
    return problems


def read_layouts(data_set, data_root, class_lists):
    """The cross-domain layouts to check: one per class list (FSS-1000 and folder trees), or the
    benchmark's own."""
    return [layout_of(data_set, data_root, class_list) for class_list in class_lists or [None]]


def layout_inputs(layouts, class_lists):
    """The files checking `layouts` reads (class lists, images, masks), as InputFiles."""
    inputs = InputFiles(class_lists)
    for layout in layouts:
        inputs.add(layout.files(), follow_links=False)
    return inputs


def check_layouts(layouts, data_root, shot, desc, workers=8):
    """(pairs checked, problems, notes) of cross-domain layouts: their own problems (names,
    missing files, classes with fewer than shot + 1 images), then every pair's."""
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
                           desc=desc, unit='pair')
    return len(pairs), problems + [problem for found in results for problem in found], notes


def sources_from_args(args):
    """Sources: data_set, data_root, lists [(list file, size_problem or None)] (for the
    cross-domain layouts: class lists), list_dir (where the lists' scans are cached), config
    (None without --config) and shot. With --config, its val_list's images are checked against
    the validation resize of its val_size, as training and testing check them."""
    if args.config:
        from util.config import load_config
        from util.transform import val_transform
        cfg = load_config(args.config, args.opts)
        lists = [(cfg.train_list, None), (cfg.val_list, val_transform(cfg.val_size).size_problem)]
        return Sources(cfg.data_set, cfg.data_root, [(path, check) for path, check in lists if path],
                       cfg.list_dir, args.config, cfg.shot)
    if not (args.data_set and args.data_root and (args.list or args.data_set in CROSS_DOMAIN)):
        raise ValueError('give --config, or --data-set, --data-root and at least one --list')
    return Sources(args.data_set, args.data_root, [(path, None) for path in args.list or []], None,
                   None, args.shot)


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
    parser.add_argument('--out', help='report file listing every problem (default: none; the '
                        'first 20 are printed)')
    parser.add_argument('--workers', type=positive_int, default=min(8, os.cpu_count() or 1))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    data_set, data_root, lists, list_dir, config, shot = sources_from_args(args)
    if not os.path.isdir(data_root):
        raise FileNotFoundError(f'data root not found: {data_root} (docs/data.md: how each data set '
                                'is downloaded and prepared)')
    out = args.out
    inputs = InputFiles([config] if config else [])
    if data_set in CROSS_DOMAIN:
        layouts = read_layouts(data_set, data_root, [path for path, _ in lists])
        inputs.add(layout_inputs(layouts, [path for path, _ in lists]))
        if out:
            check_outputs([out], inputs, overwrite=True)      # its report, never a file it checks
        total, problems, notes = check_layouts(layouts, data_root, shot, data_set, args.workers)
    else:
        listed = [(data_list, read_list(data_list), size_problem)
                  for data_list, size_problem in lists]
        for data_list, pairs, _ in listed:
            inputs.add(list_inputs(data_set, data_root, data_list, pairs, list_dir))
        if out:
            check_outputs([out], inputs, overwrite=True)      # its report, never a file it checks
        problems = [problem for data_list, pairs, size_problem in listed
                    for problem in check_list(data_set, data_root, pairs,
                                              os.path.basename(data_list), args.workers,
                                              size_problem)]
        total = sum(len(pairs) for _, pairs, _ in listed)
        missing = sum(kind == 'missing' for kind, _, _ in problems)
        notes = [f'no listed file is below {data_root}: is it the folder the lists\' paths start '
                 f'from (e.g. {listed[0][1][0][0]})?'] if total and missing == 2 * total else []
    if out:
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
        print(f'  ... {len(problems) - 20} more' + ('' if out else ': --out FILE lists every one'))
    if out:
        print(f'report: {out}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(run_main(main))
