"""What several test modules share (test modules never import each other): tiny data sets on
disk, small models and inputs, and checks of the command-line scripts.

Data sets. Tiny PASCAL-5i / COCO-20i data sets in the real formats.

`make_pascal(root)` writes root/JPEGImages/*.jpg, root/SegmentationClassAug/*.png (one byte per
pixel: 0 background, class id on the object, 255 on a 2-pixel band around it) and root/train.txt,
root/val.txt with lines "JPEGImages/x.jpg SegmentationClassAug/x.png" (the authors' format).
`make_coco(root)` writes root/{train2014,val2014}/*.jpg, root/annotations/{train2014,val2014}/*.png
(class ids 1..80) and the two lists with lines "train2014/x.jpg annotations/train2014/x.png".

Every image holds two objects (each >= 2,048 px at the default size) of two classes that are novel
in the same fold under every fold scheme, so no fold's training list loses an image to a novel
class, and with the default counts every class of every fold has >= 6 eligible images in both
lists: 1- and 5-shot episodes work for all folds. Image sizes vary a little (and are not square)
so size mistakes show. All functions return (data_root, train_list, val_list).
"""
import hashlib
import os
import struct
import zlib

import cv2
import numpy as np
import torch

from util.cli import run_main
from util.image_io import IGNORE_LABEL, write_image

BORDER = 2          # width of the 255 band around objects, as in VOC labels


def class_colour(c):
    """A fixed RGB colour per class id, so images carry their class."""
    rng = np.random.default_rng(1000 + c)
    return rng.integers(40, 256, size=3)


def second_class(c, num_classes):
    """The class sharing c's image: novel in the same fold as c under every fold scheme
    (PASCAL: same block of 5; COCO: same block of 20 and same id mod 4)."""
    if num_classes == 20:
        block, step = 5, 1
    else:
        block, step = 20, 4
    start = (c - 1) // block * block
    return start + ((c - 1 - start) + step) % block + 1


def draw_scene(classes, size, rng):
    """RGB uint8 image and uint8 label of `size` (h, w) with one rectangle-ish object per class:
    the first in the top-left quarter-and-more, the second in the bottom-right one."""
    h, w = size
    image = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
    label = np.zeros((h, w), np.uint8)
    boxes = [(0, 0), (h // 2, w // 2)]
    for c, (y0, x0) in zip(classes, boxes):
        y0 += BORDER + int(rng.integers(0, 3))
        x0 += BORDER + int(rng.integers(0, 3))
        y1, x1 = y0 + h // 2 - 2 * BORDER - 2, x0 + w // 2 - 2 * BORDER - 2
        band = np.zeros_like(label, dtype=bool)
        band[max(y0 - BORDER, 0):y1 + BORDER, max(x0 - BORDER, 0):x1 + BORDER] = True
        label[band & (label == 0)] = IGNORE_LABEL
        label[y0:y1, x0:x1] = c
        image[y0:y1, x0:x1] = class_colour(c) - rng.integers(0, 30, size=(y1 - y0, x1 - x0, 3))
    return image, label


def image_size(i, size):
    """Sizes vary with the index: +0/8/16 rows, +0/8 columns."""
    h, w = size
    return h + 8 * (i % 3), w + 8 * (i % 2)


def write_pair(data_root, image_rel, label_rel, image, label):
    write_image(os.path.join(data_root, image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    write_image(os.path.join(data_root, label_rel), label)


def write_list(path, pairs):
    with open(path, 'w') as f:
        f.writelines(f'{image} {label}\n' for image, label in pairs)
    return path


def make_split(data_root, n, num_classes, size, rng, name_pair, first_index=0):
    """n scenes; scene i holds classes (i mod num_classes)+1 and its second_class."""
    pairs = []
    for i in range(first_index, first_index + n):
        c = i % num_classes + 1
        image, label = draw_scene((c, second_class(c, num_classes)), image_size(i, size), rng)
        pair = name_pair(i)
        write_pair(data_root, *pair, image, label)
        pairs.append(pair)
    return pairs


def make_pascal(root, n_train=80, n_val=60, size=(112, 120), seed=0):
    """PASCAL-5i layout under root (= data_root). Defaults give each class 8 train and
    6 val images. Returns (data_root, train_list, val_list)."""
    rng = np.random.default_rng(seed)
    root = str(root)

    def name_pair(i):
        return f'JPEGImages/2008_{i:06d}.jpg', f'SegmentationClassAug/2008_{i:06d}.png'

    train = make_split(root, n_train, 20, size, rng, name_pair)
    val = make_split(root, n_val, 20, size, rng, name_pair, first_index=n_train)
    return (root, write_list(os.path.join(root, 'train.txt'), train),
            write_list(os.path.join(root, 'val.txt'), val))


def make_coco(root, n_train=240, n_val=240, size=(112, 120), seed=0):
    """COCO-20i layout under root (= data_root). Defaults give each class 6 images per list.
    Returns (data_root, train_list, val_list)."""
    rng = np.random.default_rng(seed)
    root = str(root)

    def namer(split):
        def name_pair(i):
            stem = f'COCO_{split}_{i:012d}'
            return f'{split}/{stem}.jpg', f'annotations/{split}/{stem}.png'
        return name_pair

    train = make_split(root, n_train, 80, size, rng, namer('train2014'))
    val = make_split(root, n_val, 80, size, rng, namer('val2014'), first_index=n_train)
    return (root, write_list(os.path.join(root, 'train.txt'), train),
            write_list(os.path.join(root, 'val.txt'), val))


def make_from_labels(root, labels, list_name='list.txt', folder='custom'):
    """A dataset of the given label maps (uint8 arrays): image k is the label's colour coding
    (class_colour per class) saved as JPEG. Returns (data_root, list_path, pairs)."""
    root = str(root)
    pairs = []
    for k, label in enumerate(labels):
        image = np.zeros(label.shape + (3,), np.uint8)
        for c in np.unique(label):
            image[label == c] = class_colour(int(c)) if c not in (0, IGNORE_LABEL) else 0
        pair = (f'{folder}/img_{k:04d}.jpg', f'{folder}/lab_{k:04d}.png')
        write_pair(root, *pair, image, np.asarray(label, np.uint8))
        pairs.append(pair)
    return root, write_list(os.path.join(root, list_name), pairs), pairs


def write_palette_png(path, indices, palette):
    """An 8-bit palette PNG (colour type 3), as VOC's SegmentationClass files are; OpenCV can
    read but not write those. indices: H×W uint8; palette: N×3 uint8 RGB."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack('>I', len(data)) + body + struct.pack('>I', zlib.crc32(body))

    h, w = indices.shape
    rows = b''.join(b'\x00' + np.ascontiguousarray(row, np.uint8).tobytes() for row in indices)
    png = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 3, 0, 0, 0)) +
           chunk(b'PLTE', np.asarray(palette, np.uint8).tobytes()) +
           chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(png)


def make_pascal_config(root, extra='', **sizes):
    """make_pascal data under root/data and a config file root/tiny.yaml pointing at it (lists
    cached in root/lists); `extra` is appended YAML. Returns the config path."""
    data_root, train_list, val_list = make_pascal(os.path.join(root, 'data'), **sizes)
    path = os.path.join(root, 'tiny.yaml')
    with open(path, 'w') as f:
        f.write(f'Data:\n  data_root: {data_root}\n  train_list: {train_list}\n'
                f'  val_list: {val_list}\n  list_dir: {os.path.join(root, "lists")}\n{extra}')
    return path


def random_episode(b=2, k=1, size=65, seed=0):
    """Model inputs (query, support, support_masks with ignore rows, query_mask) of random values."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, 3, size, size, generator=g)
    support = torch.randn(b, k, 3, size, size, generator=g)
    masks = (torch.rand(b, k, size, size, generator=g) > 0.6).float()
    masks[:, :, :4] = 255
    query_mask = (torch.rand(b, size, size, generator=g) > 0.5).float()
    return query, support, masks, query_mask


def without_dropout(net):
    """`net` with p = 0 on every dropout module, so that its training steps are deterministic."""
    for module in net.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    return net


# ---- command-line scripts: run in the test process; what they must leave ----
def run_cli(main, argv, capsys, *failures):
    """(exit status, stdout, stderr) of `main(argv)` run as its script's `__main__` runs it:
    through util.cli.run_main with `failures`."""
    try:
        result = run_main(lambda: main(argv), *failures)
    except SystemExit as e:
        result = e.code
    out, err = capsys.readouterr()
    return (result if isinstance(result, int) else 0), out, err


def assert_one_error(status, err, *needles):
    """Exit status 2 and, last on stderr (below any progress bar), exactly one line
    `error: ...` holding every needle; no traceback."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith('error: ')]
    assert status == 2 and errors and errors == lines[-1:] and 'Traceback' not in err, err
    assert all(needle in errors[0] for needle in needles), errors[0]


def files_below(folder):
    """{relative path: SHA-1 of the content} of every file below `folder`, to show that a run
    left them as they were."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, folder)] = hashlib.sha1(f.read()).hexdigest()
    return found
