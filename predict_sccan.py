"""Segment your own images with a trained SCCAN: 1..K annotated supports, any number of queries.

    python predict_sccan.py --weight best.pth --support cat1.jpg cat1.png --support cat2.jpg \
        cat2.png --query a.jpg b.jpg --out predictions/

For each query, writes <out>/<name>_mask.png (0/255, the query's size) and <out>/<name>_overlay.png
(the query with its mask tinted; the supports with theirs as thumbnails on the right) and prints
the foreground fraction. The supports are encoded once for all queries.

Mask files: palette PNGs (VOC style) count every index except 0 (background) and 255 (ignore) as
foreground; other files follow util.predictor.MASK_RULE ({0,1}: 1; otherwise >= 128), colour
masks by their brightest channel.
Bad input ends with one line `error: ...` and exit status 2.
"""
import argparse
import os
import struct
import sys

import cv2
import numpy as np

from util.image_io import IGNORE_LABEL, BadFileError, read_image, require_file, write_image
from util.predictor import FewShotSegmenter, to_mask
from util.visualize import prediction_overlay, write_rgb

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--weight', required=True, help='SCCAN checkpoint (ours or the authors\')')
    p.add_argument('--support', nargs=2, action='append', required=True, metavar=('IMG', 'MASK'),
                   help='a support image and its mask; repeat for K shots')
    p.add_argument('--query', nargs='+', required=True, metavar='IMG', help='images to segment')
    p.add_argument('--out', required=True, help='output folder (created if missing)')
    p.add_argument('--layers', type=int, choices=(50, 101), default=None,
                   help='backbone depth; default: read from the checkpoint')
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--val-size', type=int, default=None,
                   help='canvas side the images are resized/padded to; default: the '
                        "checkpoint's val_size, else 473")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        predict(args)
    except (ValueError, OSError) as e:      # model.CheckpointError is a ValueError
        print(f'error: {one_line(str(e))}', file=sys.stderr)
        return 2
    return 0


def one_line(message):
    """Multi-line messages (e.g. key lists of a checkpoint that does not fit) joined by '; '."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    joined = lines[0] if lines else ''
    for line in lines[1:]:
        joined += (' ' if joined.endswith(':') else '; ') + line
    return joined


def predict(args):
    for path in args.query:        # fail before loading anything
        require_file(path, 'query image')
    images = [read_rgb(img) for img, _ in args.support]
    masks = [read_mask(mask) for _, mask in args.support]
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f'--out {args.out} exists and is not a folder')

    seg = FewShotSegmenter.from_checkpoint(args.weight, layers=args.layers, device=args.device,
                                           val_size=args.val_size)
    support = seg.encode_support(images, masks, names=args.support)
    if seg.trained_shot and seg.trained_shot != support.shot:
        print(f'note: {args.weight} was trained with {seg.trained_shot} shot(s); running it with '
              f'{support.shot} (SCCAN averages the shots, its weights do not depend on K)',
              file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    for path, name in zip(args.query, output_names(args.query)):
        query = read_rgb(path)
        mask = to_mask(seg.predict(support, query))                # H×W uint8, 1 = foreground
        mask_path = os.path.join(args.out, name + '_mask.png')
        write_image(mask_path, mask * 255)
        write_rgb(os.path.join(args.out, name + '_overlay.png'),
                  prediction_overlay(query, mask, support.images, support.foregrounds))
        print(f'{path}: foreground {mask.mean():.1%} -> {mask_path}')


# --- files ---------------------------------------------------------------------------------------
def read_rgb(path):
    """H×W×3 uint8 RGB of an image file (grayscale and alpha files converted)."""
    return read_image(path).astype(np.uint8)


def read_mask(path):
    """H×W mask array of a file: bool for palette PNGs (index not in {0, 255}), else the grey
    values (colour masks: brightest channel) for FewShotSegmenter's mask rule."""
    require_file(path, 'mask')
    palette = png_palette(path)
    mask = cv2.imread(path, cv2.IMREAD_COLOR if palette is not None else cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise BadFileError(path, 'cannot be decoded as a mask image')
    if palette is not None:
        index = palette_index(mask[:, :, ::-1], palette, path)
        return (index != 0) & (index != IGNORE_LABEL)
    return mask[:, :, :3].max(axis=2) if mask.ndim == 3 else mask


def png_palette(path):
    """The PLTE colours (N×3 RGB) of an indexed-colour PNG; None for any other file."""
    with open(path, 'rb') as f:
        data = f.read()
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos, colour_type = len(PNG_SIGNATURE), None
    while pos + 8 <= len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b'IHDR':
            colour_type = body[9]
        elif kind == b'PLTE' and colour_type == 3:
            return np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b'IDAT':
            return None
        pos += 12 + length        # length, type, body, CRC
    return None


def palette_index(rgb, palette, path):
    """Palette indices back from the colours OpenCV expands a palette PNG to. A colour listed
    twice maps to its first index."""
    codes = rgb.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1])
    known, first = np.unique(palette.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1]),
                             return_index=True)
    pos = np.clip(np.searchsorted(known, codes), 0, len(known) - 1)
    if (known[pos] != codes).any():
        raise BadFileError(path, 'pixel colours not in its palette; cannot recover the indices')
    return first[pos]


def output_names(paths):
    """File stems, made unique (a/x.jpg, b/x.jpg → x, x_1)."""
    names, seen = [], set()
    for path in paths:
        stem = name = os.path.splitext(os.path.basename(path))[0]
        n = 0
        while name in seen:
            n += 1
            name = f'{stem}_{n}'
        seen.add(name)
        names.append(name)
    return names


if __name__ == '__main__':
    sys.exit(main())
