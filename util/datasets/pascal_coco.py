"""Few-shot segmentation episodes of PASCAL-5i and COCO-20i.

An episode: a query image, one of the classes of the mode present in it (chosen at random), and
K distinct support images of that class (never the query), as the authors' util/dataset.py
(SemData.__getitem__) builds it. Labels are binarised for the chosen class: 1 on it, 0
elsewhere, 255 (ignore) kept. Evaluation draws its episodes up front (`plan`: episode e with
its own random.Random(episode_seed(seed, e))); training draws them as it loads them (`ds[i]`),
with Python's global `random`, as the augmentation does: seeding it before `ds[i]` fixes the
episode (util.episodes.SeededEpisodes does it per episode).
"""
from __future__ import annotations

import logging
import os
import random
from typing import TYPE_CHECKING, Any, Callable, List, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from util.cli import TOOLS
from util.episodes import Episode, episode_seed
from util.files.image_io import IGNORE_LABEL, bad_file, read_pair
from util.folds import fold_classes
from util.lists import MIN_PIXELS, check_val_order, class_pixels, fold_lists, list_inputs
from util.transform import ImageTooThin, ToTensor

if TYPE_CHECKING:
    from types import ModuleType

    from util.files.checks import InputFiles

log = logging.getLogger('sccan')

MODES = ('train', 'val')
ANN_TYPES = ('mask', 'bbox')
QUERY_CLASSES = ('present', 'eligible')
MAX_SKIPS_IN_A_ROW = 20
LOAD_ERRORS = (OSError, ValueError, cv2.error)


def binarise(label: np.ndarray, c: int) -> np.ndarray:
    """H×W uint8: 1 where label == c, 0 elsewhere, 255 where label is 255."""
    mask = (label == c).astype(np.uint8)
    mask[label == IGNORE_LABEL] = IGNORE_LABEL
    return mask


def fill_boxes(mask: np.ndarray) -> np.ndarray:
    """Weak annotation: every 8-connected foreground component of a 0/1 mask becomes its filled
    bounding box. The box reaches one pixel past the component on the right and bottom, as the
    authors' cv2.rectangle call (inclusive corner x+w, y+h) draws it."""
    boxes = mask.copy()
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    for x, y, w, h, _ in stats[1:]:             # row 0 is the background
        boxes[y:y + h + 1, x:x + w + 1] = 1
    return boxes


def support_mask(label: np.ndarray, c: int, ann_type: str) -> np.ndarray:
    """Binarised support label; with 'bbox' the foreground is replaced by boxes, and ignore
    pixels stay ignore."""
    if ann_type == 'mask':
        return binarise(label, c)
    mask = fill_boxes((label == c).astype(np.uint8))
    mask[label == IGNORE_LABEL] = IGNORE_LABEL
    return mask


class EpisodeDataset(Dataset):
    """Episodes of one fold of PASCAL-5i or COCO-20i.

    Args:
        data_set: 'pascal' | 'coco'.
        data_root: folder the list's paths are relative to.
        data_list: lines "image label".
        split: fold 0..3; shot: K.
        mode: 'train' (base classes; images with any novel class dropped) or 'val' (novel
            classes).
        transform: joint (image, label) → tensors, e.g. util.transform.train_transform /
            val_transform (default: ToTensor only).
        ann_type: 'mask' | 'bbox' (support masks become boxes).
        skip_bad_files: a file that cannot be loaded is skipped (another episode is drawn with
            the global `random` and `skipped` counts it, per process) instead of raising; files
            found bad while building the lists are left out of them and listed in `bad_files`.
        list_cache_dir: where the class lists are cached (default lists/ of the repo).
        min_pixels: eligibility threshold.
        query_classes: how the query's class is drawn: 'present' (the authors'
            SemData.__getitem__: uniformly among the classes of the mode present in the query
            label, however small) or 'eligible' (only among those covering >= min_pixels of
            it). The lists decide which images are queries either way: those with an eligible
            class of the mode.

    Evaluation (the episode contract of util.episodes): `plan(seed, count)` draws the Episodes,
    `load(episode)` reads one. Training: `ds[i]` draws an episode of query image i with the
    global `random` and loads it.

    An item is a dict: query 3×H×W float, query_mask H×W long (0/1/255), support K×3×H×W,
    support_masks K×H×W long, class_index (position of the class in `classes`), query_path,
    support_paths (K strings, absolute), episode (the Episode loaded); in val mode also
    query_mask_original: the binarised label at its original size, top-left in an L×L canvas of
    255 (L = longest label side in the list, so batches collate), and original_size: long
    tensor (h, w).
    """

    def __init__(self, data_set: str, data_root: str, data_list: str, split: int, shot: int,
                 mode: str,
                 transform: Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]
                 | None = None,
                 use_split_coco: bool = True, ann_type: str = 'mask', skip_bad_files: bool = False,
                 list_cache_dir: str | None = None, min_pixels: int = MIN_PIXELS,
                 query_classes: str = 'present'):
        for name, value, allowed in (('mode', mode, MODES), ('ann_type', ann_type, ANN_TYPES),
                                     ('query_classes', query_classes, QUERY_CLASSES)):
            if value not in allowed:
                raise ValueError(f'unknown {name} {value!r}: expected one of {allowed}')
        if not isinstance(shot, int) or shot < 1:
            raise ValueError(f'shot must be a positive integer, got {shot!r}')
        base, novel = fold_classes(data_set, split, use_split_coco)
        self.data_set, self.data_root = data_set, data_root
        self.split, self.shot, self.mode = split, shot, mode
        self.transform = transform or ToTensor()
        self.ann_type = ann_type
        self.skip_bad_files, self.query_classes = skip_bad_files, query_classes
        self.classes = base if mode == 'train' else novel
        self.skipped = 0

        pairs, records = class_pixels(data_set, data_root, data_list, list_cache_dir,
                                      skip_bad_files)
        self._inputs = (data_list, pairs, list_cache_dir)
        records = self.check_sizes(data_list, pairs, records)
        if mode == 'val':
            check_val_order(data_set, data_list, pairs)
        self.bad_files = [(pair, r['error']) for pair, r in zip(pairs, records) if 'error' in r]
        for _, error in self.bad_files:
            log.warning('skipped while building the lists (skip_bad_files): %s', error)
        # (image, label) pairs relative to data_root, as the list gives them
        self.queries, self.class_files, sizes = fold_lists(pairs, records, self.classes, novel,
                                                           mode, min_pixels)
        self.check_lists(data_list, records, novel, min_pixels)
        self.original_canvas = max(max(size) for size in sizes)

    def check_sizes(self, data_list: str, pairs: Sequence[tuple[str, str]],
                    records: Sequence[dict[str, list | str]]) -> Sequence[dict[str, list | str]]:
        """`records`, checked against the sizes the transform can take (e.g. the val resize
        cannot shrink a very thin image): the list scan recorded every size, so such images are
        found before training, not at the first validation. With skip_bad_files their records
        become errors (left out of the lists); otherwise BadFileError names the first."""
        size_problem = getattr(self.transform, 'size_problem', None)
        if size_problem is None:
            return records
        unusable = [(i, self.full_path(pairs[i][0]), problem) for i, record in enumerate(records)
                    if 'error' not in record and (problem := size_problem(*record['size']))]
        if unusable and not self.skip_bad_files:
            _, path, problem = unusable[0]
            more = f', and {len(unusable) - 1} more such images' if len(unusable) > 1 else ''
            raise bad_file(path, f'{problem} (listed in {data_list}{more}); remove it from the '
                                 'list, or set skip_bad_files: True to leave such images out '
                                 f'({TOOLS["check_data"]} --config lists them)')
        records = list(records)
        for i, path, problem in unusable:
            records[i] = {'error': f'BadFileError: {path}: {problem}'}
        return records

    def check_lists(self, data_list: str, records: Sequence[dict[str, list | str]],
                    novel: Sequence[int], min_pixels: int) -> None:
        """Refuse lists without episodes, saying why (e.g. every training image shows a novel
        class, which training leaves out)."""
        if not self.queries:
            usable = [dict(r['pixels']) for r in records if 'error' not in r]
            with_novel = (sum(1 for pixels in usable if set(novel) & pixels.keys())
                          if self.mode == 'train' else 0)
            raise ValueError(
                f'{data_list}: no image has a {self.mode} class of fold {self.split} '
                f'({self.data_set}) with {min_pixels} pixels or more' +
                (f'; {with_novel} of its {len(usable)} images show a novel class of the fold '
                 f'{list(novel)} (any pixel of it), and training leaves those out' if with_novel else ''))
        few = {c: len(f) for c, f in self.class_files.items() if len(f) < self.shot + 1}
        if few:
            raise ValueError(f'{data_list}: {self.mode} classes of {self.data_set} fold '
                             f'{self.split} with fewer than shot + 1 = {self.shot + 1} eligible '
                             f'images (class: count): {few}')

    def input_files(self) -> InputFiles:
        """Every file this data set may read: its list, the list's scan cache and every image and
        label the list names (util.files.checks.InputFiles), which no output may replace."""
        data_list, pairs, cache_dir = self._inputs
        return list_inputs(self.data_set, self.data_root, data_list, pairs, cache_dir)

    def __len__(self):
        return len(self.queries)

    def __getitem__(self, index):
        return self.load(self.draw(index))

    def plan(self, seed: int, count: int) -> List[Episode]:
        """Episodes 0..count-1 of `seed`: episode e queries image e % len(queries) (cycling
        through the list as the authors' test loop does) and draws its class and supports with
        random.Random(episode_seed(seed, e)), so it never depends on `count`."""
        return [self.draw(e % len(self.queries), random.Random(episode_seed(seed, e)))
                for e in range(count)]

    def draw(self, query: int, rng: random.Random | ModuleType = random) -> Episode:
        """The episode of query image `query`: its class and K supports drawn with `rng` (the
        global `random` by default) as the authors' SemData.__getitem__ draws them."""
        pair, eligible, present = self.queries[query]
        choices = eligible if self.query_classes == 'eligible' else present
        c = choices[rng.randrange(len(choices))]
        # The authors stack the supports in reverse draw order (each new one goes in front).
        supports = self.draw_supports(c, pair[0], rng)[::-1]
        return Episode(tuple(pair), tuple(tuple(p) for p in supports), int(c))

    def load(self, episode: Episode) -> dict:
        """The item of an episode (class docstring). With skip_bad_files, an episode whose files
        cannot be loaded is replaced by one of a query drawn with the global `random`; the
        item's `episode` is the one loaded."""
        for _ in range(MAX_SKIPS_IN_A_ROW):
            try:
                return self.read(episode)
            except LOAD_ERRORS as e:
                if not self.skip_bad_files:
                    raise
                self.skipped += 1
                log.warning('episode of query %s skipped (skip_bad_files): %s: %s',
                            episode.query[0], type(e).__name__, e)
                episode = self.draw(random.randrange(len(self.queries)))
        raise RuntimeError(f'{MAX_SKIPS_IN_A_ROW} episodes in a row failed to load; check the '
                           f'data with {TOOLS["check_data"]}')

    def full_path(self, relative: str) -> str:
        """The path of a file of the data set (given relative to data_root)."""
        return os.path.join(self.data_root, relative)

    def read(self, episode: Episode) -> dict[str, Any]:
        """The item of an episode, read from disk and transformed; LOAD_ERRORS on a bad file."""
        c = episode.class_id
        query_image = self.full_path(episode.query[0])
        image, label = read_pair(query_image, self.full_path(episode.query[1]))
        query_mask = binarise(label, c)
        item = {'class_index': self.classes.index(c), 'query_path': query_image,
                'support_paths': [self.full_path(image) for image, _ in episode.supports],
                'episode': episode}
        if self.mode == 'val':
            h, w = label.shape
            canvas = torch.full((self.original_canvas,) * 2, IGNORE_LABEL, dtype=torch.long)
            canvas[:h, :w] = torch.from_numpy(query_mask)
            item['query_mask_original'] = canvas
            item['original_size'] = torch.tensor([h, w])
        item['query'], item['query_mask'] = self.transformed(image, query_mask, query_image)
        supports = []
        for image_path, label_path in (map(self.full_path, pair) for pair in episode.supports):
            s_image, s_label = read_pair(image_path, label_path)
            supports.append(self.transformed(s_image, support_mask(s_label, c, self.ann_type),
                                             image_path))
        if len({tuple(s.shape) for s, _ in supports}) > 1:
            raise ValueError('support images of different sizes cannot be stacked: pass a '
                             'transform that resizes/crops them (util.transform)')
        item['support'] = torch.stack([s for s, _ in supports])            # K×3×H×W
        item['support_masks'] = torch.stack([m for _, m in supports])      # K×H×W
        return item

    def transformed(self, image: np.ndarray, mask: np.ndarray,
                    path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """self.transform(image, mask); an image it cannot resize is a bad file."""
        try:
            return self.transform(image, mask)
        except ImageTooThin as e:
            raise bad_file(path, str(e)) from None
        except cv2.error as e:
            raise bad_file(path, f'OpenCV cannot transform this {mask.shape[0]}×'
                                 f'{mask.shape[1]} image ({getattr(e, "err", "") or e})') from None

    def draw_supports(self, c: int, query_image: str,
                      rng: random.Random | ModuleType = random) -> list[tuple[str, str]]:
        """K distinct (image, label) pairs of class c, none showing the query image. Draws K+1
        positions and drops the query's (uniform over the K-subsets without it)."""
        files = self.class_files[c]
        picks = rng.sample(range(len(files)), self.shot + 1)
        chosen = [files[i] for i in picks if files[i][0] != query_image][:self.shot]
        if len(chosen) < self.shot:      # the image is listed twice (with two label files)
            others = [f for f in files if f[0] != query_image]
            if len(others) < self.shot:
                raise ValueError(f'class {c}: fewer than {self.shot} support images besides '
                                 f'{query_image}')
            chosen = rng.sample(others, self.shot)
        return chosen
