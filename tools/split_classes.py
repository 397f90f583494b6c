"""Split the classes of one's own data in the FSS-1000 layout (one folder per class of <name>.jpg
images and <name>.png masks) into training and test classes, for data_set: folder:

    python tools/split_classes.py --root ../data/my_classes --test 0.25 --seed 0 --out lists/mine

writes <out>/train_classes.txt and <out>/test_classes.txt (one class folder per line; use them as
train_list and val_list). --test is a fraction of the classes (0 < f < 1) or a count (>= 1). The
classes are the sub-folders holding at least one .jpg; the same root, --test and --seed give the
same split. Existing files are replaced only with --overwrite.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, non_negative_int, positive_float, run_main  # noqa: E402
from util.datasets.patnet import listing  # noqa: E402
from util.files.checks import check_outputs  # noqa: E402
from util.files.writer import write_atomic  # noqa: E402

NAMES = ('train_classes.txt', 'test_classes.txt')


def tree_classes(root):
    """Sorted class folders of `root`: sub-folders with at least one image PATNet would list."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f'data root not found: {root}')
    return sorted(n for n in os.listdir(root)
                  if os.path.isdir(os.path.join(root, n)) and listing(os.path.join(root, n), 'jpg'))


def split(classes, test, seed):
    """(train, test) class lists, both sorted: `test` classes (a count, or a fraction of them
    rounded, at least one) drawn with NumPy's generator seeded by `seed`."""
    count = test if test >= 1 else max(1, round(test * len(classes)))
    if count != int(count) or not count < len(classes):
        raise ValueError(f'--test {test}: expected a fraction in (0, 1) or a whole number of '
                         f'classes below {len(classes)} (the classes found)')
    chosen = set(np.random.default_rng(seed).choice(classes, int(count), replace=False).tolist())
    return sorted(set(classes) - chosen), sorted(chosen)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', required=True, help='the data root: one folder per class')
    p.add_argument('--test', type=positive_float, required=True,
                   help='test classes: a fraction (0 < f < 1) or a count')
    p.add_argument('--seed', type=non_negative_int, default=0)
    p.add_argument('--out', required=True, help='folder for train_classes.txt, test_classes.txt')
    p.add_argument('--overwrite', action='store_true', help='replace existing lists')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    outputs = [os.path.join(args.out, name) for name in NAMES]
    check_outputs(outputs, overwrite=args.overwrite)
    classes = tree_classes(args.root)
    if len(classes) < 2:
        raise ValueError(f'{args.root}: {len(classes)} class folder(s) with .jpg images; a split '
                         'needs at least 2')
    lists = split(classes, args.test, args.seed)
    for path, names in zip(outputs, lists):
        write_atomic(path, ''.join(f'{name}\n' for name in names))
        print(f'{path}: {len(names)} classes')
    return lists


if __name__ == '__main__':
    run_main(main)
