"""Few-shot segmentation episodes of PASCAL-5i and COCO-20i.

An episode: a query image, one of the classes of the mode present in it (chosen at random), and
K distinct support images of that class (never the query), as the authors' util/dataset.py
(SemData.__getitem__) builds it. Labels are binarised for the chosen class: 1 on it, 0
elsewhere, 255 (ignore) kept. All random choices, including the augmentation's, come from Python's
`random` module: seeding it before `ds[i]` fixes the episode, and DataLoader workers (which torch
seeds with base_seed + worker_id) draw different episodes.
"""
import logging
import os
import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from util.folds import fold_classes
from util.image_io import IGNORE_LABEL, bad_file, read_pair
from util.lists import MIN_PIXELS, check_val_order, class_pixels, fold_lists
from util.transform import ImageTooThin, ToTensor

__all__ = ['fold_classes', 'EpisodeDataset', 'binarise', 'fill_boxes']

log = logging.getLogger('sccan')

MODES = ('train', 'val')
ANN_TYPES = ('mask', 'bbox')
QUERY_CLASSES = ('present', 'eligible')
MAX_SKIPS_IN_A_ROW = 20
LOAD_ERRORS = (OSError, ValueError, cv2.error)


def binarise(label, c):
    """H×W uint8: 1 where label == c, 0 elsewhere, 255 where label is 255."""
    mask = (label == c).astype(np.uint8)
    mask[label == IGNORE_LABEL] = IGNORE_LABEL
    return mask


def fill_boxes(mask):
    """Weak annotation: every 8-connected foreground component of a 0/1 mask becomes its filled
    bounding box. The box reaches one pixel past the component on the right and bottom, as the
    authors' cv2.rectangle call (inclusive corner x+w, y+h) draws it."""
    boxes = mask.copy()
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    for x, y, w, h, _ in stats[1:]:             # row 0 is the background
        boxes[y:y + h + 1, x:x + w + 1] = 1
    return boxes


def support_mask(label, c, ann_type):
    """Binarised support label; with 'bbox' the foreground is replaced by boxes, and ignore
    pixels stay ignore."""
    if ann_type == 'mask':
        return binarise(label, c)
    mask = fill_boxes((label == c).astype(np.uint8))
    mask[label == IGNORE_LABEL] = IGNORE_LABEL
    return mask


class EpisodeDataset(Dataset):
    """Episodes of one fold.

    data_set 'pascal' | 'coco'; data_root: folder the list's paths are relative to; data_list:
    lines "image label"; split: fold 0..3; shot: K; mode 'train' (base classes; images with any
    novel class dropped) or 'val' (novel classes). transform: joint (image, label) → tensors,
    e.g. util.transform.train_transform / val_transform (default: ToTensor only).
    ann_type 'mask' | 'bbox' (support masks become boxes). episodes: length of the dataset
    (default: number of query images); item i uses query image i mod that number, so an
    evaluation of N episodes cycles through the list as the authors' test loop does.
    skip_bad_files: a file that cannot be loaded is skipped (another episode is drawn and
    `skipped` counts it, per process) instead of raising; files found bad while building the
    lists are left out of them and listed in `bad_files`. list_cache_dir: where the class
    lists are cached (default lists/ of the repo). min_pixels: eligibility threshold.
    query_classes: how the query's class is drawn: 'present' (the authors' SemData.__getitem__:
    uniformly among the classes of the mode present in the query label, however small) or
    'eligible' (only among those covering >= min_pixels of it). The lists decide which images
    are queries either way: those with an eligible class of the mode.

    ds[i] → dict: query 3×H×W float, query_mask H×W long (0/1/255), support K×3×H×W,
    support_masks K×H×W long, class_index (position of the class in `classes`), query_path,
    support_paths (K strings); in val mode also query_mask_original: the binarised label at its
    original size, top-left in an L×L canvas of 255 (L = longest label side in the list, so
    batches collate), and original_size: long tensor (h, w).
    """

    def __init__(self, data_set, data_root, data_list, split, shot, mode, transform=None,
                 use_split_coco=True, ann_type='mask', episodes=None, skip_bad_files=False,
                 list_cache_dir=None, min_pixels=MIN_PIXELS, query_classes='present'):
        for name, value, allowed in (('mode', mode, MODES), ('ann_type', ann_type, ANN_TYPES),
                                     ('query_classes', query_classes, QUERY_CLASSES)):
            if value not in allowed:
                raise ValueError(f'unknown {name} {value!r}: expected one of {allowed}')
        if not isinstance(shot, int) or shot < 1:
            raise ValueError(f'shot must be a positive integer, got {shot!r}')
        if episodes is not None and (not isinstance(episodes, int) or episodes < 1):
            raise ValueError(f'episodes must be a positive integer or None, got {episodes!r}')
        base, novel = fold_classes(data_set, split, use_split_coco)
        self.data_set, self.split, self.shot, self.mode = data_set, split, shot, mode
        self.transform = transform or ToTensor()
        self.ann_type, self.episodes = ann_type, episodes
        self.skip_bad_files, self.query_classes = skip_bad_files, query_classes
        self.classes = base if mode == 'train' else novel
        self.skipped = 0

        pairs, records = class_pixels(data_set, data_root, data_list, list_cache_dir,
                                      skip_bad_files)
        if mode == 'val':
            check_val_order(data_set, data_list, pairs)
        self.bad_files = [(pair, r['error']) for pair, r in zip(pairs, records) if 'error' in r]
        for _, error in self.bad_files:
            log.warning('skipped while building the lists (skip_bad_files): %s', error)
        queries, class_files, sizes = fold_lists(pairs, records, self.classes, novel, mode,
                                                 min_pixels)

        def absolute(pair):
            return tuple(os.path.join(data_root, p) for p in pair)

        self.queries = [(absolute(pair), eligible, present)
                        for pair, eligible, present in queries]
        self.class_files = {c: [absolute(p) for p in files] for c, files in class_files.items()}
        self.check_lists(data_list)
        self.original_canvas = max(max(size) for size in sizes)

    def check_lists(self, data_list):
        if not self.queries:
            raise ValueError(f'{data_list}: no image has a {self.mode} class of fold {self.split} '
                             f'({self.data_set}) with enough pixels')
        few = {c: len(f) for c, f in self.class_files.items() if len(f) < self.shot + 1}
        if few:
            raise ValueError(f'{data_list}: {self.mode} classes of {self.data_set} fold '
                             f'{self.split} with fewer than shot + 1 = {self.shot + 1} eligible '
                             f'images (class: count): {few}')

    def __len__(self):
        return self.episodes or len(self.queries)

    def __getitem__(self, index):
        query = index % len(self.queries)
        for _ in range(MAX_SKIPS_IN_A_ROW):
            try:
                return self.episode(*self.queries[query])
            except LOAD_ERRORS as e:
                if not self.skip_bad_files:
                    raise
                self.skipped += 1
                log.warning('episode of query %d skipped (skip_bad_files): %s: %s', query,
                            type(e).__name__, e)
                query = random.randrange(len(self.queries))
        raise RuntimeError(f'{MAX_SKIPS_IN_A_ROW} episodes in a row failed to load; check the '
                           f'data with tools/check_data.py')

    def episode(self, query_pair, eligible, present):
        choices = eligible if self.query_classes == 'eligible' else present
        c = choices[random.randrange(len(choices))]
        # The authors stack the supports in reverse draw order (each new one goes in front).
        support_pairs = self.draw_supports(c, query_pair[0])[::-1]
        image, label = read_pair(*query_pair)
        query_mask = binarise(label, c)
        item = {'class_index': self.classes.index(c), 'query_path': query_pair[0],
                'support_paths': [p[0] for p in support_pairs]}
        if self.mode == 'val':
            h, w = label.shape
            canvas = torch.full((self.original_canvas,) * 2, IGNORE_LABEL, dtype=torch.long)
            canvas[:h, :w] = torch.from_numpy(query_mask)
            item['query_mask_original'] = canvas
            item['original_size'] = torch.tensor([h, w])
        item['query'], item['query_mask'] = self.transformed(image, query_mask, query_pair[0])
        supports = [self.transformed(s_image, support_mask(s_label, c, self.ann_type), p[0])
                    for p, (s_image, s_label) in ((p, read_pair(*p)) for p in support_pairs)]
        if len({tuple(s.shape) for s, _ in supports}) > 1:
            raise ValueError('support images of different sizes cannot be stacked: pass a '
                             'transform that resizes/crops them (util.transform)')
        item['support'] = torch.stack([s for s, _ in supports])            # K×3×H×W
        item['support_masks'] = torch.stack([m for _, m in supports])      # K×H×W
        return item

    def transformed(self, image, mask, path):
        """self.transform(image, mask); an image it cannot resize is a bad file."""
        try:
            return self.transform(image, mask)
        except ImageTooThin as e:
            raise bad_file(path, str(e)) from None
        except cv2.error as e:
            raise bad_file(path, f'OpenCV cannot transform this {mask.shape[0]}×'
                                 f'{mask.shape[1]} image ({getattr(e, "err", "") or e})') from None

    def draw_supports(self, c, query_image):
        """K distinct (image, label) pairs of class c, none showing the query image. Draws K+1
        positions and drops the query's (uniform over the K-subsets without it)."""
        files = self.class_files[c]
        picks = random.sample(range(len(files)), self.shot + 1)
        chosen = [files[i] for i in picks if files[i][0] != query_image][:self.shot]
        if len(chosen) < self.shot:      # the image is listed twice (with two label files)
            others = [f for f in files if f[0] != query_image]
            if len(others) < self.shot:
                raise ValueError(f'class {c}: fewer than {self.shot} support images besides '
                                 f'{query_image}')
            chosen = random.sample(others, self.shot)
        return chosen
