"""The paper's numbers: mIoU / FB-IoU (%) of SCCAN in Tables 1 and 2 of Xu et al., "Self-Calibrated
Cross Attention Network for Few-Shot Segmentation", ICCV 2023 (the SCCAN rows): the mean over the
four folds and, where the tables give them, each fold's mIoU. Keyed by (data_set, backbone
layers, shot)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from util.config import Config

PAPER = {
    ('pascal', 50, 1): {'mIoU': 66.8, 'folds': (68.3, 72.5, 66.8, 59.8), 'FB-IoU': 77.7},
    ('pascal', 50, 5): {'mIoU': 70.3, 'folds': (72.3, 74.1, 69.1, 65.6), 'FB-IoU': 81.8},
    ('pascal', 101, 1): {'mIoU': 68.3, 'folds': (70.9, 73.9, 66.8, 61.7), 'FB-IoU': 78.5},
    ('pascal', 101, 5): {'mIoU': 71.5, 'folds': None, 'FB-IoU': 82.1},
    ('coco', 50, 1): {'mIoU': 46.3, 'folds': (40.4, 49.7, 49.6, 45.6), 'FB-IoU': 69.9},
    ('coco', 50, 5): {'mIoU': 53.9, 'folds': None, 'FB-IoU': 74.2},
    ('coco', 101, 1): {'mIoU': 48.2, 'folds': (42.6, 51.4, 50.0, 48.8), 'FB-IoU': 69.7},
    ('coco', 101, 5): {'mIoU': 57.0, 'folds': None, 'FB-IoU': 74.8},
}


def paper_fold_miou(data_set: str, layers: int, shot: int, split: int) -> float | None:
    """The paper's mIoU (%) of one fold, or None where the tables give none (the 5-shot
    ResNet-101 rows and anything not PASCAL-5i / COCO-20i)."""
    folds = PAPER.get((data_set, layers, shot), {}).get('folds')
    return folds[split] if folds else None


TABLES = {'pascal': 'Table 1', 'coco': 'Table 2'}


def paper_figure(cfg: Config) -> tuple[float | None, str]:
    """(the paper's mIoU (%) of the config's fold, where it comes from), or (None, '') where the
    paper has none: another backbone or shot, or the synthetic benchmark (read as 'pascal')."""
    from util.datasets import SYNTHETIC_LISTS      # (imports the data sets: only when asked)
    if cfg.val_list and os.path.basename(cfg.val_list) in SYNTHETIC_LISTS.values():
        return None, ''
    value = paper_fold_miou(cfg.data_set, cfg.layers, cfg.shot, cfg.split)
    return (value, f'(SCCAN, ICCV 2023, {TABLES[cfg.data_set]})') if value is not None else (None, '')
