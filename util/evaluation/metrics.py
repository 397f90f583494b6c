"""Few-shot segmentation metrics (the authors' test_sccan.py, validate), from per-episode
background/foreground pixel counts.

- mIoU (the headline): for each novel class, Σ FG intersection / Σ FG union over the episodes of
  that class; mean over the novel classes (a class without episodes counts 0, as the authors').
- FB-IoU: mean over {BG, FG} of Σ intersection / Σ union over all episodes.
- pIoU: Σ FG intersection / Σ FG union over all episodes pooled.

Counts are int64 pixel sums: the per-episode counts of several processes, gathered
(EpisodeCounts.gathered), give exactly the numbers one process would get.
"""
import dataclasses
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch

from util.distributed import all_gather_rows
from util.files.image_io import IGNORE_LABEL

EPS = 1e-10     # the authors' guard: an empty union scores 0


def intersection_union(pred: torch.Tensor, target: torch.Tensor,
                       ignore_index: int = IGNORE_LABEL) -> tuple[torch.Tensor, torch.Tensor]:
    """pred: B×H×W (0/1), target: B×H×W (0/1/ignore) → intersection, union: B×2 int64 (BG, FG).
    Pixels where the target is `ignore_index` count for neither."""
    if pred.shape != target.shape:
        raise ValueError(f'prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ')
    valid = target != ignore_index
    inter, union = [], []
    for c in (0, 1):
        p = (pred == c) & valid
        t = target == c
        inter.append((p & t).flatten(1).sum(1))
        union.append((p | t).flatten(1).sum(1))
    return torch.stack(inter, 1), torch.stack(union, 1)


class IoUMeter:
    """Accumulates episodes: per-class FG sums (for mIoU) and pooled BG/FG sums (FB-IoU, pIoU)."""

    def __init__(self, num_classes: int, device: torch.device | str = 'cpu'):
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.int64, device=device)  # noqa: E731
        self.class_inter = zeros(num_classes)
        self.class_union = zeros(num_classes)
        self.class_episodes = zeros(num_classes)
        self.inter = zeros(2)
        self.union = zeros(2)

    def update(self, pred: torch.Tensor, target: torch.Tensor,
               class_index: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """pred, target: B×H×W; class_index: B (position of the episode's class in the novel
        class list). Returns the episodes' intersection and union, B×2 (BG, FG)."""
        inter, union = intersection_union(pred, target)
        self.add(inter, union, class_index)
        return inter, union

    def add(self, inter: torch.Tensor, union: torch.Tensor,
            class_index: torch.Tensor | Sequence[int]) -> Self:
        """Counts of B episodes: inter, union B×2 (BG, FG); class_index B."""
        class_index = torch.as_tensor(class_index, device=self.inter.device).reshape(-1)
        self.inter += inter.sum(0)
        self.union += union.sum(0)
        self.class_inter.index_add_(0, class_index, inter[:, 1])
        self.class_union.index_add_(0, class_index, union[:, 1])
        self.class_episodes.index_add_(0, class_index, torch.ones_like(class_index))
        return self

    def summary(self) -> dict[str, Any]:
        sums = [t.cpu().numpy() for t in (self.class_inter, self.class_union, self.inter,
                                          self.union)]
        scores = scores_from_sums(*sums)
        return {
            'mIoU': scores['mIoU'].item(),
            'FB-IoU': scores['FB-IoU'].item(),
            'pIoU': scores['pIoU'].item(),
            'class_IoU': scores['class_IoU'].tolist(),
            'class_episodes': self.class_episodes.cpu().tolist(),
            'episodes': int(self.class_episodes.sum()),
        }


SCORES = ('mIoU', 'FB-IoU', 'pIoU')     # the scores of a run (class_IoU besides)


def scores_from_sums(class_inter: np.ndarray, class_union: np.ndarray, inter: np.ndarray,
                     union: np.ndarray) -> dict[str, np.ndarray]:
    """The scores from summed counts, for any leading shape S (one run: S = (); bootstrap
    resamples, util.evaluation.uncertainty: S = (R,)).

    Args:
        class_inter, class_union: S×C FG sums per class; inter, union: S×2 BG/FG sums over all
            episodes (arrays of integers).
    Returns:
        {'mIoU': S, 'FB-IoU': S, 'pIoU': S, 'class_IoU': S×C} float64 numpy arrays.
    """
    class_iou = np.asarray(class_inter, np.float64) / (np.asarray(class_union, np.float64) + EPS)
    iou = np.asarray(inter, np.float64) / (np.asarray(union, np.float64) + EPS)
    return {'mIoU': class_iou.mean(-1), 'FB-IoU': iou.mean(-1), 'pIoU': iou[..., 1],
            'class_IoU': class_iou}


@dataclasses.dataclass(frozen=True, eq=False)
class EpisodeCounts:
    """The pixel counts of every episode as scored, in episode order (int64, on the CPU).

    Attributes:
        episode: E, the episode numbers e of the plan.
        class_index: E, the position of each episode's class in the data set's `classes`.
        intersection: E×2 (background, foreground).
        union: E×2 (background, foreground).
    """
    episode: torch.Tensor
    class_index: torch.Tensor
    intersection: torch.Tensor
    union: torch.Tensor

    def __eq__(self, other):
        return isinstance(other, EpisodeCounts) and all(
            torch.equal(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self))

    @classmethod
    def gathered(cls, rows: torch.Tensor) -> Self:
        """The counts of all processes from this process's rows (N×6: episode, class index,
        BG ∩, FG ∩, BG ∪, FG ∪), sorted by episode."""
        rows = all_gather_rows(rows).cpu()
        rows = rows[rows[:, 0].argsort()]
        return cls(rows[:, 0], rows[:, 1], rows[:, 2:4], rows[:, 4:6])
