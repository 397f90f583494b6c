"""A procedural few-shot segmentation benchmark in the PASCAL-5i on-disk format.

20 classes (4 folds of 5, exactly as PASCAL-5i), each with its own appearance (a two-colour
palette and a texture) and its own shape family. Every scene puts 2-3 objects of different
classes on a cluttered, low-saturation textured background, so "which object?" can only be
answered from the support: a model that finds every object scores about 1/(number of objects).
Labels follow VOC/SBD: 0 background, class id on the object, 255 on a thin band along every
object boundary.

Everything is drawn with numpy and OpenCV from one seed; image i of a split depends only on
(seed, split, i), so a dataset is reproducible byte for byte.
"""
import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from util.datasets import SYNTHETIC_LISTS
from util.files.image_io import IGNORE_LABEL, write_image
from util.files.writer import make_folder, temporary_target, write_atomic, write_json
from util.log import progress

NUM_CLASSES = 20
SHAPES = ('ellipse', 'rectangle', 'triangle', 'star', 'cross', 'ring', 'crescent', 'hexagon',
          'lshape', 'blob')
TEXTURES = ('stripes', 'checker', 'dots', 'waves', 'blotches')
MIN_VISIBLE = 2 * 32 * 32 + 400   # PASCAL-5i eligibility (2048 px) plus room for the ignore band
IMAGE_H = (144, 176)              # inclusive ranges of the image size in pixels
IMAGE_W = (160, 208)
MIN_GAP = 4                       # pixels kept free between objects where possible
OBJECT_AREA = (0.11, 0.2)        # fraction of the image one object covers before occlusion
SPLIT_IDS = {'train': 0, 'val': 1}
GENERATOR_VERSION = 2             # bump when a change alters the images of a seed
# The embedded default benchmark (`make demo`'s, data/synthetic): images in each list
TRAIN_IMAGES, VAL_IMAGES = 1500, 600


@dataclasses.dataclass(frozen=True)
class ClassStyle:
    """What every instance of one class shares; instances jitter around it."""
    primary: tuple      # RGB 0..255
    secondary: tuple    # RGB 0..255
    texture: str
    period: float       # texture period in pixels
    angle: float        # texture orientation in degrees
    shape: str
    aspect: float       # height / width of the shape before deformation


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    """h, s, v in [0, 1] → RGB tuple of floats in 0..255."""
    hsv = np.array([[[h * 180.0, s * 255.0, v * 255.0]]], np.float32)
    return tuple(float(x) for x in cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0])


def class_styles() -> list[ClassStyle]:
    """The 20 class appearances. Fixed (not seeded) so that every generated copy of the
    benchmark means the same thing by "class 7"."""
    styles = []
    for c in range(NUM_CLASSES):
        # hues 18° apart, visited with stride 7 so that the 5 classes of a fold are spread
        # around the colour wheel; neighbouring hues differ in texture and second colour
        hue = (c * 7 % NUM_CLASSES) / NUM_CLASSES
        # the second colour stays near the first (darker, paler or a neighbouring hue): a
        # texture finer than the backbone's stride 8 blurs into its mean colour, and a
        # complementary pair would blur into background grey
        second_hue, second_s, second_v = ((hue, 0.85, 0.45), (hue + 0.08, 0.9, 0.75),
                                          (hue - 0.08, 0.9, 0.75), (hue, 0.35, 1.0))[c % 4]
        styles.append(ClassStyle(
            primary=hsv_to_rgb(hue, 0.85, 0.95),
            secondary=hsv_to_rgb(second_hue % 1.0, second_s, second_v),
            texture=TEXTURES[c % len(TEXTURES)],
            period=6.0 + 2.0 * (c // 5),      # 6, 8, 10, 12 px: one period per fold quarter
            angle=(c * 37) % 180,
            shape=SHAPES[c % len(SHAPES)],
            aspect=(0.7, 1.0, 1.3)[c % 3]))
    return styles


_STYLES = class_styles()      # drawn once for every image written


# ---------------------------------------------------------------- shapes (binary masks)

def _polygon(radii, angles):
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def shape_outline(shape: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Unit-size outline of one shape family: a list of polygons (N×2, x y) in [-1, 1]²; the
    second polygon, if any, is a hole."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    if shape == 'ellipse':
        return [_polygon(np.ones_like(t), t)]
    if shape == 'rectangle':
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.85]
    if shape == 'triangle':
        a = np.array([-90, 30, 150]) * np.pi / 180
        return [_polygon(np.ones(3), a)]
    if shape == 'star':
        a = np.linspace(-np.pi / 2, 1.5 * np.pi, 10, endpoint=False)
        return [_polygon(np.where(np.arange(10) % 2 == 0, 1.0, 0.5), a)]
    if shape == 'cross':
        w = 0.38
        return [np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1],
                          [-w, w], [-1, w], [-1, -w], [-w, -w]], float)]
    if shape == 'ring':
        return [_polygon(np.ones_like(t), t), _polygon(np.full_like(t, 0.5), t)]
    if shape == 'crescent':
        return [_polygon(np.ones_like(t), t), _polygon(np.full_like(t, 0.8), t) + [0.45, -0.15]]
    if shape == 'hexagon':
        a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        return [_polygon(np.ones(6), a)]
    if shape == 'lshape':
        return [np.array([[-1, -1], [-0.2, -1], [-0.2, 0.3], [1, 0.3], [1, 1], [-1, 1]], float)]
    if shape == 'blob':
        k = np.arange(2, 5)[:, None]
        wobble = (rng.uniform(0.1, 0.22, (3, 1)) * np.cos(k * t + rng.uniform(0, 2 * np.pi, (3, 1)))).sum(0)
        return [_polygon(0.8 + wobble, t)]
    raise ValueError(f'unknown shape family {shape!r}; expected one of {SHAPES}')


def _densify(poly, n=96):
    """Resample a closed polygon to n points so a smooth warp bends its straight edges."""
    closed = np.vstack([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    u = np.linspace(0, s[-1], n, endpoint=False)
    return np.stack([np.interp(u, s, closed[:, 0]), np.interp(u, s, closed[:, 1])], 1)


def _rasterize(polys, size_hw):
    """Fill polygons (N×2 pixel coordinates, x y) into an H×W bool mask; later ones are holes."""
    mask = np.zeros(size_hw, np.uint8)
    for i, p in enumerate(polys):
        cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32)], 0 if i else 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def instance_outline(style: ClassStyle,
                     rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
    """Unit-size polygons of one instance: the class's shape family with random rotation,
    aspect jitter and a smooth non-rigid deformation. Returns (polygons, area in unit²)."""
    polys = [_densify(p) for p in shape_outline(style.shape, rng)]
    aspect = style.aspect * rng.uniform(0.85, 1.18)
    theta = rng.uniform(-np.pi, np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    # deformation: a random low-frequency displacement field applied to the outline
    freq = rng.uniform(0.8, 1.8, 2)
    phase = rng.uniform(0, 2 * np.pi, 2)
    amp = rng.uniform(0.05, 0.15)
    out = []
    for p in polys:
        p = p * [1.0 / np.sqrt(aspect), np.sqrt(aspect)]
        p = p + amp * np.sin(freq * p[:, ::-1] * np.pi + phase)
        out.append(p @ rot.T)
    # area by rasterising at 32 px per unit: holes may stick out of the outline (crescent)
    area = _rasterize([p * 32 + 64 for p in out], (128, 128)).sum() / 32.0 ** 2
    return out, area


def shape_mask(style: ClassStyle, size_hw: tuple[int, int], area: float,
               rng: np.random.Generator) -> np.ndarray:
    """Binary H×W mask of one instance of about `area` pixels at a random place."""
    polys, unit_area = instance_outline(style, rng)
    radius = np.sqrt(area / unit_area)
    h, w = size_hw
    margin = 0.6 * radius   # the object may leave the frame a little, never mostly
    center = rng.uniform([margin, margin], [max(w - margin, margin + 1), max(h - margin, margin + 1)])
    return _rasterize([p * radius + center for p in polys], size_hw)


# ---------------------------------------------------------------- appearance

def smooth_noise(size_hw: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """H×W noise in [-1, 1] with features about `scale` pixels wide (upsampled random grid)."""
    h, w = size_hw
    gh, gw = max(2, int(np.ceil(h / scale)) + 1), max(2, int(np.ceil(w / scale)) + 1)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * scale), int(gh * scale)), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], -1, 1)


def texture_pattern(style: ClassStyle, size_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """H×W weights in [0, 1] mixing the class's two colours (1 = primary)."""
    h, w = size_hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.deg2rad(style.angle + rng.uniform(-20, 20))
    period = style.period * rng.uniform(0.85, 1.15)
    u = (x * np.cos(a) + y * np.sin(a)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
    v = (-x * np.sin(a) + y * np.cos(a)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
    if style.texture == 'stripes':
        pattern = np.sin(u) > 0
    elif style.texture == 'checker':
        pattern = np.sin(u) * np.sin(v) > 0
    elif style.texture == 'dots':
        pattern = (np.cos(u) + np.cos(v)) < 1.0   # primary field with secondary dots
    elif style.texture == 'waves':
        pattern = 0.5 + 0.5 * np.sin(u + 1.5 * np.sin(v / 2))
    elif style.texture == 'blotches':
        pattern = smooth_noise(size_hw, period, rng) > -0.1
    else:
        raise ValueError(f'unknown texture {style.texture!r}; expected one of {TEXTURES}')
    return pattern.astype(np.float32)


def object_appearance(style: ClassStyle, size_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """H×W×3 float RGB of one instance: palette jitter, texture, a lighting gradient."""
    h, w = size_hw
    jitter = rng.uniform(0.88, 1.12, 3)
    primary = np.array(style.primary) * jitter
    secondary = np.array(style.secondary) * jitter
    mix = texture_pattern(style, size_hw, rng)[..., None]
    rgb = mix * primary + (1 - mix) * secondary
    gy, gx = rng.uniform(-0.25, 0.25, 2)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 + gy * (y / h - 0.5) + gx * (x / w - 0.5)
    return rgb * light[..., None]


def background(size_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Cluttered H×W×3 float RGB background: desaturated multi-scale noise plus faint clutter
    (lines, boxes, discs) that belongs to no class."""
    h, w = size_hw
    base = np.array(hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.2), rng.uniform(0.35, 0.7)))
    tone = sum(smooth_noise(size_hw, s, rng) * a for s, a in ((40, 0.25), (12, 0.12), (4, 0.06)))
    img = base * (1 + tone[..., None])
    for _ in range(rng.integers(6, 14)):
        grey = rng.uniform(40, 220)
        colour = tuple(float(grey * f) for f in rng.uniform(0.85, 1.15, 3))
        kind = rng.integers(3)
        p = rng.uniform([0, 0], [w, h]).astype(int)
        if kind == 0:
            q = rng.uniform([0, 0], [w, h]).astype(int)
            cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), colour, int(rng.integers(1, 4)))
        elif kind == 1:
            q = p + rng.integers(5, 25, 2)
            cv2.rectangle(img, tuple(map(int, p)), tuple(map(int, q)), colour, int(rng.choice([-1, 1, 2])))
        else:
            cv2.circle(img, tuple(map(int, p)), int(rng.integers(3, 12)), colour, int(rng.choice([-1, 1, 2])))
    return img


# ---------------------------------------------------------------- scenes

def ignore_band(label: np.ndarray) -> np.ndarray:
    """Mark with 255 every pixel whose 3×3 neighbourhood holds more than one label value
    (the VOC convention of an uncertain band along object boundaries)."""
    kernel = np.ones((3, 3), np.uint8)
    band = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    out = label.copy()
    out[band] = IGNORE_LABEL
    return out


def place_object(style: ClassStyle, size_hw: tuple[int, int], area: float, placed: Sequence[np.ndarray],
                 rng: np.random.Generator, attempts: int = 30) -> np.ndarray:
    """Mask of a new instance that keeps MIN_GAP pixels away from the placed ones; if no try
    manages that, the try that overlaps them least while leaving each of them (and itself)
    MIN_VISIBLE pixels. Separate objects keep the frozen backbone's wide receptive fields
    from mixing the appearance of neighbouring classes."""
    taken = np.zeros(size_hw, bool)
    for m in placed:
        taken |= m
    taken = cv2.dilate(taken.astype(np.uint8), np.ones((2 * MIN_GAP + 1,) * 2, np.uint8)) > 0
    best, best_overlap = None, None
    for _ in range(attempts):
        mask = shape_mask(style, size_hw, area, rng)
        if mask.sum() < MIN_VISIBLE or any((m & ~mask).sum() < MIN_VISIBLE for m in placed):
            continue
        overlap = (mask & taken).sum()
        if overlap == 0:
            return mask
        if best is None or overlap < best_overlap:
            best, best_overlap = mask, overlap
    return best if best is not None else mask


def render_scene(rng: np.random.Generator, styles: Sequence[ClassStyle] | None = None,
                 first_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label: 2-3 objects of distinct classes on a cluttered background;
    `first_class` (1..20), if given, is one of them. Returns (H×W×3 uint8 RGB, H×W uint8 label
    with 0 / class id / 255)."""
    styles = styles or class_styles()
    h, w = int(rng.integers(IMAGE_H[0], IMAGE_H[1] + 1)), int(rng.integers(IMAGE_W[0], IMAGE_W[1] + 1))
    img = background((h, w), rng)
    label = np.zeros((h, w), np.uint8)
    n_objects = int(rng.integers(2, 4))
    if first_class is None:
        classes = rng.choice(NUM_CLASSES, n_objects, replace=False) + 1
    else:
        others = [c for c in range(1, NUM_CLASSES + 1) if c != first_class]
        classes = [first_class, *rng.choice(others, n_objects - 1, replace=False)]
    placed = []
    for c in classes:
        style = styles[c - 1]
        area = rng.uniform(*OBJECT_AREA) * h * w * (1.4 if n_objects == 2 else 1.0)
        mask = place_object(style, (h, w), area, placed, rng)
        placed = [m & ~mask for m in placed] + [mask]
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)[..., None]   # soft edge
        img = alpha * object_appearance(style, (h, w), rng) + (1 - alpha) * img
        label[mask] = c
    img = img + rng.normal(0, 4, img.shape)   # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8), ignore_band(label)


def scene(seed: int, split: str, index: int,
          styles: Sequence[ClassStyle] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image `index` of a split, a function of (seed, split, index) only. Image i shows class
    i mod 20 (+1) among its random others: every run of 20 images shows every class, so even
    short lists cover all folds."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], index]))
    return render_scene(rng, styles, first_class=index % NUM_CLASSES + 1)


MANIFEST = 'benchmark.json'
# What a benchmark's root holds: its folders of images and labels (files named by `file_name`),
# its lists and MANIFEST; nothing else is the generator's.
FOLDERS = {'JPEGImages': 'jpg', 'SegmentationClassAug': 'png'}
GENERATED_NAME = re.compile(r'^syn_(train|val)_\d{5}\.(jpg|png)$')


def file_name(split: str, index: int, folder: str) -> str:
    return f'{folder}/syn_{split}_{index:05d}.{FOLDERS[folder]}'


def write_benchmark(root: str, seed: int = 0, n_train: int = TRAIN_IMAGES, n_val: int = VAL_IMAGES,
                    size: tuple[int, int] | None = None, processes: int = 1,
                    overwrite: bool = False) -> dict[str, str]:
    """Write the benchmark under root in the PASCAL layout:
        JPEGImages/<name>.jpg, SegmentationClassAug/<name>.png,
        synthetic_train.txt, synthetic_val.txt, benchmark.json (what was generated)
    List lines read "JPEGImages/<name>.jpg SegmentationClassAug/<name>.png" (paths relative to
    root), like the PASCAL-5i lists; the list names differ from PASCAL's so that the list caches
    under lists/pascal/ never mix the two. `size` (h, w): every image and label resized to it
    (e.g. VOC's typical 375×500 for loading benchmarks). `processes` > 1 draws the images in
    that many processes (the same files: an image depends on its index only). A root
    holding this very benchmark is left as it is; one holding another benchmark (other seed,
    counts or size), or files that are not the generator's, is refused (FileExistsError) unless
    `overwrite`, which first deletes the generator's files of the other benchmark (its images
    would otherwise stay behind, unlisted) and leaves the other files alone. Returns
    {'train': path, 'val': path} of the lists."""
    if n_train < 1 or n_val < 1:
        raise ValueError(f'n_train and n_val must be positive, got {n_train} and {n_val}')
    wanted = manifest(seed, n_train, n_val, size)
    lists = {split: os.path.join(root, SYNTHETIC_LISTS[split]) for split in SYNTHETIC_LISTS}
    make_folder(root, 'benchmark root')
    if _read_manifest(root) == wanted:
        return lists
    _clear_for(root, wanted, overwrite)
    jobs = {split: [(root, seed, split, i, size) for i in range(count)]
            for split, count in (('train', n_train), ('val', n_val))}
    with _mapper(processes) as map_lines:
        for split, split_jobs in jobs.items():
            lines = progress(map_lines(write_scene, split_jobs), total=len(split_jobs),
                             desc=f'{split} images', unit='image')
            write_atomic(lists[split], ''.join(lines))
    write_json(os.path.join(root, MANIFEST), wanted)
    return lists


def write_scene(root: str, seed: int, split: str, index: int, size: tuple[int, int] | None = None) -> str:
    """Write image `index` of a split and its label under root; returns its list line."""
    image, label = scene(seed, split, index, _STYLES)
    if size is not None:
        image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size[::-1], interpolation=cv2.INTER_NEAREST)
    jpg, png = (file_name(split, index, folder) for folder in FOLDERS)
    write_image(os.path.join(root, jpg), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95])
    write_image(os.path.join(root, png), label)
    return f'{jpg} {png}\n'


@contextlib.contextmanager
def _mapper(processes):
    """map(function, argument tuples) → an iterator of the results in order: here, or over
    `processes` spawned processes. Spawned, not forked: a fork copies the locks other threads of
    the caller hold (a progress bar's monitor, a test runner's), and a pool forked at such a
    moment waited forever."""
    if processes <= 1:
        yield lambda function, jobs: (function(*job) for job in jobs)
        return
    context = multiprocessing.get_context('spawn')
    # one OpenCV thread each: the processes share the cores
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context,
                                                initializer=cv2.setNumThreads,
                                                initargs=(1,)) as pool:
        yield lambda function, jobs: pool.map(function, *zip(*jobs), chunksize=16)


def _read_manifest(root):
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _clear_for(root, wanted, overwrite):
    """Make `root` ready for the benchmark `wanted`: refuse (unless `overwrite`) one holding
    another benchmark or files that are not the generator's; then delete the generator's files
    there (another benchmark's, or a half-written one's), so that none is left unlisted."""
    generated, foreign = [], []
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry in FOLDERS and os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                ours = GENERATED_NAME.match(temporary_target(name) or name)
                (generated if ours else foreign).append(os.path.join(path, name))
        elif (temporary_target(entry) or entry) in (MANIFEST, *SYNTHETIC_LISTS.values()):
            generated.append(path)
        else:
            foreign.append(path)
    existing = _read_manifest(root)
    if not overwrite:
        if existing is not None:
            raise FileExistsError(
                f'{root} holds another synthetic benchmark ({describe(existing)}); writing '
                f'{describe(wanted)} would replace its images under every checkpoint, report '
                'and manifest made from it: give another --root, or --overwrite to replace it')
        if foreign:
            raise FileExistsError(
                f'{root} holds files that are not a synthetic benchmark ({len(foreign)}, e.g. '
                f'{foreign[0]}): give an empty or new --root, or --overwrite to write the '
                'benchmark beside them')
    for path in generated:
        os.remove(path)


def describe(benchmark: Mapping[str, Any]) -> str:
    """'seed 0, 2000 + 500 images' of a manifest."""
    size = f', resized to {benchmark["size"][0]}×{benchmark["size"][1]}' if 'size' in benchmark else ''
    return (f'seed {benchmark.get("seed")}, {benchmark.get("train")} + {benchmark.get("val")} '
            f'images{size}')


def manifest(seed: int, n_train: int, n_val: int,
             size: tuple[int, int] | None = None) -> dict[str, int | list[int]]:
    """What a generated copy holds; equal manifests mean identical files."""
    resized = {'size': list(size)} if size is not None else {}
    return {'generator': GENERATOR_VERSION, 'seed': seed, 'train': n_train, 'val': n_val, **resized}


def is_generated(root: str, seed: int, n_train: int, n_val: int) -> bool:
    """Whether root already holds exactly this benchmark (so it need not be written again)."""
    return _read_manifest(root) == manifest(seed, n_train, n_val)
