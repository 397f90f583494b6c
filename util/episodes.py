"""Episodes for training and evaluation: the datasets a config describes, which episodes each
process draws, and with which random numbers.

Every episode gets its own seed, derived from (seed, epoch, position) for training and
(seed, episode number) for evaluation; the dataset draws its random choices (class, supports,
augmentation) under that seed. An episode therefore does not depend on the process, the data
loading worker, or on whether a run was interrupted and resumed: N processes see exactly the
episodes one process would, and a resumed run sees exactly the episodes of an uninterrupted one.
"""
import os
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from util import transform as T
from util.config import ConfigError
from util.dataset import EpisodeDataset
from util.seeding import capture_rng, restore_rng, seed_cpu
from util.synthetic import LIST_NAMES as SYNTHETIC_LISTS

DATA_TOOLS = {'pascal': 'tools/prepare_pascal.py', 'coco': 'tools/prepare_coco.py'}


def episode_dataset(cfg, mode):
    """The EpisodeDataset of a config: mode 'train' (base classes, train_list, augmentation) or
    'val' (novel classes, val_list, validation resize)."""
    list_key = 'train_list' if mode == 'train' else 'val_list'
    for key in ('data_root', list_key):
        if getattr(cfg, key) is None:
            raise ConfigError(f'{cfg.source}: {key} is not set')
    for key, what, exists in (('data_root', 'data root', os.path.isdir),
                              (list_key, 'list file', os.path.isfile)):
        if not exists(getattr(cfg, key)):
            raise FileNotFoundError(f'{what} not found: {getattr(cfg, key)} (config key {key} in '
                                    f'{cfg.source}); {how_to_make_data(cfg)}')
    transform = T.train_transform(cfg) if mode == 'train' else T.val_transform(cfg.val_size)
    return EpisodeDataset(cfg.data_set, cfg.data_root, getattr(cfg, list_key), cfg.split,
                          cfg.shot, mode, transform=transform, use_split_coco=cfg.use_split_coco,
                          ann_type=cfg.ann_type, skip_bad_files=cfg.skip_bad_files,
                          list_cache_dir=cfg.list_dir, query_classes=cfg.query_classes)


def how_to_make_data(cfg):
    """Where the data a config names comes from, for the error when it is missing."""
    names = {os.path.basename(p) for p in (cfg.train_list, cfg.val_list) if p}
    if names & set(SYNTHETIC_LISTS.values()):
        return (f'make it with `make demo` or `python tools/make_synthetic.py --root '
                f'{cfg.data_root}`')
    return f'{DATA_TOOLS[cfg.data_set]} makes the labels and lists (see README, Data)'


def episode_seed(*parts):
    """A 32-bit seed from non-negative integers, spread well even for neighbouring inputs."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class SeededEpisodes(Dataset):
    """`episodes[(index, seed)]` is `dataset[index]` drawn under `seed`. The caller's global
    random state is left as it was, so data loading in the main process (workers 0) does not
    disturb training randomness (dropout)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        saved = capture_rng(cuda=False)
        try:
            seed_cpu(seed)
            return self.dataset[index]
        finally:
            restore_rng(saved)


class TrainSampler(Sampler):
    """The training order of one process for one epoch: a permutation seeded by
    (seed + epoch), shared by all processes, padded to a multiple of world_size and dealt
    round-robin (as DistributedSampler does). Yields (index, episode seed). `start` skips this
    process's first samples, to resume in the middle of an epoch."""

    def __init__(self, size, seed, rank=0, world_size=1):
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.per_rank = -(-size // world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
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


class EvalSampler(Sampler):
    """Evaluation episodes 0..num_episodes-1 of one seed, dealt round-robin over processes.
    Episode e uses query index e % len(dataset), cycling through the list as the authors do."""

    def __init__(self, size, num_episodes, seed, rank=0, world_size=1):
        self.size, self.num_episodes, self.seed = size, num_episodes, seed
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for e in range(self.rank, self.num_episodes, self.world_size):
            yield e % self.size, episode_seed(self.seed, e)

    def __len__(self):
        return len(range(self.rank, self.num_episodes, self.world_size))


MODEL_INPUTS = ('query', 'support', 'support_masks')
TRAINING_INPUTS = MODEL_INPUTS + ('query_mask',)     # SCCAN's forward with its loss


def batch_tensors(batch, device, names=MODEL_INPUTS):
    """The named tensors of a collated batch on `device` (asynchronous from pinned memory);
    by default the model's inputs (query, support, support_masks)."""
    return [batch[name].to(device, non_blocking=True) for name in names]


def make_loader(episodes, sampler, batch_size, workers, drop_last, pin_memory=False):
    """DataLoader over SeededEpisodes. Its own generator keeps it from drawing from the global
    torch generator (which would shift dropout after a mid-epoch resume); its workers leave
    Ctrl-C to the main process, which stops cleanly."""
    return DataLoader(episodes, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=drop_last, pin_memory=pin_memory,
                      worker_init_fn=_ignore_interrupts if workers else None,
                      generator=torch.Generator().manual_seed(0))


def _ignore_interrupts(worker_id):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
