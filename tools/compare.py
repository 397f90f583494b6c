"""Is B better than A, or is the difference noise? Two test runs compared episode by episode.

    python tools/compare.py A.json B.json [--resamples 2000] [--seed 0]

A and B: test reports written with an episode manifest (test_sccan.py --save-episodes), or the
manifests themselves; a report's manifest must be the file it wrote (its SHA-256, or for older
reports the digest of its episodes, is checked), and A and B must be two files. When both scored
the same episodes (same seeds, queries, supports and classes, in the same order), a paired
bootstrap of B − A (each resample draws the same episodes for both, within each class);
otherwise it says why and falls back to an unpaired bootstrap (A and B resampled independently:
wider). Prints both runs' scores, B − A per class and for mIoU, FB-IoU and pIoU with 95 %
intervals, and last one line: whether the mIoU difference is larger than the noise (its interval
excludes 0), within it, or no difference (an interval of zeros at the 0.1 points shown).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util.cli import ArgumentParser, non_negative_int, positive_int, run_main  # noqa: E402
from util.evaluation.manifest import FORMAT, file_identity, read_manifest  # noqa: E402
from util.evaluation.metrics import SCORES  # noqa: E402
from util.evaluation.uncertainty import (LEVEL, RESAMPLES, difference,  # noqa: E402
                                         format_intervals, mean_over_seeds, scores, seed_resamples,
                                         summary)
from util.files.inputs import read_text  # noqa: E402
from util.folds import has_folds  # noqa: E402


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('a', metavar='A.json', help='the baseline: a test report with its manifest, '
                   'or a manifest')
    p.add_argument('b', metavar='B.json', help='the other run, scored against A')
    p.add_argument('--resamples', type=positive_int, default=RESAMPLES,
                   help=f'bootstrap resamples (default {RESAMPLES})')
    p.add_argument('--seed', type=non_negative_int, default=0, help='bootstrap seed (default 0)')
    return p.parse_args(argv)


def load_manifest(path):
    """(manifest, its per-seed counts) of a run: `path` itself, or the manifest its test
    report names; a manifest whose episodes were never scored is refused."""
    text = read_text(path, 'report or manifest')
    first = text.split('\n', 1)[0]
    try:
        header = json.loads(first)
    except ValueError:
        header = None
    if isinstance(header, dict) and header.get('format') == FORMAT:
        manifest = read_manifest(path)
    else:
        try:
            report = json.loads(text)
        except ValueError as e:
            raise ValueError(f'{path}: neither a test report (JSON) nor an episode manifest '
                             f'(JSON Lines) ({e})') from None
        named = report.get('manifest') if isinstance(report, dict) else None
        if not isinstance(named, dict) or not named.get('path'):
            raise ValueError(f'{path}: a report without an episode manifest; test with '
                             'test_sccan.py --save-episodes FILE to compare episode by episode')
        manifest_path = os.path.join(os.path.dirname(os.path.abspath(path)), named['path'])
        manifest = read_manifest(manifest_path)
        # the file's own digest covers the scores; older reports kept the episodes' only
        if 'sha256' in named:
            if file_identity(manifest_path)['sha256'] != named['sha256']:
                raise ValueError(f'{path}: its manifest {manifest_path} is not the file the '
                                 'report wrote (its SHA-256 differs: edited or replaced since); '
                                 'test again with --save-episodes')
        elif manifest.digest() != named.get('digest'):
            raise ValueError(f'{path}: its manifest {manifest_path} holds other episodes than '
                             'the report scored (digest differs)')
    return manifest, manifest.counts()


def why_not_paired(a, b):
    """None when a and b hold the same episodes in the same order, else the first difference."""
    if a.seeds() != b.seeds():
        return f'seeds {a.seeds()} and {b.seeds()}'
    if len(a.records) != len(b.records):
        return f'{len(a.records)} and {len(b.records)} episodes'
    for n, (x, y) in enumerate(zip(a.records, b.records)):
        if x.identity() != y.identity():
            return (f'episode {x.index} of seed {x.seed} (manifest line {n + 2}) shows other '
                    'images or another class')
    return None


def describe(name, manifest, point, resampled, level):
    """One line: the run, its scores (the mean over seeds) and their intervals."""
    h = manifest.header
    pooled = summary(mean_over_seeds(resampled), level)
    label = (h.get('checkpoint') or {}).get('path') or manifest.path
    fold = f' fold {h["split"]}' if has_folds(h['data_set']) else ''
    return (f'{name}: {label} ({h["data_set"]}{fold}, {h["shot"]}-shot, seeds '
            f'{manifest.seeds()}, {len(manifest.records)} episodes): '
            + format_intervals(point, pooled, ', '))


def points(fraction):
    """A fraction in points at the precision shown (0.1), without a negative zero."""
    return round(100 * fraction, 1) + 0.0


def signed(fraction):
    return f'{points(fraction):+.1f}'


def verdict(difference, interval, paired):
    lo, hi = interval
    how = 'paired: the same episodes' if paired else 'unpaired: different episodes'
    line = (f'B − A: mIoU {signed(difference)} points, 95 % interval {signed(lo)} … {signed(hi)} '
            f'({how}): ')
    if lo == hi == difference == 0:
        return line + 'no difference at all.'
    if points(lo) == points(hi) == 0:
        return line + 'no difference (the whole interval rounds to 0.0 points).'
    if lo > 0 or hi < 0:
        return line + 'larger than the noise.'
    return line + 'within the noise (the interval contains 0).'


def class_names(header):
    """How the lines name the classes: their names where the manifest has them, else ids."""
    return header.get('class_names') or [str(c) for c in header['classes']]


def main(argv=None):
    args = parse_args(argv)
    if os.path.exists(args.a) and os.path.exists(args.b) and os.path.samefile(args.a, args.b):
        raise ValueError(f'{args.a} and {args.b} are the same file: compare two runs')
    (a, counts_a), (b, counts_b) = load_manifest(args.a), load_manifest(args.b)
    if a.header['classes'] != b.header['classes'] or a.header['data_set'] != b.header['data_set']:
        raise ValueError(f'{args.a} and {args.b} score different classes ({a.header["data_set"]} '
                         f'{a.header["classes"]}, {b.header["data_set"]} {b.header["classes"]}): '
                         'nothing to compare')
    # each run's own resamples, as its report draws them; on the same episodes B's draws are
    # A's episodes, which pairs them
    resampled_a, resampled_b = (seed_resamples(counts, args.resamples, args.seed)
                                for counts in (counts_a, counts_b))
    reason = why_not_paired(a, b)
    if reason is None:
        resampled = difference(resampled_a, resampled_b)
    else:
        print(f'not the same episodes ({reason}): unpaired bootstrap, wider than a paired one')
        resampled = difference(resampled_a, seed_resamples(counts_b, args.resamples, args.seed,
                                                           side=(1,)))
    point_a, point_b = (mean_over_seeds([scores(c) for c in counts]) for counts in (counts_a, counts_b))
    change = {key: point_b[key] - point_a[key] for key in point_a}
    intervals = summary(resampled, LEVEL)
    for name, manifest, point, own in (('A', a, point_a, resampled_a), ('B', b, point_b, resampled_b)):
        print(describe(name, manifest, point, own, LEVEL))
    print('B − A per class (IoU points, 95 % interval):')
    for c, d, (lo, hi) in zip(class_names(a.header), change['class_IoU'],
                              intervals['class_IoU']):
        print(f'  class {c}: {signed(d)} ({signed(lo)} … {signed(hi)})')
    for m in ('FB-IoU', 'pIoU'):
        lo, hi = intervals[m]
        print(f'B − A: {m} {signed(change[m].item())} points ({signed(lo)} … {signed(hi)})')
    line = verdict(change['mIoU'].item(), intervals['mIoU'], reason is None)
    print(line)
    return {'paired': reason is None, 'why_not_paired': reason,
            'difference': {m: change[m].item() for m in SCORES},
            'class_difference': change['class_IoU'].tolist(),
            'interval': intervals, 'resamples': args.resamples, 'seed': args.seed,
            'verdict': line}


if __name__ == '__main__':
    run_main(main)
