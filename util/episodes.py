"""Episodes for training and evaluation: what an evaluation episode is (`Episode`), which
episodes each process draws, and with which random numbers.

Every episode gets its own seed, derived from (seed, epoch, position) for training and
(seed, episode number) for evaluation; the data set draws its random choices (class, supports,
augmentation) under that seed. An episode therefore does not depend on the process, the data
loading worker, or on whether a run was interrupted and resumed: N processes see exactly the
episodes one process would, and a resumed run sees exactly the episodes of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, Tuple, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from util import stop_signals
from util.seeding import capture_rng, restore_rng, seed_cpu

_T = TypeVar('_T')


@dataclasses.dataclass(frozen=True)
class Episode:
    """One evaluation episode before any pixel is read: what an evaluation data set's `plan`
    draws and its `load` reads.

    Attributes:
        query: (image, label) paths relative to the data root.
        supports: the K (image, label) pairs, in the order they are stacked.
        class_id: the data set's own class id (VOC 1..20, COCO 1..80, a benchmark's class).
    """
    query: Tuple[str, str]
    supports: Tuple[Tuple[str, str], ...]
    class_id: int


class EpisodeSource(Protocol):
    """What the wrappers below read of a data set (util.datasets: EpisodeDataset, PatnetEpisodes):
    training episodes by query index, and evaluation episodes by their Episode."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict: ...

    def load(self, episode: Episode) -> dict: ...


def _keep_episodes(batch, *, collate_fn_map=None):
    return list(batch)


# default_collate, with a batch's Episodes kept as a list of Episodes (torch's documented way to
# extend it); the loaders pass it, torch's own table stays as it is.
collate_episodes = functools.partial(
    collate, collate_fn_map={**default_collate_fn_map, Episode: _keep_episodes})


def episode_seed(*parts: int) -> int:
    """A 32-bit seed from non-negative integers, spread well even for neighbouring inputs."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seeded(seed: int, call: Callable[..., _T], *args: Any) -> _T:
    """`call(*args)` with the global generators (Python, NumPy, torch CPU) seeded by `seed`; the
    caller's states are put back after, so that data loading in the main process (workers 0)
    does not disturb training randomness (dropout)."""
    saved = capture_rng(cuda=False)
    try:
        seed_cpu(seed)
        return call(*args)
    finally:
        restore_rng(saved)


class SeededEpisodes(Dataset):
    """Training: `episodes[(index, seed)]` is `dataset[index]` (an episode of query image
    `index`, drawn and augmented with the global generators) drawn under `seed`."""

    def __init__(self, dataset: EpisodeSource):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        return seeded(seed, self.dataset.__getitem__, index)


class PlannedEpisodes(Dataset):
    """Evaluation: item e is `dataset.load(plan[e])` with `episode_number` e, loaded under
    episode_seed(seed, e) (what a data set that skips bad files draws a replacement with)."""

    def __init__(self, dataset: EpisodeSource, plan: Sequence[Episode], seed: int):
        self.dataset, self.plan, self.seed = dataset, plan, seed

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, e):
        item = seeded(episode_seed(self.seed, e), self.dataset.load, self.plan[e])
        item['episode_number'] = e
        return item


class TrainSampler(Sampler):
    """The training order of one process for one epoch: a permutation seeded by
    (seed + epoch), shared by all processes, padded to a multiple of world_size and dealt
    round-robin (as DistributedSampler does). Yields (index, episode seed). `start` skips this
    process's first samples, to resume in the middle of an epoch."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.per_rank = -(-size // world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        order += order[:self.per_rank * self.world_size - self.size]     # pad
        for position in range(self.rank + self.start * self.world_size,
                              len(order), self.world_size):
            yield order[position], episode_seed(self.seed, self.epoch, position)

    def __len__(self):
        return self.per_rank - self.start


def shard(count: int, rank: int = 0, world_size: int = 1) -> range:
    """The episode numbers of 0..count-1 that process `rank` evaluates: dealt round-robin."""
    return range(rank, count, world_size)


MODEL_INPUTS = ('query', 'support', 'support_masks')
TRAINING_INPUTS = MODEL_INPUTS + ('query_mask',)     # SCCAN's forward with its loss


def batch_tensors(batch: Mapping[str, Any], device: torch.device | str,
                  names: Sequence[str] = MODEL_INPUTS) -> list[torch.Tensor]:
    """The named tensors of a collated batch on `device` (asynchronous from pinned memory);
    by default the model's inputs (query, support, support_masks)."""
    return [batch[name].to(device, non_blocking=True) for name in names]


def make_loader(episodes: Dataset, sampler: Sampler | Iterable | None, batch_size: int, workers: int,
                drop_last: bool, pin_memory: bool = False) -> DataLoader:
    """DataLoader over SeededEpisodes or PlannedEpisodes, with at most as many `workers` as
    there are CPUs (loading_workers). Its own generator keeps it from drawing from the global
    torch generator (which would shift dropout after a mid-epoch resume); its workers leave the
    stop signals to the main process, which stops cleanly (util.stop_signals)."""
    workers = loading_workers(workers)
    return DataLoader(episodes, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=drop_last, pin_memory=pin_memory, collate_fn=collate_episodes,
                      worker_init_fn=stop_signals.ignore_in_worker if workers else None,
                      generator=torch.Generator().manual_seed(0))


def loading_workers(requested: int) -> int:
    """`requested` data-loading processes, capped at the CPUs this process may use: more only
    compete with training for them (the configs' 8 on a 2-core machine). Every episode draws
    from its own seed, so the cap changes no result; the log says so once."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    if requested > available:
        _note_capped(requested, available)
    return min(requested, available)


@functools.lru_cache(maxsize=None)
def _note_capped(requested, available):
    logging.getLogger('sccan').info('workers %d: %d CPU(s) available, loading with %d processes '
                                    '(the same episodes)', requested, available, available)


@contextlib.contextmanager
def batches_of(loader: Iterable[_T]) -> Iterator[Iterator[_T]]:
    """An iterator over `loader` (a DataLoader or any iterable) whose loading processes are shut
    down when the `with` block ends, by an error too: otherwise they live on until the garbage
    collector frees the error's traceback, and joining them then waits out torch's timeouts.
    The loading processes start with the stop signals held (util.stop_signals)."""
    with stop_signals.held():
        batches = iter(loader)
    try:
        yield batches
    finally:
        # torch has no public call for it; a DataLoader's iterator shuts down its workers here
        shutdown = getattr(batches, '_shutdown_workers', None)
        if shutdown is not None:
            shutdown()
