"""PATNet's cross-domain benchmarks (FSS-1000, Deepglobe, ISIC-2018, Chest X-ray) as evaluation
data sets of the episode contract (util.episodes.Episode: `classes`, `plan`, `load`), and the
FSS-1000 layout for one's own classes, for meta-training and meta-testing.

The files (util/datasets/cross_domain_layouts.py), the episode sequences and the reading of images
and masks are PATNet's (util/datasets/patnet.py): `plan(seed, n)` is the first n episodes their
test loop draws after fix_randseed(seed), and the masks scored are theirs, 400×400, nearest from
the mask binarised at 128.
  fss, folder   every image of the listed classes is a query once, in sorted class and file
                order (then the queries start again); supports drawn one at a time until K differ
                from the query: among 1.jpg .. 10.jpg by number for FSS-1000 (DatasetFSS), among
                the class's own images for one's own data (folder).
  deepglobe, isic, lung   episode e is of class e mod (number of classes), query and supports
                drawn from its sorted list (DatasetDeepglobe, DatasetISIC, DatasetLung); 600
                episodes.

How SCCAN is fed: PATNet's network sees the image resized to 400×400 (Pillow bilinear). SCCAN
sees that same 400×400 image through this repository's evaluation transform
(util.transform.val_transform: resized to val_size, 473 by default, (size - 1) % 8 == 0, padded),
and its logits are resized to the 400×400 scoring grid (util.evaluation.evaluate:
`query_mask_original` 400×400, `original_size` (400, 400)), where they meet PATNet's mask.
"""
from __future__ import annotations

import itertools
import logging
import os
import random
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional

import numpy as np
import torch

from util.catalogue import cross_domain_benchmarks, with_episodes
from util.config import ConfigError
from util.datasets.cross_domain_layouts import Layout, Pair, layout_of
from util.datasets.patnet import (SCORE_SIZE, binary_mask, class_cycle_episodes,
                                  open_image, patnet_image, patnet_mask, query_order_episodes)
from util.episodes import Episode
from util.files.checks import InputFiles
from util.files.image_io import BadFileError, support_mask_problem

if TYPE_CHECKING:
    from util.config import Config
    from util.datasets.patnet import Draw

log = logging.getLogger('sccan')

CLASS_CYCLE = with_episodes('class_cycle')
QUERY_ORDER = with_episodes('query_order')
CROSS_DOMAIN = QUERY_ORDER + CLASS_CYCLE
# Test benchmarks of a model meta-trained elsewhere (PASCAL): any checkpoint may be tested on them
TEST_BENCHMARKS = cross_domain_benchmarks()
_WARNED = set()       # empty support masks of the benchmarks named in a warning (once each)


class PatnetEpisodes:
    """The evaluation data set of a layout in PATNet's protocol; for the fss and folder layouts
    also a training data set (`ds[i]`).

    Args:
        layout: the files (its problems are raised here, the first one).
        data_set: which protocol: fss, folder (query order) or deepglobe, isic, lung (class
            cycle).
        shot: supports per episode (K); every class needs K + 1 images.
        transform: the joint (image, mask) transform: for evaluation
            util.transform.val_transform(val_size) (SCCAN's input size), for training (`ds[i]`,
            fss and folder) the training augmentation.

    Attributes:
        classes: class ids (PATNet's; own data: position in the sorted class list), report order.
        class_names: the names of the classes, same order.
    """

    def __init__(self, layout: Layout, data_set: str, shot: int,
                 transform: Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]],
                 class_list: Optional[str] = None):
        if not os.path.isdir(layout.root):
            raise FileNotFoundError(f'data root not found: {layout.root}')
        layout.raise_first_problem()
        for pairs, folder in zip(layout.pairs, layout.folders):
            if len(pairs) < shot + 1:
                raise ValueError(f'{os.path.join(layout.root, folder)}: {len(pairs)} images, '
                                 f'fewer than shot + 1 = {shot + 1}')
        self.layout, self.data_set, self.shot = layout, data_set, shot
        self.class_list = class_list
        self.data_root = layout.root
        self.classes, self.class_names = layout.classes, layout.names
        self.transform = transform
        self.queries = [(c, pair) for c, pairs in enumerate(layout.pairs) for pair in pairs]

    def draws(self, seed: int) -> Iterator[Draw]:
        """Endless (class position, query pair, support pairs) of PATNet's sequence for `seed`."""
        if self.data_set in CLASS_CYCLE:
            return class_cycle_episodes(self.layout.pairs, seed, self.shot)
        return query_order_episodes(self.queries, self.layout.candidates or self.layout.pairs,
                                    seed, self.shot)

    def plan(self, seed: int, count: int) -> List[Episode]:
        """The first `count` episodes PATNet's test loop draws after fix_randseed(seed)."""
        if self.data_set == 'fss' and count > len(self.queries):
            log.warning('%d FSS-1000 episodes: past one pass over its %d query images, which is '
                        "PATNet's protocol", count, len(self.queries))
        return [Episode(query, tuple(supports), self.classes[c])
                for c, query, supports in itertools.islice(self.draws(seed), count)]

    def input_files(self) -> InputFiles:
        """Every file this data set may read (its class list, the layout's images and masks),
        which no output may replace (util.files.checks.InputFiles)."""
        files = InputFiles([self.class_list] if self.class_list else [])
        return files.add(self.layout.files(), follow_links=False)

    def full_path(self, relative: str) -> str:
        return os.path.join(self.data_root, relative)

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """(400×400×3 float32 RGB, 400×400 uint8 0/1) of an (image, mask) pair, as PATNet reads
        them."""
        image, mask = (self.full_path(p) for p in pair)
        return np.float32(patnet_image(image)), patnet_mask(mask)

    def load(self, episode: Episode) -> dict:
        """The item of an episode: query 3×S×S, query_mask S×S (S = val_size), support K×3×S×S,
        support_masks K×S×S, class_index, query_path, support_paths, episode, and the scored
        label query_mask_original (400×400 long 0/1) with original_size (400, 400)."""
        image, mask = self.read(episode.query)
        item = {'class_index': self.classes.index(episode.class_id),
                'query_path': self.full_path(episode.query[0]),
                'support_paths': [self.full_path(image) for image, _ in episode.supports],
                'episode': episode,
                'query_mask_original': torch.from_numpy(mask).long(),
                'original_size': torch.tensor([SCORE_SIZE, SCORE_SIZE])}
        item['query'], item['query_mask'] = self.transform(image, mask)
        supports = [self.transform(*self.support(pair, self.read)) for pair in episode.supports]
        item['support'] = torch.stack([s for s, _ in supports])           # K×3×S×S
        item['support_masks'] = torch.stack([m for _, m in supports])     # K×S×S
        return item

    # ---- training (fss, folder): `ds[i]`, drawn with the global `random` (util.episodes)
    def __len__(self):
        return len(self.queries)

    def __getitem__(self, index: int) -> dict:
        """Training episode of query image `index`: K distinct supports of its class besides it,
        drawn with `random`; images at their own size, masks binarised at 128, both through the
        training transform. Keys: query, query_mask, support, support_masks, class_index,
        query_path, support_paths."""
        c, query = self.queries[index % len(self.queries)]
        supports = random.sample([p for p in self.layout.pairs[c] if p != query], self.shot)
        query_image, query_mask = self.transform(*self.read_original(query))
        transformed = [self.transform(*self.support(pair, self.read_original))
                       for pair in supports]
        return {'query': query_image, 'query_mask': query_mask,
                'support': torch.stack([s for s, _ in transformed]),
                'support_masks': torch.stack([m for _, m in transformed]),
                'class_index': c, 'query_path': self.full_path(query[0]),
                'support_paths': [self.full_path(image) for image, _ in supports]}

    def support(self, pair: Pair, read: Callable[[Pair], tuple[np.ndarray, np.ndarray]]
                ) -> tuple[np.ndarray, np.ndarray]:
        """`read(pair)` of a support, its mask checked by the rule of support masks
        (util.files.image_io.support_mask_problem): one's own data (folder) with an empty mask is
        refused (BadFileError); PATNet's benchmarks score it as their protocol draws it, with a
        warning naming it once."""
        image, mask = read(pair)
        problem = support_mask_problem(mask)
        if problem:
            path = self.full_path(pair[1])
            message = f'{path} (a support mask) {problem} (tools/check_data.py lists such masks)'
            if self.data_set not in TEST_BENCHMARKS:
                raise BadFileError(message, path)
            if path not in _WARNED:
                _WARNED.add(path)
                log.warning('%s; scored as %s draws it, as in PATNet', message, self.data_set)
        return image, mask

    def read_original(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """(H×W×3 float32 RGB, H×W uint8 0/1) at the image's own size, the mask read as PATNet
        reads it (grey >= 128)."""
        image_path, mask_path = (self.full_path(p) for p in pair)
        image, mask = np.float32(open_image(image_path).convert('RGB')), binary_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(f'{mask_path}: mask size {mask.shape[0]}x{mask.shape[1]} differs '
                             f'from image {image_path} size {image.shape[0]}x{image.shape[1]}')
        return image, mask


def cross_domain_data_set(cfg: Config, mode: str,
                          transform: Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]
                          ) -> PatnetEpisodes:
    """The data set of a config whose data_set is fss, deepglobe, isic, lung or folder, for mode
    'train' (fss and folder: the classes of train_list) or 'val' (fss and folder: the classes of
    val_list), with the joint transform of that mode."""
    if cfg.data_root is None:
        raise ConfigError(f'{cfg.source}: data_root is not set')
    if mode == 'val' and not cfg.ori_resize:
        raise ConfigError(f'{cfg.source}: ori_resize: False would score at val_size; '
                          f'{cfg.data_set} is scored on its {SCORE_SIZE}×{SCORE_SIZE} masks '
                          '(ori_resize: True)')
    if cfg.skip_bad_files:
        raise ConfigError(f'{cfg.source}: skip_bad_files is not available for {cfg.data_set}: '
                          'its episodes are fixed by the seed; tools/check_data.py finds bad files')
    if mode == 'train' and cfg.data_set in CLASS_CYCLE:
        raise ConfigError(f'{cfg.source}: {cfg.data_set} is a test benchmark (PATNet meta-trains '
                          'on PASCAL: train with a PASCAL config and split: 4)')
    class_list = None
    if cfg.data_set in QUERY_ORDER:
        list_key = 'train_list' if mode == 'train' else 'val_list'
        class_list = getattr(cfg, list_key)
        if class_list is None:
            raise ConfigError(f'{cfg.source}: {list_key} (a class list) is not set')
    if not os.path.isdir(cfg.data_root):
        raise FileNotFoundError(f'data root not found: {cfg.data_root} ({cfg.where("data_root")}); '
                                'see docs/cross_domain.md')
    return PatnetEpisodes(layout_of(cfg.data_set, cfg.data_root, class_list), cfg.data_set,
                          cfg.shot, transform, class_list)
