"""Segment your own images with a trained SCCAN: 1..K annotated supports, any number of queries.

    python predict_sccan.py --weight best.pth --support cat1.jpg cat1.png --support cat2.jpg \
        cat2.png --query a.jpg b.jpg --out predictions/

For each query, writes <out>/<name>_mask.png (0/255, the query's size) and <out>/<name>_overlay.png
(the query with its mask outlined; the supports with theirs as thumbnails on the right) and prints
the foreground fraction. The supports are encoded once for all queries.

Mask files: palette PNGs (VOC style) count every index except 0 (background) and 255 (ignore) as
foreground; JPEG masks (lossy: their grey levels are noise) are >= 128; other files follow
util.prediction.predictor.MASK_RULE ({0,1}: 1; otherwise >= 128), colour masks by their brightest
channel, and a cut-out (one colour, varying transparency) by its alpha channel; a mask that is
(almost) all foreground or looks like a class-id label map gives a warning.
No output is ever written over an input, nor over an existing file without --overwrite. Bad
input ends with one line `error: ...` and exit status 2; a query that fails is reported on its
own line and the others are still segmented (exit status 2 at the end).
"""
import os
import sys

from util.cli import ArgumentParser, error_line, positive_int, run_main
from util.files.checks import check_outputs, unique_stems
from util.files.image_io import read_mask, read_rgb
from util.files.inputs import require_file
from util.prediction.predictor import FewShotSegmenter
from util.prediction.segment_files import encode_with_notes, foreground_words, segment_file


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--weight', required=True, help='SCCAN checkpoint (ours or the authors\')')
    p.add_argument('--support', nargs=2, action='append', required=True, metavar=('IMG', 'MASK'),
                   help='a support image and its mask; repeat for K shots')
    p.add_argument('--query', nargs='+', required=True, metavar='IMG', help='images to segment')
    p.add_argument('--out', required=True, help='output folder (created if missing)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace outputs that exist already (never an input)')
    p.add_argument('--layers', type=int, choices=(50, 101), default=None,
                   help='backbone depth; default: read from the checkpoint')
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    p.add_argument('--val-size', type=positive_int, default=None,
                   help='canvas side the images are resized/padded to; default: the '
                        "checkpoint's val_size, else 473")
    return p.parse_args(argv)


def main(argv=None):
    """Segment the queries; returns the exit status (0, or 2 when a query failed). Errors that
    stop everything (bad supports, checkpoint, outputs) are raised before anything is written."""
    args = parse_args(argv)
    for image, mask in args.support:
        require_file(image, 'support image')
        require_file(mask, 'support mask')
    for path in args.query:
        require_file(path, 'query image')
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f'--out {args.out} exists and is not a folder')
    outputs = [(path, os.path.join(args.out, name + '_mask.png'),
                os.path.join(args.out, name + '_overlay.png'))
               for path, name in zip(args.query, unique_stems(args.query))]
    inputs = [args.weight, *(p for pair in args.support for p in pair), *args.query]
    check_outputs([p for _, *written in outputs for p in written], inputs, args.overwrite)
    images = [read_rgb(img) for img, _ in args.support]
    masks = [read_mask(mask) for _, mask in args.support]

    seg = FewShotSegmenter.from_checkpoint(args.weight, layers=args.layers, device=args.device,
                                           val_size=args.val_size)
    support, notes = encode_with_notes(seg, images, masks, args.support, args.weight)
    for note in notes:
        print(note, file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    failed = 0
    for path, mask_path, overlay_path in outputs:
        try:
            mask = segment_file(seg, support, path, mask_path, overlay_path)
        except (ValueError, OSError) as e:      # the next query may be fine
            print(f'error: {error_line(e)}', file=sys.stderr)
            failed += 1
            continue
        print(f'{path}: {foreground_words(mask)} -> {mask_path}, {overlay_path}')
    return 2 if failed else 0


if __name__ == '__main__':
    sys.exit(run_main(main))
