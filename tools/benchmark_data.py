"""Episodes per second of one data loading process (= one DataLoader worker).

By default on the synthetic benchmark (util/datasets/synthetic.py, PASCAL format) resized to the size of
typical VOC images (375×500 JPEGs);
or on a real list with --data-set/--data-root/--list. Measures training episodes (augmentation
+ 473 crop) for 1 and 5 shots and validation episodes (resize to 473).

    python tools/benchmark_data.py [--episodes 200] [--size 473]
"""
import argparse
import os
import random
import sys
import tempfile
import time

import cv2
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from util import transform as T  # noqa: E402
from util.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from util.datasets.pascal_coco import EpisodeDataset  # noqa: E402
from util.datasets.synthetic import write_benchmark  # noqa: E402


def episodes_per_second(dataset, episodes):
    random.seed(0)
    dataset[0]                                   # warm up (file cache, OpenCV threads)
    start = time.perf_counter()
    for i in range(episodes):
        dataset[random.randrange(len(dataset))]
    return episodes / (time.perf_counter() - start)


def generated_pascal(folder):
    """(data_root, train_list, val_list) of a small synthetic benchmark at VOC's image size."""
    lists = write_benchmark(folder, n_train=300, n_val=100, size=(375, 500))
    return folder, lists['train'], lists['val']


def main(argv=None):
    parser = ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--episodes', type=positive_int, default=200, help='episodes per measurement')
    parser.add_argument('--size', type=positive_int, default=473, help='train crop / val size')
    parser.add_argument('--data-set', default='pascal', choices=('pascal', 'coco'))
    parser.add_argument('--data-root', help='real data instead of generated (with --list)')
    parser.add_argument('--list', help='list file for train-mode and val-mode episodes')
    parser.add_argument('--split', type=int, default=0, choices=(0, 1, 2, 3))
    parser.add_argument('--threads', type=positive_int, default=1,
                        help='OpenCV/torch threads (DataLoader workers run with 1)')
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_root:
            root, train_list, val_list = args.data_root, args.list, args.list
            cache = None                                  # the repo's lists/
        else:
            root, train_list, val_list = generated_pascal(tmp)
            cache = os.path.join(tmp, 'lists')
        cases = [('train', 1, train_list, T.train_transform(args.size, args.size)),
                 ('train', 5, train_list, T.train_transform(args.size, args.size)),
                 ('val', 1, val_list, T.val_transform(args.size)),
                 ('val', 5, val_list, T.val_transform(args.size))]
        print(f'one process, {args.threads} thread(s), {args.episodes} episodes each:')
        for mode, shot, data_list, transform in cases:
            ds = EpisodeDataset(args.data_set, root, data_list, args.split, shot, mode, transform,
                                list_cache_dir=cache)
            rate = episodes_per_second(ds, args.episodes)
            print(f'  {mode:5s} {shot}-shot at {args.size}: {rate:6.1f} episodes/s '
                  f'({rate * (shot + 1):6.1f} images/s)')


def limit_threads(n):
    cv2.setNumThreads(n)
    torch.set_num_threads(n)


if __name__ == '__main__':
    run_main(main)
