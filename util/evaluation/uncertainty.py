"""How much a few-shot segmentation score can move: bootstrap intervals from per-episode counts.

The scores are ratios of sums (util.evaluation.metrics): mIoU averages, over the novel classes, Σ FG
intersection / Σ FG union of each class's episodes; FB-IoU and pIoU pool all episodes. A resample
therefore redraws episodes WITHIN each class (as many as the class had, with replacement) and
recomputes the sums, so every resample has the class balance of the run it comes from and scores
exactly as the run was scored. Percentile interval: the (1 − level)/2 and (1 + level)/2 quantiles
of the resampled scores (numpy's linear interpolation).

Several seeds: each seed is resampled on its own (its own random stream, so a seed's interval
does not depend on the others) and the pooled interval is that of the mean over seeds, the number
the report gives; resample r of the pooled score is the mean of the seeds' resamples r.

An interval needs some class with two episodes or more: with one episode per class every resample
is the run itself, and its interval [score, score] would read as certainty. Such intervals are
marked not estimable ('estimable': False) and printed as "no interval", not "± 0.0".

What the interval covers: which episodes (classes, queries, supports) were drawn, for a given
model and list of query images. Not covered: training noise (another training run), and the
dependence between episodes that share a query image (PASCAL's 1,000 episodes cycle through a
fold's few hundred images), which makes the interval somewhat too narrow.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Dict, List, Self, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from util.evaluation.metrics import SCORES, scores_from_sums

if TYPE_CHECKING:
    from util.evaluation.metrics import EpisodeCounts

METHOD = ('percentile bootstrap over episodes, resampled with replacement within each class '
          '(as many as the class had), scores recomputed from the per-class sums of intersection '
          'and union; several seeds: each resampled on its own, the pooled score is their mean')
RESAMPLES = 2000
LEVEL = 0.95
NO_INTERVAL = ('no interval: every class has a single episode, which a bootstrap within classes '
               'cannot resample')


@dataclasses.dataclass(frozen=True)
class RunCounts:
    """The pixel counts of one seed's episodes, as scored, and the number of classes they are
    scored over (the evaluation's util.evaluation.metrics.EpisodeCounts with it, as numpy arrays).

    class_index: (N,) int64, the position of each episode's class in the report's class list;
    intersection, union: (N, 2) int64, background and foreground; num_classes: the classes mIoU
    averages over (a class without episodes scores 0, as in util.evaluation.metrics).
    """
    class_index: np.ndarray
    intersection: np.ndarray
    union: np.ndarray
    num_classes: int

    def __post_init__(self):
        n = len(self.class_index)
        for name in ('intersection', 'union'):
            shape = np.shape(getattr(self, name))
            if shape != (n, 2):
                raise ValueError(f'{name} has shape {shape}, expected ({n}, 2) for {n} episodes')
        if n and not 0 <= int(np.min(self.class_index)) <= int(np.max(self.class_index)) < self.num_classes:
            raise ValueError(f'class indices must lie in 0..{self.num_classes - 1}')

    @classmethod
    def of(cls, class_index: npt.ArrayLike, intersection: npt.ArrayLike, union: npt.ArrayLike,
           num_classes: int) -> Self:
        """From lists or arrays, stored as int64 numpy arrays."""
        as_int = lambda x, shape: np.asarray(x, dtype=np.int64).reshape(shape)  # noqa: E731
        return cls(as_int(class_index, (-1,)), as_int(intersection, (-1, 2)),
                   as_int(union, (-1, 2)), int(num_classes))

    @classmethod
    def of_evaluation(cls, counts: EpisodeCounts, num_classes: int) -> Self:
        """From the evaluation's util.evaluation.metrics.EpisodeCounts (torch tensors)."""
        return cls.of(counts.class_index.numpy(), counts.intersection.numpy(),
                      counts.union.numpy(), num_classes)

    def __len__(self):
        return len(self.class_index)

    def first(self, n: int) -> 'RunCounts':
        """The counts of the first n episodes (what a run of n episodes of the seed scored)."""
        return RunCounts(self.class_index[:n], self.intersection[:n], self.union[:n],
                         self.num_classes)

    def class_episodes(self) -> List[int]:
        return np.bincount(self.class_index, minlength=self.num_classes).tolist()


def scores(counts: RunCounts) -> Dict[str, np.ndarray]:
    """The scores of all of counts' episodes, as util.evaluation.metrics.IoUMeter computes them:
    {'mIoU': (), 'FB-IoU': (), 'pIoU': (), 'class_IoU': C}."""
    everything = resampled_scores(counts, np.arange(len(counts))[None])
    return {key: value[0] for key, value in everything.items()}


def stratified_resamples(class_index: np.ndarray, num_classes: int, resamples: int,
                         rng: np.random.Generator) -> np.ndarray:
    """R×N episode positions: in each row, every class's episodes redrawn with replacement from
    that class's own (columns are grouped by class, the same class in a column in every row)."""
    columns = [np.flatnonzero(class_index == c) for c in range(num_classes)]
    draws = [members[rng.integers(0, len(members), (resamples, len(members)))]
             for members in columns if len(members)]
    return np.concatenate(draws, axis=1) if draws else np.zeros((resamples, 0), np.int64)


def resampled_scores(counts: RunCounts, positions: np.ndarray) -> Dict[str, np.ndarray]:
    """Scores of R resamples given as R×N episode positions (rows of stratified_resamples, or
    any selection of episodes); returns {'mIoU': R, ..., 'class_IoU': R×C}."""
    rows = positions.shape[0]
    # Per-row class sums by one bincount over (row, class) cells; float64 holds pixel sums
    # exactly (below 2**53).
    cells = (np.arange(rows)[:, None] * counts.num_classes + counts.class_index[positions]).ravel()

    def class_sums(values):
        return np.bincount(cells, weights=values[positions].ravel(),
                           minlength=rows * counts.num_classes).reshape(rows, counts.num_classes)

    def sums(values, foreground):   # R×2 BG/FG sums; the FG one is the sum of the class sums
        return np.stack([values[:, 0][positions].sum(1), foreground.sum(1)], axis=1)

    class_inter = class_sums(counts.intersection[:, 1])
    class_union = class_sums(counts.union[:, 1])
    return scores_from_sums(class_inter, class_union, sums(counts.intersection, class_inter),
                            sums(counts.union, class_union))


def seed_rng(seed: int, *stream: int) -> np.random.Generator:
    """The generator of one stream (seed k of a report: (k,); side B of an unpaired comparison:
    (k, 1)) under the bootstrap seed: streams are independent and each reproducible alone."""
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def resample_positions(counts: RunCounts, resamples: int, seed: int, *stream: int) -> np.ndarray:
    """R×N stratified resample positions of one seed's episodes, from the stream's generator."""
    return stratified_resamples(counts.class_index, counts.num_classes, resamples,
                                seed_rng(seed, *stream))


def bootstrap(counts: RunCounts, resamples: int = RESAMPLES, seed: int = 0,
              stream: Tuple[int, ...] = (0,)) -> Dict[str, np.ndarray]:
    """The scores of `resamples` stratified resamples of one seed's episodes."""
    return resampled_scores(counts, resample_positions(counts, resamples, seed, *stream))


def seed_resamples(per_seed: Sequence[RunCounts], resamples: int = RESAMPLES, seed: int = 0,
                   side: Tuple[int, ...] = ()) -> List[Dict[str, np.ndarray]]:
    """Each seed's resampled scores, seed k drawn from stream (k, *side): a report's own
    intervals with side (), side B of an unpaired comparison with (1,). Two runs of the same
    episodes resampled with the same side draw the same episodes (the positions depend only on
    the classes of the episodes and the stream)."""
    return [bootstrap(counts, resamples, seed, (k, *side)) for k, counts in enumerate(per_seed)]


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """(lo, hi) over the first axis: the (1 − level)/2 and (1 + level)/2 quantiles; for R×C
    samples a 2×C array."""
    tail = 100 * (1 - level) / 2
    return np.percentile(samples, [tail, 100 - tail], axis=0)


def summary(resampled: Dict[str, np.ndarray], level: float = LEVEL) -> dict:
    """JSON-ready intervals: {'mIoU': [lo, hi], 'FB-IoU': ..., 'pIoU': ...,
    'class_IoU': [[lo, hi] per class]}."""
    out = {m: percentile_interval(resampled[m], level).tolist() for m in SCORES}
    out['class_IoU'] = percentile_interval(resampled['class_IoU'], level).T.tolist()
    return out


def mean_over_seeds(per_seed: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Resample r of the pooled score: the mean over seeds of each seed's resample r."""
    return {key: np.mean([r[key] for r in per_seed], axis=0) for key in per_seed[0]}


def uncertainty(per_seed: Sequence[RunCounts], resamples: int = RESAMPLES, seed: int = 0,
                level: float = LEVEL) -> dict:
    """The intervals of a report: per seed (in order) and pooled (of the mean over seeds), with
    the method, the number of resamples, the bootstrap seed and the episodes per class.

    Args:
        per_seed: one RunCounts per episode seed, all with the same classes.
        resamples: bootstrap resamples R; seed: the bootstrap's own seed (seed k of the report
            draws from stream k).
    Returns:
        {'method', 'resamples', 'seed', 'level', 'seeds': [intervals + 'class_episodes'],
         'pooled': intervals}.
    """
    if not per_seed:
        raise ValueError('no episodes to resample')
    if resamples < 1:
        raise ValueError(f'resamples must be a positive integer, got {resamples}')
    resampled = seed_resamples(per_seed, resamples, seed)
    seeds = [dict(summary(r, level), class_episodes=counts.class_episodes(),
                  estimable=estimable(counts.class_episodes()))
             for r, counts in zip(resampled, per_seed)]
    return {'method': METHOD, 'resamples': resamples, 'seed': seed, 'level': level,
            'seeds': seeds, 'pooled': dict(summary(mean_over_seeds(resampled), level),
                                           estimable=any(s['estimable'] for s in seeds))}


def estimable(class_episodes: Sequence[int]) -> bool:
    """Whether a bootstrap within classes has anything to resample: some class has two episodes
    or more (class_episodes: the episodes of each class)."""
    return max(class_episodes, default=0) >= 2


def difference(resampled_a: Sequence[Dict[str, np.ndarray]],
               resampled_b: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Resampled B − A of the mean over seeds, from each seed's resamples (seed_resamples).
    Paired when A and B scored the same episodes and were resampled with the same side: each
    resample then draws the same episodes for both, so what the two share (which episodes are
    easy) cancels. Unpaired (different episodes): B resampled with side (1,), independent of A,
    which gives a wider interval."""
    side_a, side_b = mean_over_seeds(resampled_a), mean_over_seeds(resampled_b)
    return {key: side_b[key] - side_a[key] for key in side_a}


def half_width(interval: Sequence[float]) -> float:
    """Half the width of an interval (lo, hi): the ± printed beside a score (the interval need
    not be symmetric; the JSON keeps its ends)."""
    lo, hi = interval
    return (hi - lo) / 2


def combined_half_width(half_widths: Sequence[float]) -> float:
    """The ± of the mean of n independent scores (e.g. the four folds) given theirs:
    √(Σ ±²) / n, the normal approximation."""
    return float(np.sqrt(np.sum(np.square(half_widths)))) / len(half_widths)


def plus_minus(value: float, interval: Sequence[float]) -> str:
    """'61.4 ± 0.9': a fraction and its interval in percent, ± the interval's half-width."""
    return f'{100 * value:.1f} ± {100 * half_width(interval):.1f}'


def format_intervals(point: dict, intervals: dict, separator: str = '  ') -> str:
    """'mIoU 61.4 ± 0.9  FB-IoU 75.3 ± 0.6  pIoU 70.2 ± 1.1' of point scores (fractions) and
    their intervals; 'mIoU 61.4  FB-IoU ... (no interval: ...)' for intervals marked not
    estimable."""
    if not intervals.get('estimable', True):
        return separator.join(f'{m} {100 * float(point[m]):.1f}' for m in SCORES) + f' ({NO_INTERVAL})'
    return separator.join(f'{m} {plus_minus(float(point[m]), intervals[m])}' for m in SCORES)
