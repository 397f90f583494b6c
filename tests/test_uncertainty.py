"""Bootstrap intervals of util.evaluation.uncertainty: the scores of util.evaluation.metrics, exact
enumeration of every resample on a tiny run, the interval around its estimate and its 1/√N
narrowing."""
import itertools

import numpy as np
import pytest
import torch

from helpers import synthetic_counts
from util.evaluation.metrics import IoUMeter, intersection_union
from util.evaluation.uncertainty import (NO_INTERVAL, RunCounts, bootstrap, combined_half_width,
                                         format_intervals, half_width, percentile_interval,
                                         plus_minus, scores, uncertainty)


def test_scores_are_those_of_the_meter():
    g = torch.Generator().manual_seed(0)
    pred = (torch.rand(12, 9, 11, generator=g) > 0.5).long()
    target = (torch.rand(12, 9, 11, generator=g) > 0.4).long()
    target[:, 0] = 255
    classes = torch.tensor([0, 2, 2, 1, 0, 0, 2, 1, 1, 0, 2, 0])
    meter = IoUMeter(num_classes=4)             # class 3 without episodes scores 0
    meter.update(pred, target, classes)
    inter, union = intersection_union(pred, target)
    ours = scores(RunCounts.of(classes, inter, union, 4))
    expected = meter.summary()
    for name in ('mIoU', 'FB-IoU', 'pIoU'):
        assert ours[name].item() == expected[name]
    assert ours['class_IoU'].tolist() == expected['class_IoU']


def exact_distribution(counts):
    """mIoU and FB-IoU of every stratified resample, each equally likely, computed by plain
    loops over all ways of drawing each class's episodes with replacement."""
    members = [np.flatnonzero(counts.class_index == c) for c in range(counts.num_classes)]
    per_class = [list(itertools.product(m, repeat=len(m))) for m in members]
    mious, fbious = [], []
    for choice in itertools.product(*per_class):
        class_iou = []
        inter, union = [0, 0], [0, 0]
        for drawn in choice:
            fg_i = sum(int(counts.intersection[e, 1]) for e in drawn)
            fg_u = sum(int(counts.union[e, 1]) for e in drawn)
            class_iou.append(fg_i / (fg_u + 1e-10))
            for k in (0, 1):
                inter[k] += sum(int(counts.intersection[e, k]) for e in drawn)
                union[k] += sum(int(counts.union[e, k]) for e in drawn)
        mious.append(sum(class_iou) / len(class_iou))
        fbious.append((inter[0] / (union[0] + 1e-10) + inter[1] / (union[1] + 1e-10)) / 2)
    return np.array(mious), np.array(fbious)


def test_bootstrap_against_exact_enumeration():
    # 2 classes × 3 episodes: 3**3 × 3**3 = 729 equally likely resamples.
    counts = RunCounts.of([0, 1, 0, 1, 0, 1],
                              [[90, 10], [50, 30], [70, 40], [60, 5], [80, 25], [40, 60]],
                              [[100, 50], [70, 40], [95, 60], [90, 45], [100, 30], [60, 70]], 2)
    exact = dict(zip(('mIoU', 'FB-IoU'), exact_distribution(counts)))
    sampled = bootstrap(counts, resamples=40000, seed=1)
    for name, values in exact.items():
        lo, hi = percentile_interval(sampled[name])
        assert np.quantile(values, 0.02) <= lo <= np.quantile(values, 0.03), name
        assert np.quantile(values, 0.97) <= hi <= np.quantile(values, 0.98), name
        assert sampled[name].mean() == pytest.approx(values.mean(), abs=2e-3)
        # the whole distribution: Kolmogorov distance of the two CDFs on the exact atoms
        atoms = np.unique(values)
        exact_cdf = np.searchsorted(np.sort(values), atoms, side='right') / len(values)
        sampled_cdf = np.searchsorted(np.sort(sampled[name]), atoms, side='right') / len(sampled[name])
        assert np.abs(exact_cdf - sampled_cdf).max() < 0.02, name


def test_interval_contains_the_estimate_and_is_reproducible():
    counts = synthetic_counts(200)
    result = uncertainty([counts], resamples=500, seed=7)
    point = scores(counts)
    for name in ('mIoU', 'FB-IoU', 'pIoU'):
        lo, hi = result['seeds'][0][name]
        assert lo < point[name].item() < hi
    for c, (lo, hi) in enumerate(result['seeds'][0]['class_IoU']):
        assert lo < point['class_IoU'][c] < hi
    assert result['seeds'][0]['class_episodes'] == [200] * 5
    assert uncertainty([counts], resamples=500, seed=7) == result
    assert uncertainty([counts], resamples=500, seed=8) != result
    assert (result['method'], result['resamples'], result['seed'], result['level']) == (
        result['method'], 500, 7, 0.95) and 'within each class' in result['method']


def test_interval_narrows_as_one_over_sqrt_n():
    def width(per_class):
        lo, hi = uncertainty([synthetic_counts(per_class)], resamples=2000)['pooled']['mIoU']
        return hi - lo
    ratio = width(400) / width(100)
    assert 0.4 < ratio < 0.6, ratio         # 1/√4 = 0.5


def test_seeds_pooled_and_independent():
    a, b = synthetic_counts(100, seed=1), synthetic_counts(100, seed=2)
    alone = uncertainty([a], resamples=1000)
    both = uncertainty([a, b], resamples=1000)
    assert both['seeds'][0] == alone['seeds'][0]         # a seed's interval is its own
    # the mean of two seeds moves less than either: about 1/√2 of their width
    width = lambda r: r['mIoU'][1] - r['mIoU'][0]  # noqa: E731
    pooled = width(both['pooled'])
    assert pooled < min(width(s) for s in both['seeds'])
    assert 0.55 < pooled / np.mean([width(s) for s in both['seeds']]) < 0.85


def test_identical_episodes_give_a_zero_width_interval():
    counts = RunCounts.of([0, 0, 1, 1], [[5, 3]] * 4, [[8, 4]] * 4, 2)
    result = uncertainty([counts], resamples=100)
    lo, hi = result['pooled']['mIoU']
    assert lo == hi == pytest.approx(0.75)
    assert plus_minus(0.75, result['pooled']['mIoU']) == '75.0 ± 0.0'


def test_class_without_episodes_stays_zero():
    counts = RunCounts.of([0, 0, 0], [[1, 1], [2, 2], [3, 1]], [[2, 2], [3, 3], [4, 3]], 2)
    result = uncertainty([counts], resamples=200)
    assert result['seeds'][0]['class_IoU'][1] == [0.0, 0.0]
    assert result['seeds'][0]['class_episodes'] == [3, 0]


def test_plus_minus_is_the_half_width_in_percent():
    assert plus_minus(0.614, [0.605, 0.623]) == '61.4 ± 0.9'


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match=r'union has shape \(2,\), expected \(1, 2\) for 1 episodes'):
        RunCounts(np.array([0]), np.zeros((1, 2)), np.zeros(2), 1)
    with pytest.raises(ValueError, match='class indices must lie in 0..1'):
        RunCounts.of([2], [[0, 0]], [[0, 0]], 2)
    with pytest.raises(ValueError, match='resamples must be a positive integer, got 0'):
        uncertainty([RunCounts.of([0], [[0, 0]], [[1, 1]], 1)], resamples=0)


def test_half_widths_of_a_mean_of_independent_runs():
    assert half_width([0.60, 0.64]) == pytest.approx(0.02)
    assert combined_half_width([0.03, 0.04]) == pytest.approx(0.05 / 2)     # √(9 + 16) / 2
    assert combined_half_width([0.01] * 4) == pytest.approx(0.01 / 2)       # 4 alike: half as wide


def test_one_episode_per_class_has_no_interval_not_a_zero_one():
    """Every resample of one episode per class is the run itself: [score, score] is no estimate
    (it read 'FB-IoU 41.9 ± 0.0'). Said so in the report's JSON and wherever it is printed."""
    one_each = synthetic_counts(1)
    result = uncertainty([one_each, synthetic_counts(2)], resamples=50)
    assert [s['estimable'] for s in result['seeds']] == [False, True]
    assert result['pooled']['estimable'] is True
    point = scores(one_each)
    line = format_intervals(point, result['seeds'][0])
    assert line == (f"mIoU {100 * point['mIoU']:.1f}  FB-IoU {100 * point['FB-IoU']:.1f}  pIoU "
                    f"{100 * point['pIoU']:.1f} ({NO_INTERVAL})") and '±' not in line
    assert NO_INTERVAL.startswith('no interval: every class has a single episode')
    assert uncertainty([one_each], resamples=50)['pooled']['estimable'] is False
    assert '±' in format_intervals(scores(synthetic_counts(2)), result['seeds'][1])
