"""tools/interval_widths.py: interval widths of the first N episodes of each seed of a manifest."""

import numpy as np
import pytest

from helpers import assert_one_error, run_cli, synthetic_counts, write_seeds
from util.evaluation.uncertainty import RunCounts, scores

from tools import interval_widths  # noqa: E402


def shuffled(counts, seed):
    """The episodes of `counts` in a random order (a run draws its classes in no order)."""
    order = np.random.default_rng(seed).permutation(len(counts))
    return RunCounts(counts.class_index[order], counts.intersection[order], counts.union[order],
                     counts.num_classes)


def test_widths_of_prefixes(tmp_path, capsys):
    per_seed = {s: shuffled(synthetic_counts(80, seed=0), s) for s in range(4)}   # 400 a seed
    path = write_seeds(tmp_path / 'm.jsonl', per_seed)
    rows = interval_widths.main([path, '--resamples', '1000'])
    assert [r['episodes'] for r in rows] == [25, 100, 400]                       # / 16, / 4, / 1
    small, _, full = rows
    assert 0.4 < full['seed_width'] / rows[1]['seed_width'] < 0.6                # 1/√4
    assert full['pooled_width'] < full['seed_width']                             # 4 seeds: ~ 1/2
    first = [scores(c.first(25))['mIoU'] for c in per_seed.values()]
    assert (small['mIoU'] == pytest.approx(np.mean(first))
            and small['seed_std'] == pytest.approx(np.std(first)))
    # all seeds hold the same 400 episodes in other orders: the full runs score alike
    assert full['seed_std'] == pytest.approx(0, abs=1e-12)
    assert '| 400 |' in capsys.readouterr().out


def test_more_episodes_than_the_manifest_holds(tmp_path, capsys):
    path = write_seeds(tmp_path / 'm.jsonl', {1: synthetic_counts(4)})
    status, _, err = run_cli(interval_widths.main, [path, '--episodes', '10', '30'], capsys)
    assert_one_error(status, err, f'{path}: 20 episodes per seed, fewer than 30')


def one_class_after_another(counts):
    """The episodes of `counts` (classes in blocks) with the classes in turn: 0, 1, .., 0, 1, .."""
    order = np.arange(len(counts)).reshape(counts.num_classes, -1).T.ravel()
    return RunCounts(counts.class_index[order], counts.intersection[order], counts.union[order],
                     counts.num_classes)


def test_a_prefix_of_a_single_episode_per_class_has_no_width(tmp_path, capsys):
    per_seed = {s: one_class_after_another(synthetic_counts(2, seed=s)) for s in (1, 2)}
    assert list(per_seed[1].class_index) == [0, 1, 2, 3, 4] * 2
    path = write_seeds(tmp_path / 'm.jsonl', per_seed)
    one, two = interval_widths.main([path, '--episodes', '5', '10', '--resamples', '100'])
    assert one['seed_width'] is one['pooled_width'] is None and two['pooled_width'] > 0
    out = capsys.readouterr().out
    assert f"| 5 | {100 * one['mIoU']:.1f} | n/a | n/a |" in out
    assert 'n/a: no interval: every class has a single episode' in out
