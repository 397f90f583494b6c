"""PATNet's cross-domain protocol (Lei et al., ECCV 2022; github.com/slei109/PATNet, data/*.py,
test.py): which files its loaders list, the episode sequences they draw, and how they read an
image and a mask. Pure functions of the file names and the seed; the data sets of
util/datasets/cross_domain.py build on them.

Their test.py calls fix_randseed(0) (random, np.random and torch seeded with 0: one seed, fixed in
their code) once, then iterates a DataLoader with shuffle=False and no workers; seed s here is the
sequence the same loop draws after fix_randseed(s). The only random draws of an episode are
`np.random.choice(..., 1, replace=False)` in the data sets' sample_episode: the transforms
(Resize, ToTensor, Normalize) and mask resizing draw nothing, a SequentialSampler draws nothing,
and the base seed each DataLoader iterator takes from torch's generator is used only by worker
processes. The sequence of a seed is therefore that of np.random.RandomState(seed) alone, and a
shorter run is a prefix of a longer one.

`np.random.choice(seq, 1, replace=False)` draws a whole permutation of len(seq) and keeps its
first element (numpy's legacy RandomState.choice), so `pick` draws exactly that: the random
stream advances as theirs does whatever the list holds.
"""
from __future__ import annotations

import io
import itertools
import os
from typing import TYPE_CHECKING, Hashable, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from util.files.image_io import bad_file, read_bytes

if TYPE_CHECKING:
    from types import ModuleType

    from PIL import Image

SCORE_SIZE = 400          # FSSDataset.initialize(img_size=400): images, masks and scoring
MASK_THRESHOLD = 128      # read_mask: grey >= 128 is foreground
FSS_NUMBERS = range(1, 11)    # FSS-1000 images are 1.jpg .. 10.jpg; supports are drawn by number

# Folder and file names of the layouts their loaders read
ISIC_INPUT, ISIC_TRUTH = 'ISIC2018_Task1-2_Training_Input', 'ISIC2018_Task1_Training_GroundTruth'
LUNG_IMAGES, LUNG_MASKS, LUNG_SUFFIX = 'CXR_png', 'masks', '_mask.png'
# Their class lists, shipped as data (patnet_lists/README.md says where from)
LISTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'patnet_lists')

# Deepglobe (data/preprocess.py): `labelset` gives class c + 1 the colour labelset[c], compared
# with the pixels of cv2.imread, which are BGR. Read as RGB colours of the land-cover release,
# the classes are agriculture, urban, rangeland, forest, water, barren. Black is the release's
# 'unknown': in no class, but a colour like the others in the tile filter.
DEEPGLOBE_LABELSET_BGR = ((0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (255, 0, 0),
                          (255, 255, 255))
DEEPGLOBE_CLASSES = ('agriculture', 'urban', 'rangeland', 'forest', 'water', 'barren')
DEEPGLOBE_UNKNOWN_BGR = (0, 0, 0)
DEEPGLOBE_GRID = 6                # each release image is cut into 6×6 tiles
DEEPGLOBE_MIN_SHARE = 0.048       # a tile is kept when every colour covers more than this

# (class position, query, supports in stacking order); the items are names or (image, mask)
# pairs: anything told apart by ==, as PATNet tells paths apart
Draw = Tuple[int, Hashable, Tuple[Hashable, ...]]


def listing(folder: str, extension: str) -> List[str]:
    """The file names PATNet's loaders take from `folder`: sorted(glob(folder/*)) (so no name
    starting with a dot) whose text between the first and second dot is `extension`
    (`basename.split('.')[1] == extension`; a name without a dot, on which theirs fails, is
    left out). Returns [] for a missing folder, as glob does."""
    if not os.path.isdir(folder):
        return []
    names = [n for n in os.listdir(folder) if not n.startswith('.')]
    return sorted(n for n in names if n.split('.')[1:2] == [extension])


def file_id(name: str) -> str:
    """The id PATNet derives a mask name from: the text before the first dot."""
    return name.split('.')[0]


def pick(rng: np.random.RandomState, count: int) -> int:
    """The index `np.random.choice(seq, 1, replace=False)[0]` takes from a sequence of `count`
    items, drawn from `rng` exactly as that call draws."""
    return int(rng.choice(count, 1, replace=False)[0])


def draw_supports(rng: np.random.RandomState, names: Sequence[Hashable], query: Hashable,
                  shot: int) -> Tuple[Hashable, ...]:
    """sample_episode's support loop: draw one name at a time, keep it when it is not the
    query, until `shot` are kept (so a support may appear twice in a 5-shot set)."""
    supports = []
    while len(supports) < shot:
        name = names[pick(rng, len(names))]
        if name != query:
            supports.append(name)
    return tuple(supports)


def query_order_episodes(queries: Sequence[Tuple[int, Hashable]],
                         candidates: Sequence[Sequence[Hashable]], seed: int,
                         shot: int) -> Iterator[Draw]:
    """DatasetFSS.sample_episode: episode e queries queries[e mod len] (class position, image
    name); its supports are drawn from candidates[class position]. For FSS-1000 the
    candidates are '1.jpg' .. '10.jpg' of every class (`np.random.choice(range(1, 11))`).
    Past the end of one pass the queries start again and the stream goes on."""
    rng = np.random.RandomState(seed)
    for e in itertools.count():
        c, query = queries[e % len(queries)]
        yield c, query, draw_supports(rng, candidates[c], query, shot)


def class_cycle_episodes(class_images: Sequence[Sequence[Hashable]], seed: int,
                         shot: int) -> Iterator[Draw]:
    """sample_episode of DatasetDeepglobe, DatasetISIC and DatasetLung: episode e belongs to
    class e mod (number of classes); its query and then its supports are drawn from that
    class's sorted names."""
    rng = np.random.RandomState(seed)
    for e in itertools.count():
        c = e % len(class_images)
        names = class_images[c]
        query = names[pick(rng, len(names))]
        yield c, query, draw_supports(rng, names, query, shot)


def fss_candidates() -> List[str]:
    """The support names DatasetFSS draws from, in the order of their numbers."""
    return [f'{k}.jpg' for k in FSS_NUMBERS]


class MissingPackage(OSError):
    """A package the requested work needs is not installed (an OSError: the scripts report it
    on one line)."""


def pillow() -> ModuleType:
    """PIL.Image, imported on first use: only these benchmarks need Pillow (PATNet reads and
    resizes with it), so the rest of the repository runs without it."""
    try:
        from PIL import Image
    except ImportError:
        raise MissingPackage('the cross-domain benchmarks read images with Pillow, as PATNet '
                             'does: pip install -r requirements.txt') from None
    return Image


def open_image(path: str) -> Image.Image:
    """A PIL image of a file checked to be complete (util.files.image_io.read_bytes); BadFileError
    naming the file when Pillow cannot read it."""
    data = read_bytes(path, 'image')
    try:
        image = pillow().open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError) as e:       # PIL's UnidentifiedImageError is an OSError
        raise bad_file(path, f'Pillow cannot read it ({e})') from None
    return image


def patnet_image(path: str, size: int = SCORE_SIZE) -> np.ndarray:
    """H×W×3 uint8 RGB at size×size: `Image.open(path).convert('RGB')` resized as torchvision's
    Resize((size, size)) resizes a PIL image (Image.resize with BILINEAR, Pillow's
    antialiasing filter)."""
    image = open_image(path).convert('RGB')
    return np.asarray(image.resize((size, size), pillow().Resampling.BILINEAR))


def binary_mask(path: str) -> np.ndarray:
    """H×W uint8 0/1 at the mask's own size: read_mask's grey (PIL's convert('L')) >= 128."""
    return (np.asarray(open_image(path).convert('L')) >= MASK_THRESHOLD).astype(np.uint8)


def patnet_mask(path: str, size: int = SCORE_SIZE) -> np.ndarray:
    """size×size uint8 of 0/1: binary_mask, then F.interpolate(..., mode='nearest') to
    size×size, as their __getitem__ does (on their float copy; nearest only picks pixels, so
    uint8 picks the same ones)."""
    mask = torch.from_numpy(binary_mask(path))[None, None]
    return F.interpolate(mask, (size, size), mode='nearest')[0, 0].numpy()


def grey_values(mask: Image.Image) -> List[int]:
    """The distinct grey levels of a mask (a PIL image, open_image) as PATNet reads it
    (convert('L')), for checks."""
    grey = np.asarray(mask.convert('L'))
    return np.flatnonzero(np.bincount(grey.ravel(), minlength=256)).tolist()
