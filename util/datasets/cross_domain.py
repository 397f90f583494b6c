"""PATNet's cross-domain benchmarks (FSS-1000, Deepglobe, ISIC-2018, Chest X-ray) as evaluation
data sets of the episode contract (util.episodes.Episode: `classes`, `plan`, `load`), and the
FSS-1000 layout for one's own classes, for meta-training and meta-testing.

Each data root is the benchmark's own folder (PATNet's --datapath/<benchmark>); Episode paths are
relative to it:
  fss        <class>/<n>.jpg, mask <class>/<n>.png; the classes of a class list (val_list,
             default PATNet's 240 test classes); every image of them is a query once, in sorted
             class and file order; supports are 1.jpg .. 10.jpg drawn one at a time.
  deepglobe  <c>/test/origin/<id>.jpg, mask <c>/test/groundtruth/<id>.png, c = 1..6.
  isic       ISIC2018_Task1-2_Training_Input/<c>/<id>.jpg, c = 1..3, mask
             ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png.
  lung       masks/<name>_mask.png (listed), image CXR_png/<name>.png.
  folder     the fss layout with any file names: classes from train_list / val_list (one class
             folder per line), supports drawn from the class's own images.
The file lists, episode sequences and the reading of images and masks are PATNet's
(util/datasets/patnet.py), so `plan(seed, n)` is the first n episodes their test loop draws after
fix_randseed(seed), and the masks scored are theirs: 400×400, nearest from the mask binarised at
128.

How SCCAN is fed: PATNet's network sees the image resized to 400×400 (Pillow bilinear). SCCAN
sees that same 400×400 image through the evaluation transform of this repository
(util.transform.val_transform: resized to val_size, 473 by default, with (size - 1) % 8 == 0),
and its logits are resized to the 400×400 scoring grid (util.evaluate, `query_mask_original`
400×400, `original_size` (400, 400)), where they are compared with PATNet's mask.
"""
import itertools
import os
import random
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from util import transform as T
from util.config import ConfigError
from util.datasets.patnet import (DEEPGLOBE_CLASSES, EPISODES, ISIC_INPUT, ISIC_TRUTH, LISTS,
                                  LUNG_IMAGES, LUNG_MASKS, LUNG_SUFFIX, SCORE_SIZE,
                                  class_cycle_episodes, file_id, fss_candidates, listing,
                                  open_image, patnet_image, patnet_mask, query_order_episodes)
from util.episodes import Episode
from util.image_io import read_text

Pair = Tuple[str, str]          # (image, mask) relative to the data root
FSS_SPLITS = (('fss_trn.txt', 0), ('fss_val.txt', 520), ('fss_test.txt', 760))
FSS_TEST_LIST = os.path.join(LISTS, 'fss_test.txt')


def read_classes(path: str) -> List[str]:
    """The class folder names of a class list (one per line; blank lines ignored), sorted as
    PATNet sorts its split files; ValueError on an empty list or a name given twice."""
    names = [line.strip() for line in read_text(path, 'class list').splitlines() if line.strip()]
    if not names:
        raise ValueError(f'{path}: class list is empty (one class folder per line)')
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f'{path}: classes listed twice: {", ".join(twice)}')
    return sorted(names)


def fss_class_ids() -> Dict[str, int]:
    """PATNet's number of each FSS-1000 class: its position in the sorted training (0..519),
    validation (520..759) or test (760..999) list."""
    ids = {}
    for name, offset in FSS_SPLITS:
        ids.update((c, offset + n) for n, c in enumerate(read_classes(os.path.join(LISTS, name))))
    return ids


class PatnetEpisodes:
    """An evaluation data set in PATNet's protocol. Subclasses set `classes` (class ids, in
    report order), `class_names`, `default_episodes` (the protocol's episode count) and
    `draws(seed)`, an endless iterator of (class position, query pair, support pairs).

    Args:
        data_root: the benchmark's folder.
        shot: supports per episode (K).
        val_size: SCCAN's input size (util.transform.val_transform).
    """
    classes: List[int]
    class_names: List[str]
    default_episodes: int

    def __init__(self, data_root: str, shot: int, val_size: int):
        if not os.path.isdir(data_root):
            raise FileNotFoundError(f'data root not found: {data_root}')
        self.data_root, self.shot = data_root, shot
        self.transform = T.val_transform(val_size)

    def draws(self, seed: int):
        raise NotImplementedError

    def plan(self, seed: int, count: int) -> List[Episode]:
        """The first `count` episodes PATNet's test loop draws after fix_randseed(seed)."""
        return [Episode(query, tuple(supports), self.classes[c])
                for c, query, supports in itertools.islice(self.draws(seed), count)]

    def full_path(self, relative: str) -> str:
        return os.path.join(self.data_root, relative)

    def read(self, pair: Pair):
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
        supports = [self.transform(*self.read(pair)) for pair in episode.supports]
        item['support'] = torch.stack([s for s, _ in supports])           # K×3×S×S
        item['support_masks'] = torch.stack([m for _, m in supports])     # K×S×S
        return item

    def check_class_sizes(self, class_pairs: Sequence[Sequence[Pair]], folders: Sequence[str]):
        """Every class needs shot + 1 images (a K-shot episode with a query besides)."""
        for pairs, folder in zip(class_pairs, folders):
            if len(pairs) < self.shot + 1:
                raise ValueError(f'{self.full_path(folder)}: {len(pairs)} images, fewer than '
                                 f'shot + 1 = {self.shot + 1}')

    def check_masks_exist(self, class_pairs: Sequence[Sequence[Pair]]):
        for image, mask in itertools.chain.from_iterable(class_pairs):
            if not os.path.isfile(self.full_path(mask)):
                raise FileNotFoundError(f'mask not found: {self.full_path(mask)} (of image '
                                        f'{self.full_path(image)})')


class ClassCycleEpisodes(PatnetEpisodes):
    """Deepglobe, ISIC and Chest X-ray: episode e is of class e mod (number of classes), its
    query and supports drawn from that class's sorted list (DatasetDeepglobe, DatasetISIC,
    DatasetLung); 600 episodes."""
    default_episodes = EPISODES

    def __init__(self, data_root, shot, val_size, class_pairs: Sequence[Sequence[Pair]],
                 folders: Sequence[str], names: Sequence[str]):
        super().__init__(data_root, shot, val_size)
        self.class_pairs = [list(p) for p in class_pairs]
        self.classes = list(range(len(class_pairs)))        # PATNet's class ids
        self.class_names = list(names)
        self.check_class_sizes(self.class_pairs, folders)
        self.check_masks_exist(self.class_pairs)

    def draws(self, seed):
        return class_cycle_episodes(self.class_pairs, seed, self.shot)


def deepglobe(data_root: str, shot: int, val_size: int) -> ClassCycleEpisodes:
    """Deepglobe/<c>/test/origin/*.jpg with masks <c>/test/groundtruth/<id>.png, c = 1..6."""
    folders = [os.path.join(str(c), 'test', 'origin') for c in range(1, 7)]
    pairs = [[(os.path.join(folder, n), os.path.join(os.path.dirname(folder), 'groundtruth',
                                                      file_id(n) + '.png'))
              for n in listing(os.path.join(data_root, folder), 'jpg')] for folder in folders]
    return ClassCycleEpisodes(data_root, shot, val_size, pairs, folders, DEEPGLOBE_CLASSES)


def isic(data_root: str, shot: int, val_size: int) -> ClassCycleEpisodes:
    """ISIC/ISIC2018_Task1-2_Training_Input/<c>/*.jpg, c = 1..3, masks
    ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png."""
    folders = [os.path.join(ISIC_INPUT, str(c)) for c in range(1, 4)]
    pairs = [[(os.path.join(folder, n), os.path.join(ISIC_TRUTH, file_id(n) + '_segmentation.png'))
              for n in listing(os.path.join(data_root, folder), 'jpg')] for folder in folders]
    return ClassCycleEpisodes(data_root, shot, val_size, pairs, folders, ['1', '2', '3'])


def lung(data_root: str, shot: int, val_size: int) -> ClassCycleEpisodes:
    """LungSegmentation/masks/<name>_mask.png (the list PATNet draws from) with images
    CXR_png/<name>.png; images without a mask are not used."""
    names = listing(os.path.join(data_root, LUNG_MASKS), 'png')
    for n in names:
        if not n.endswith(LUNG_SUFFIX):
            raise ValueError(f'{os.path.join(data_root, LUNG_MASKS, n)}: a mask name must end in '
                             f'{LUNG_SUFFIX} (PATNet takes the image name from it by dropping '
                             f'those 9 characters); rename it <image name>{LUNG_SUFFIX}')
    pairs = [(os.path.join(LUNG_IMAGES, n[:-len(LUNG_SUFFIX)] + '.png'), os.path.join(LUNG_MASKS, n))
             for n in names]
    for image, mask in pairs:
        if not os.path.isfile(os.path.join(data_root, image)):
            raise FileNotFoundError(f'image not found: {os.path.join(data_root, image)} (of mask '
                                    f'{os.path.join(data_root, mask)})')
    return ClassCycleEpisodes(data_root, shot, val_size, [pairs], [LUNG_MASKS], ['lung'])


class FolderEpisodes(PatnetEpisodes):
    """The FSS-1000 layout: <class>/<image>.jpg with mask <class>/<id>.png, for the classes of a
    class list. Evaluation as DatasetFSS: every image of the classes is a query once (sorted
    classes, then sorted names), past that the queries start again; supports drawn one at a time
    from `candidates` until K differ from the query.

    Args:
        class_list: file of class folder names.
        class_ids: {class name: id} (default: position in the sorted list).
        numbered: supports drawn among 1.jpg .. 10.jpg by number, as DatasetFSS (FSS-1000);
            else among the class's own images.
        mode: 'val' (the episode contract) or 'train' (`ds[i]`, see __getitem__).
        transform: the training transform (mode 'train').
    """

    def __init__(self, data_root, shot, val_size, class_list, class_ids=None, numbered=False,
                 mode='val', transform=None):
        super().__init__(data_root, shot, val_size)
        self.mode = mode
        self.class_names = read_classes(class_list)
        ids = class_ids or {name: n for n, name in enumerate(self.class_names)}
        unknown = [name for name in self.class_names if name not in ids]
        if unknown:
            raise ValueError(f'{class_list}: not FSS-1000 classes: {", ".join(unknown[:5])}')
        self.classes = [ids[name] for name in self.class_names]
        self.class_pairs = []
        for name in self.class_names:
            folder = self.full_path(name)
            if not os.path.isdir(folder):
                raise FileNotFoundError(f'class folder not found: {folder} (listed in '
                                        f'{class_list})')
            self.class_pairs.append([(os.path.join(name, n), os.path.join(name, file_id(n) + '.png'))
                                     for n in listing(folder, 'jpg')])
        if numbered:
            self.check_numbered()
        self.candidates = ([[(os.path.join(name, n), os.path.join(name, file_id(n) + '.png'))
                             for n in fss_candidates()] for name in self.class_names]
                           if numbered else self.class_pairs)
        self.check_class_sizes(self.class_pairs, self.class_names)
        self.check_masks_exist(self.class_pairs)
        self.queries = [(c, pair) for c, pairs in enumerate(self.class_pairs) for pair in pairs]
        self.default_episodes = len(self.queries)
        self.train_transform = transform

    def check_numbered(self):
        for name, pairs in zip(self.class_names, self.class_pairs):
            missing = sorted(set(fss_candidates()) - {os.path.basename(i) for i, _ in pairs},
                             key=lambda n: int(file_id(n)))
            if missing:
                raise FileNotFoundError(f'{self.full_path(name)}: {", ".join(missing)} not found '
                                        '(an FSS-1000 class holds 1.jpg .. 10.jpg; PATNet draws '
                                        'supports by these numbers)')

    def draws(self, seed):
        return query_order_episodes(self.queries, self.candidates, seed, self.shot)

    # ---- training: `ds[i]`, drawn with the global `random` (util.episodes.SeededEpisodes)
    def __len__(self):
        return len(self.queries)

    def __getitem__(self, index: int) -> dict:
        """Training episode of query image `index`: K distinct supports of its class besides it,
        drawn with `random`; images at their own size, masks binarised at 128, both through
        the training transform. Keys: query, query_mask, support, support_masks, class_index,
        query_path, support_paths."""
        c, query = self.queries[index % len(self.queries)]
        others = [pair for pair in self.class_pairs[c] if pair != query]
        supports = random.sample(others, self.shot)
        query_image, query_mask = self.train_transform(*self.read_original(query))
        pairs = [self.train_transform(*self.read_original(pair)) for pair in supports]
        return {'query': query_image, 'query_mask': query_mask,
                'support': torch.stack([s for s, _ in pairs]),
                'support_masks': torch.stack([m for _, m in pairs]),
                'class_index': c, 'query_path': self.full_path(query[0]),
                'support_paths': [self.full_path(image) for image, _ in supports]}

    def read_original(self, pair: Pair):
        """(H×W×3 float32 RGB, H×W uint8 0/1) at the image's own size; masks as PATNet reads
        them (grey >= 128)."""
        image_path, mask_path = (self.full_path(p) for p in pair)
        image = np.float32(open_image(image_path).convert('RGB'))
        mask = (np.asarray(open_image(mask_path).convert('L')) >= 128).astype(np.uint8)
        if image.shape[:2] != mask.shape:
            raise ValueError(f'{mask_path}: mask size {mask.shape[0]}x{mask.shape[1]} differs '
                             f'from image {image_path} size {image.shape[0]}x{image.shape[1]}')
        return image, mask


def fss(data_root: str, shot: int, val_size: int, class_list: str = FSS_TEST_LIST,
        **kwargs) -> FolderEpisodes:
    """FSS-1000 as DatasetFSS: PATNet's class numbers, supports by number 1..10."""
    return FolderEpisodes(data_root, shot, val_size, class_list, class_ids=fss_class_ids(),
                          numbered=True, **kwargs)


BENCHMARKS = {'deepglobe': deepglobe, 'isic': isic, 'lung': lung}


def cross_domain_data_set(cfg, mode: str):
    """The data set of a config whose data_set is fss, deepglobe, isic, lung or folder, for mode
    'train' (fss and folder only) or 'val'."""
    if cfg.data_root is None:
        raise ConfigError(f'{cfg.source}: data_root is not set')
    if mode == 'val' and not cfg.ori_resize:
        raise ConfigError(f'{cfg.source}: ori_resize: False would score at val_size; '
                          f'{cfg.data_set} is scored on its {SCORE_SIZE}×{SCORE_SIZE} masks '
                          '(ori_resize: True)')
    if cfg.data_set in BENCHMARKS:
        if mode == 'train':
            raise ConfigError(f'{cfg.source}: {cfg.data_set} is a test benchmark (PATNet meta-'
                              'trains on PASCAL); train on PASCAL with split: 4')
        return BENCHMARKS[cfg.data_set](cfg.data_root, cfg.shot, cfg.val_size)
    list_key = 'train_list' if mode == 'train' else 'val_list'
    class_list = getattr(cfg, list_key)
    if class_list is None:
        raise ConfigError(f'{cfg.source}: {list_key} (the class list) is not set')
    transform = T.train_transform(cfg) if mode == 'train' else None
    make = fss if cfg.data_set == 'fss' else FolderEpisodes
    return make(cfg.data_root, cfg.shot, cfg.val_size, class_list=class_list, mode=mode,
                transform=transform)
