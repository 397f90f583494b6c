"""How the interval of a score narrows with the number of episodes, from one scored manifest.

    python test_sccan.py --config ... --seeds 1 2 3 4 5 6 7 8 --episodes 1000 --save-episodes run.jsonl
    python tools/interval_widths.py run.jsonl --episodes 62 250 1000

A seed's first N episodes are the episodes a run of N would have drawn (a shorter run is a prefix
of a longer one), so one manifest answers for every N up to its own. For each N: the mIoU (mean
over seeds), the 95 % bootstrap interval's width for one seed (their mean) and for the mean over
the seeds, and the standard deviation of the seeds' mIoU, the spread the interval estimates
(a 95 % interval is about 4 standard deviations wide).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, non_negative_int, positive_int, run_main  # noqa: E402
from util.evaluation.manifest import read_manifest  # noqa: E402
from util.evaluation.uncertainty import NO_INTERVAL, RESAMPLES, scores, uncertainty  # noqa: E402


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('manifest', help='a scored episode manifest (test_sccan.py --save-episodes)')
    p.add_argument('--episodes', type=positive_int, nargs='+',
                   help="episodes per seed to look at (default: the manifest's / 16, / 4, / 1)")
    p.add_argument('--resamples', type=positive_int, default=RESAMPLES)
    p.add_argument('--seed', type=non_negative_int, default=0, help='bootstrap seed')
    return p.parse_args(argv)


def widths(per_seed, n, resamples, seed):
    """{'episodes', 'mIoU', 'seed_width', 'pooled_width', 'seed_std'} of the first n episodes of
    each seed (fractions)."""
    first = [c.first(n) for c in per_seed]
    result = uncertainty(first, resamples, seed)
    mious = np.array([scores(c)['mIoU'] for c in first])
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    seed_widths = [width(s['mIoU']) for s in result['seeds'] if s['estimable']]
    return {'episodes': n, 'mIoU': float(mious.mean()),
            'seed_width': float(np.mean(seed_widths)) if seed_widths else None,
            'pooled_width': width(result['pooled']['mIoU']) if result['pooled']['estimable'] else None,
            'seed_std': float(mious.std())}


def main(argv=None):
    args = parse_args(argv)
    manifest = read_manifest(args.manifest)
    per_seed = manifest.counts()
    most = min(len(c) for c in per_seed)
    sizes = args.episodes or sorted({max(1, most // 16), max(1, most // 4), most})
    too_many = [n for n in sizes if n > most]
    if too_many:
        raise ValueError(f'{args.manifest}: {most} episodes per seed, fewer than {too_many[0]}')
    rows = [widths(per_seed, n, args.resamples, args.seed) for n in sizes]
    print(f'{args.manifest}: {len(per_seed)} seeds; mIoU (%), 95 % bootstrap interval widths '
          f'(points; {args.resamples} resamples) and the std of the seeds\' mIoU')
    print('| episodes per seed | mIoU | width, one seed | width, mean of the seeds | std over seeds |')
    print('| --- | --- | --- | --- | --- |')
    for r in rows:
        print(f"| {r['episodes']} | {100 * r['mIoU']:.1f} | {points(r['seed_width'])} | "
              f"{points(r['pooled_width'])} | {100 * r['seed_std']:.2f} |")
    if any(r['pooled_width'] is None for r in rows):
        print(f'n/a: {NO_INTERVAL}')
    return rows


def points(width):
    """A width (fraction) in points, or n/a where no interval could be estimated."""
    return 'n/a' if width is None else f'{100 * width:.2f}'



if __name__ == '__main__':
    run_main(main)
