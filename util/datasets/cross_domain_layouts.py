"""Where the files of PATNet's cross-domain benchmarks and of the FSS-1000 layout are: from the
file names alone (nothing is decoded), each class's (image, mask) pairs in the order PATNet's
loaders list them, and the problems the names show (a missing mask, image or class folder; a
Chest X-ray mask not named <image>_mask.png; an FSS-1000 class without 1.jpg .. 10.jpg).

Each data root is the benchmark's own folder (PATNet's --datapath/<benchmark>); paths are relative
to it:
  fss        <class>/<n>.jpg, mask <class>/<id>.png, for the classes of a class list
  deepglobe  <c>/test/origin/<id>.jpg, mask <c>/test/groundtruth/<id>.png, c = 1..6
  isic       ISIC2018_Task1-2_Training_Input/<c>/<id>.jpg, c = 1..3, mask
             ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png
  lung       masks/<name>_mask.png (the list PATNet draws from), image CXR_png/<name>.png
  folder     the fss layout with any file names (one's own classes)
(<id>: the name before its first dot, as PATNet derives mask names.)
"""
import collections
import dataclasses
import itertools
import os
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from util.datasets.patnet import (DEEPGLOBE_CLASSES, FSS_NUMBERS, ISIC_INPUT, ISIC_TRUTH, LISTS,
                                  LUNG_IMAGES, LUNG_MASKS, LUNG_SUFFIX, file_id, fss_candidates,
                                  listing)
from util.files.inputs import read_text

Pair = Tuple[str, str]                 # (image, mask), relative to the data root
Problem = Tuple[str, str, str]         # (kind, path, detail), as tools/check_data.py reports
FSS_SPLITS = (('fss_trn.txt', 0), ('fss_val.txt', 520), ('fss_test.txt', 760))
FSS_TEST_LIST = os.path.join(LISTS, 'fss_test.txt')


@dataclasses.dataclass
class Layout:
    """The files of a benchmark.

    Attributes:
        root: the data root.
        classes: class ids (PATNet's), in report order.
        names: class names, same order.
        folders: per class, the folder its images are listed from (relative).
        pairs: per class, its (image, mask) pairs in PATNet's order.
        problems: what the names show to be wrong (empty when the layout is usable).
        candidates: per class, the pairs supports are drawn from when not `pairs`
            (FSS-1000: 1.jpg .. 10.jpg by number).
        unused: files present that the benchmark never reads (Chest X-ray images without mask).
    """
    root: str
    classes: List[int]
    names: List[str]
    folders: List[str]
    pairs: List[List[Pair]]
    problems: List[Problem]
    candidates: Optional[List[List[Pair]]] = None
    unused: List[str] = dataclasses.field(default_factory=list)

    def files(self) -> List[str]:
        """Every image and mask the benchmark may read (its pairs and support candidates), as
        paths under the root."""
        pairs = itertools.chain(*self.pairs, *(self.candidates or []))
        return list(dict.fromkeys(os.path.join(self.root, p) for pair in pairs for p in pair))

    def raise_first_problem(self) -> 'Layout':
        """A usable layout, or the first problem as FileNotFoundError ('missing') or ValueError."""
        if self.problems:
            kind, path, detail = self.problems[0]
            more = f' ({len(self.problems) - 1} more problems: tools/check_data.py lists them)' \
                if len(self.problems) > 1 else ''
            error = FileNotFoundError if kind == 'missing' else ValueError
            raise error(f'{path}: {detail}{more}')
        return self


def missing(root: str, paths_and_owners: Iterable[Tuple[str, str]], what: str) -> List[Problem]:
    """('missing', path, ...) for each (path, owner) whose path is not a file."""
    return [('missing', os.path.join(root, path), f'{what} not found (of {os.path.join(root, owner)})')
            for path, owner in paths_and_owners if not os.path.isfile(os.path.join(root, path))]


def missing_masks(root: str, class_pairs: Iterable[Iterable[Pair]]) -> List[Problem]:
    return missing(root, [(mask, image) for pairs in class_pairs for image, mask in pairs], 'mask')


def read_classes(path: str) -> List[str]:
    """The class folder names of a class list (one per line; blank lines ignored), sorted as
    PATNet sorts its split files; ValueError on an empty list or a name given twice."""
    names = [line.strip() for line in read_text(path, 'class list').splitlines() if line.strip()]
    if not names:
        raise ValueError(f'{path}: class list is empty (one class folder per line)')
    twice = sorted(n for n, count in collections.Counter(names).items() if count > 1)
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


def in_folder(folder: str, names: Iterable[str], mask_name: Callable[[str, str], str]) -> List[Pair]:
    """[(folder/name, mask_name(folder, name))] of the listed names."""
    return [(os.path.join(folder, n), mask_name(folder, n)) for n in names]


def deepglobe_layout(root: str) -> Layout:
    """DatasetDeepglobe: classes 1..6 (ids 0..5), masks beside the images' origin folder."""
    folders = [os.path.join(str(c), 'test', 'origin') for c in range(1, 7)]
    ground_truth = lambda folder, n: os.path.join(os.path.dirname(folder), 'groundtruth',  # noqa: E731
                                                  file_id(n) + '.png')
    pairs = [in_folder(f, listing(os.path.join(root, f), 'jpg'), ground_truth) for f in folders]
    return Layout(root, list(range(6)), list(DEEPGLOBE_CLASSES), folders, pairs,
                  missing_masks(root, pairs))


def isic_layout(root: str) -> Layout:
    """DatasetISIC: classes 1..3 (ids 0..2), masks in one ground-truth folder."""
    folders = [os.path.join(ISIC_INPUT, str(c)) for c in range(1, 4)]
    truth = lambda folder, n: os.path.join(ISIC_TRUTH, file_id(n) + '_segmentation.png')  # noqa: E731
    pairs = [in_folder(f, listing(os.path.join(root, f), 'jpg'), truth) for f in folders]
    return Layout(root, list(range(3)), ['1', '2', '3'], folders, pairs,
                  missing_masks(root, pairs))


def lung_layout(root: str) -> Layout:
    """DatasetLung: one class (id 0), listed from the masks; images without a mask unused."""
    masks = listing(os.path.join(root, LUNG_MASKS), 'png')
    problems = [('name', os.path.join(root, LUNG_MASKS, n),
                 f'a mask name must end in {LUNG_SUFFIX} (PATNet takes the image name from it by '
                 f'dropping those 9 characters); rename it <image name>{LUNG_SUFFIX}')
                for n in masks if not n.endswith(LUNG_SUFFIX)]
    pairs = [(os.path.join(LUNG_IMAGES, n[:-len(LUNG_SUFFIX)] + '.png'), os.path.join(LUNG_MASKS, n))
             for n in masks if n.endswith(LUNG_SUFFIX)]
    problems += missing(root, pairs, 'image')
    used = {image for image, _ in pairs}
    unused = [os.path.join(LUNG_IMAGES, n) for n in listing(os.path.join(root, LUNG_IMAGES), 'png')
              if os.path.join(LUNG_IMAGES, n) not in used]
    return Layout(root, [0], ['lung'], [LUNG_MASKS], [pairs], problems, unused=unused)


def folder_layout(root: str, class_list: str, class_ids: Optional[Dict[str, int]] = None,
                  numbered: bool = False) -> Layout:
    """The FSS-1000 layout for the classes of `class_list`. class_ids: {name: id} (default:
    position in the sorted list). numbered: supports are 1.jpg .. 10.jpg (FSS-1000)."""
    names = read_classes(class_list)
    ids = class_ids or {name: n for n, name in enumerate(names)}
    unknown = [name for name in names if name not in ids]
    if unknown:
        raise ValueError(f'{class_list}: not FSS-1000 classes: {", ".join(unknown[:5])}')
    problems, pairs = [], []
    mask_of = lambda folder, n: os.path.join(folder, file_id(n) + '.png')  # noqa: E731
    for name in names:
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            problems.append(('missing', folder, f'class folder not found (listed in {class_list})'))
        listed = listing(folder, 'jpg')
        pairs.append(in_folder(name, listed, mask_of))
        absent = [n for n in fss_candidates() if n not in listed] if numbered else []
        if absent and os.path.isdir(folder):
            problems.append(('missing', folder, f'{", ".join(absent)} not found (an FSS-1000 '
                             f'class holds 1.jpg .. {FSS_NUMBERS[-1]}.jpg; PATNet draws supports '
                             'by these numbers)'))
    problems += missing_masks(root, pairs)
    candidates = [in_folder(name, fss_candidates(), mask_of) for name in names] if numbered else None
    return Layout(root, [ids[n] for n in names], names, names, pairs, problems, candidates)


def fss_layout(root: str, class_list: str = FSS_TEST_LIST) -> Layout:
    """FSS-1000 as DatasetFSS reads it: PATNet's class numbers, supports by number."""
    return folder_layout(root, class_list, fss_class_ids(), numbered=True)


LAYOUTS = {'deepglobe': deepglobe_layout, 'isic': isic_layout, 'lung': lung_layout}


def layout_of(data_set: str, root: str, class_list: Optional[str] = None) -> Layout:
    """The layout of data_set fss, deepglobe, isic, lung or folder (fss and folder read the
    class list; fss by default PATNet's 240 test classes)."""
    if data_set in LAYOUTS:
        return LAYOUTS[data_set](root)
    if data_set == 'fss':
        return fss_layout(root, class_list or FSS_TEST_LIST)
    if class_list is None:
        raise ValueError(f'{data_set} needs a class list (one class folder per line)')
    return folder_layout(root, class_list)
