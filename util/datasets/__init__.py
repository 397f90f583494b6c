"""The data sets, by the name a config gives them (`data_set`).

    from util.datasets import episode_dataset
    dataset = episode_dataset(cfg, 'val')        # mode 'train' or 'val'

An evaluation data set follows the episode contract of util.episodes: `classes` (the class ids
mIoU averages over, in report order), `plan(seed, count)` (the Episodes of a seed) and
`load(episode)` (the item the network and the scorer read), and `input_files()` (every file it may
read, util.files.checks.InputFiles: no output of a run may replace one). A training data set is
indexed by query image (`ds[i]`). Homes: pascal_coco.py (PASCAL-5i, COCO-20i), synthetic.py (the
procedural benchmark, written in the PASCAL layout and read as 'pascal'), cross_domain.py (PATNet's
cross-domain benchmarks fss, deepglobe, isic, lung, and one's own classes in the FSS-1000
layout, folder).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from util.catalogue import CATALOGUE
from util.cli import TOOLS
from util.config import ConfigError
from util.datasets.cross_domain import cross_domain_data_set
from util.datasets.pascal_coco import EpisodeDataset
from util.folds import ALL_CLASSES
from util.transform import train_transform, val_transform

if TYPE_CHECKING:
    from util.config import Config
    from util.datasets.cross_domain import PatnetEpisodes
    from util.transform import Compose

# The synthetic benchmark's list names (synthetic.py writes them): they tell its configs apart.
SYNTHETIC_LISTS = {'train': 'synthetic_train.txt', 'val': 'synthetic_val.txt'}


def pascal_coco(cfg: Config, mode: str) -> EpisodeDataset:
    """The EpisodeDataset of a config: mode 'train' (base classes, train_list, augmentation) or
    'val' (novel classes, val_list, validation resize)."""
    if mode == 'val' and cfg.split == ALL_CLASSES:
        raise ConfigError(f'{cfg.source}: split {ALL_CLASSES} trains on every class and leaves '
                          'none novel to validate or test on: train with evaluate: False '
                          '(config/pascal/pascal_all_resnet50.yaml) and test on a cross-domain '
                          'benchmark (config/cross_domain/)')
    list_key = 'train_list' if mode == 'train' else 'val_list'
    for key in ('data_root', list_key):
        if getattr(cfg, key) is None:
            raise ConfigError(f'{cfg.source}: {key} is not set')
    if os.path.isdir(getattr(cfg, list_key)):
        raise IsADirectoryError(f'list file {getattr(cfg, list_key)} is a folder, not a file '
                                f'({cfg.where(list_key)}): give the list of '
                                '"image label" lines (docs/data.md)')
    for key, what, exists in (('data_root', 'data root', os.path.isdir),
                              (list_key, 'list file', os.path.isfile)):
        if not exists(getattr(cfg, key)):
            raise FileNotFoundError(f'{what} not found: {getattr(cfg, key)} ({cfg.where(key)}); '
                                    f'{how_to_make_data(cfg, key)}')
    return EpisodeDataset(cfg.data_set, cfg.data_root, getattr(cfg, list_key), cfg.split,
                          cfg.shot, mode, transform=transform_for(cfg, mode),
                          use_split_coco=cfg.use_split_coco,
                          ann_type=cfg.ann_type, skip_bad_files=cfg.skip_bad_files,
                          list_cache_dir=cfg.list_dir, query_classes=cfg.query_classes)


def transform_for(cfg: Config, mode: str) -> Compose:
    """The joint transform of a config's episodes: the training augmentation (mode 'train') or
    the evaluation resize to val_size."""
    if mode == 'train':
        return train_transform(cfg.train_h, cfg.train_w, cfg.scale_min, cfg.scale_max,
                               cfg.rotate_min, cfg.rotate_max)
    return val_transform(cfg.val_size)


def cross_domain(cfg: Config, mode: str) -> PatnetEpisodes:
    """The data set of a cross-domain or folder config (util/datasets/cross_domain.py)."""
    return cross_domain_data_set(cfg, mode, transform_for(cfg, mode))


# config data_set → (cfg, mode) → data set: the authors' loader for the data sets in folds,
# PATNet's for the others
DATA_SETS = {name: pascal_coco if d.episodes == 'folds' else cross_domain
             for name, d in CATALOGUE.items()}


def episode_dataset(cfg: Config, mode: str) -> EpisodeDataset | PatnetEpisodes:
    """The data set a config describes, for mode 'train' or 'val'."""
    return DATA_SETS[cfg.data_set](cfg, mode)


def how_to_make_data(cfg: Config, missing: str) -> str:
    """Where the data a config names comes from, for the error when its `missing` key's file or
    folder is missing (data_root: either list tells; a list: that list)."""
    lists = (cfg.train_list, cfg.val_list) if missing == 'data_root' else (getattr(cfg, missing),)
    names = {os.path.basename(p) for p in lists if p}
    if names & set(SYNTHETIC_LISTS.values()):
        return (f'make it with `make demo` or `python {TOOLS["make_synthetic"]} --root '
                f'{cfg.data_root}`')
    return f'{CATALOGUE[cfg.data_set].preparation} makes the labels and lists (see docs/data.md)'
