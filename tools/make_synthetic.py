"""Write the synthetic few-shot benchmark (PASCAL-5i layout) to disk.

    python tools/make_synthetic.py                     # make demo's benchmark in data/synthetic
    python tools/make_synthetic.py --root data/syn2 --seed 1 --train 2000 --val 500
    python tools/make_synthetic.py --processes 16     # the same files, drawn by 16 processes

See util/datasets/synthetic.py for what the images hold. The same seed writes the same files. A
--root holding another benchmark (other seed or counts) or other files is refused: every
checkpoint, report and manifest made from a benchmark points at its images. --overwrite replaces
the other benchmark (its images are deleted, none is left unlisted) or writes beside the files.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, non_negative_int, positive_int, run_main  # noqa: E402
from util.datasets.synthetic import (TRAIN_IMAGES, VAL_IMAGES, is_generated,  # noqa: E402
                                     write_benchmark)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='data/synthetic', help='output folder (created; a folder '
                   'holding the same benchmark is left as it is)')
    p.add_argument('--seed', type=non_negative_int, default=0)
    p.add_argument('--train', type=positive_int, default=TRAIN_IMAGES,
                   help=f'images in the training list (default {TRAIN_IMAGES}, as make demo)')
    p.add_argument('--val', type=positive_int, default=VAL_IMAGES,
                   help=f'images in the test list (default {VAL_IMAGES}, as make demo)')
    p.add_argument('--processes', type=positive_int, default=1,
                   help='draw the images in this many processes (the same files)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace another benchmark in --root (its images go), or write beside '
                        'files that are not a benchmark')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    there = is_generated(args.root, args.seed, args.train, args.val)
    lists = write_benchmark(args.root, args.seed, args.train, args.val, processes=args.processes,
                            overwrite=args.overwrite)
    done = ('holds this benchmark already' if there else
            f'written in {time.time() - start:.1f}s with {args.processes} process(es): '
            f'{args.train} + {args.val} images')
    print(f'{args.root} {done} (lists: {lists["train"]}, {lists["val"]})')
    return lists


if __name__ == '__main__':
    run_main(main)
