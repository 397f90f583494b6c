"""Fold splits of PASCAL-5i and COCO-20i: which classes are novel (meta-test) and which are base
(meta-training) in each fold. Class ids are those of the label PNGs (PASCAL 1..20, COCO 1..80).
Split ALL_CLASSES (4, PATNet's "fold 4") has every class base and none novel: training for the
cross-domain benchmarks, whose classes are other data sets'."""
from util.catalogue import CATALOGUE

NUM_CLASSES = {name: d.classes for name, d in CATALOGUE.items() if d.classes}
NUM_FOLDS = 4
ALL_CLASSES = 4


def num_classes(data_set: str) -> int:
    """Number of foreground classes of a data set; clear error for unknown names."""
    if data_set not in NUM_CLASSES:
        raise ValueError(f"unknown data_set {data_set!r}: expected one of {sorted(NUM_CLASSES)}")
    return NUM_CLASSES[data_set]


def has_folds(data_set: str) -> bool:
    """Whether a config's data_set is split into folds (PASCAL-5i, COCO-20i)."""
    return data_set in NUM_CLASSES


def novel_classes(data_set: str, split: int, use_split_coco: bool = True) -> list[int]:
    """Sorted novel class ids of fold `split`.
    PASCAL: 5·split+1 .. 5·split+5. COCO with use_split_coco (SCCAN/BAM/HSNet): every 4th class
    starting at split+1; without it (PANet): 20·split+1 .. 20·split+20. ALL_CLASSES: none."""
    n = num_classes(data_set)
    if split == ALL_CLASSES:
        return []
    if split not in range(NUM_FOLDS):
        raise ValueError(f'unknown split {split!r} for {data_set}: expected 0, 1, 2, 3 or '
                         f'{ALL_CLASSES} (all classes)')
    if data_set == 'coco' and use_split_coco:
        return list(range(split + 1, n + 1, NUM_FOLDS))
    per_fold = n // NUM_FOLDS
    return list(range(per_fold * split + 1, per_fold * (split + 1) + 1))


def fold_classes(data_set: str, split: int, use_split_coco: bool = True) -> tuple[list[int], list[int]]:
    """(base_classes, novel_classes) of fold `split`, both sorted lists of label ids."""
    novel = novel_classes(data_set, split, use_split_coco)
    base = [c for c in range(1, num_classes(data_set) + 1) if c not in novel]
    return base, novel
