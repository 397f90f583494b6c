"""Reading and writing images and label maps, with errors that name the file.

Label maps are single-channel 8-bit images of class ids: 0 background, 1..N the classes, and
IGNORE_LABEL (255) for pixels no metric or loss counts (VOC's object borders, padding).

A truncated JPEG or PNG decodes without an error (libjpeg fills the missing rows with grey and
only warns, naming no file), so the bytes are checked first: a JPEG must end with its
end-of-image marker after the last scan, a PNG must reach its IEND chunk.
"""
import os
import struct
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from util.cli import TOOLS
from util.files.inputs import require_file
from util.files.writer import write_atomic

IGNORE_LABEL = 255
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SIGNATURE = b'\xff\xd8\xff'
JPEG_START_OF_SCAN, JPEG_END_OF_IMAGE = b'\xff\xda', b'\xff\xd9'


class BadFileError(ValueError):
    """A data file that exists but cannot be used (unreadable, wrong size or values). The
    message starts with the path; `path` holds it when known (an error re-raised by a DataLoader
    worker is rebuilt from the message alone)."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path

    def __reduce__(self):      # pickled across processes (multiprocessing pools) with its path
        return type(self), (str(self), self.path)


def bad_file(path: str, problem: str) -> BadFileError:
    return BadFileError(f'{path}: {problem}', path)


def support_mask_problem(foreground: np.ndarray) -> str | None:
    """The one rule for support masks (an H×W bool or 0/1 array of the foreground as read):
    a mask without a foreground pixel shows nothing to segment. Returns why (a phrase following
    the mask's name), or None. predict_sccan.py and the app refuse such a support, the folder
    data set refuses it, PATNet's benchmarks score it as their protocol draws it with a warning,
    and tools/check_data.py reports it (kind `empty`); PASCAL and COCO supports cannot be empty
    (a support shows at least 2,048 pixels of its class)."""
    return None if np.any(foreground) else 'has no foreground pixels: a support must show its object'


def png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) of each complete chunk of PNG bytes, in order."""
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        if pos + 12 + length > len(data):
            return
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length        # length, type, body, CRC


def truncation(data: bytes) -> str | None:
    """Why JPEG or PNG bytes are cut short (a sentence), or None when they are complete or of
    another format."""
    if data.startswith(JPEG_SIGNATURE):
        # the entropy-coded data never holds FFD9, and an EXIF thumbnail's comes before the scans
        last_scan = data.rfind(JPEG_START_OF_SCAN)
        if last_scan < 0 or data.rfind(JPEG_END_OF_IMAGE) < last_scan:
            return 'truncated or corrupt JPEG: no end-of-image marker after its image data'
    elif data.startswith(PNG_SIGNATURE):
        if not any(kind == b'IEND' for kind, _ in png_chunks(data)):
            return 'truncated or corrupt PNG: its chunks end before the IEND chunk'
    return None


def read_bytes(path: str, what: str = 'file') -> bytes:
    """The content of an image file, checked to be complete (`truncation`)."""
    require_file(path, what)
    with open(path, 'rb') as f:
        data = f.read()
    if not data:
        raise bad_file(path, f'{what} file is empty')
    problem = truncation(data)
    if problem:
        raise bad_file(path, problem)
    return data


def decode(data: bytes, path: str, flags: int = cv2.IMREAD_COLOR, what: str = 'an image') -> np.ndarray:
    """cv2.imdecode of a file's bytes (read_bytes); BadFileError naming the file if it fails."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        image = None
    if image is None:
        raise bad_file(path, f'cannot be decoded as {what}')
    return image


def read_image(path: str) -> np.ndarray:
    """RGB image as float32 H×W×3 (values 0..255), as the transforms expect."""
    image = decode(read_bytes(path, 'image'), path, cv2.IMREAD_COLOR, 'an image')
    return np.float32(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def read_label(path: str) -> np.ndarray:
    """Label map as uint8 H×W of class ids (0 background, 255 ignore). Only single-channel 8-bit
    PNGs are accepted: a colour (e.g. VOC palette) PNG would silently turn into grey levels."""
    label = decode(read_bytes(path, 'label'), path, cv2.IMREAD_UNCHANGED, 'a label image')
    if label.ndim != 2 or label.dtype != np.uint8:
        raise bad_file(path, f'label must be a single-channel 8-bit image of class ids, got '
                             f'shape {label.shape} {label.dtype} (a colour/palette PNG? convert '
                             f'it with {TOOLS["prepare_pascal"]} or {TOOLS["prepare_coco"]})')
    return label


def read_rgb(path: str) -> np.ndarray:
    """H×W×3 uint8 RGB of an image file (grayscale and alpha files converted)."""
    return read_image(path).astype(np.uint8)


def read_mask(path: str) -> np.ndarray:
    """H×W mask array of a support-mask file, as predict_sccan.py and the browser app read it:
    bool for palette PNGs (index not in {0, 255}) and for JPEGs (>= 128: lossy compression
    turns a black-and-white mask into many grey levels, which are not classes), else the grey
    values for util.prediction.predictor's mask rule (foreground_of). Colour masks give their
    brightest channel; a mask whose colours are all the same but whose transparency varies (a
    cut-out) gives its alpha channel."""
    data = read_bytes(path, 'mask')
    palette = png_palette(data)
    mask = decode(data, path, cv2.IMREAD_COLOR if palette is not None else cv2.IMREAD_UNCHANGED,
                  'a mask image')
    if palette is not None:
        index = palette_index(mask[:, :, ::-1], palette, path)
        return (index != 0) & (index != IGNORE_LABEL)
    grey = mask[:, :, :3].max(axis=2) if mask.ndim == 3 else mask
    if mask.ndim == 3 and mask.shape[2] == 4 and grey.min() == grey.max():
        alpha = mask[:, :, 3]
        if alpha.min() != alpha.max():
            return alpha
    if data.startswith(JPEG_SIGNATURE):
        return grey >= 128
    return grey


def png_palette(data: bytes) -> np.ndarray | None:
    """The PLTE colours (N×3 RGB) of indexed-colour PNG bytes; None for any other file."""
    colour_type = None
    for kind, body in png_chunks(data):
        if kind == b'IHDR':
            colour_type = body[9]
        elif kind == b'PLTE' and colour_type == 3:
            return np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b'IDAT':
            return None
    return None


def colour_codes(rgb: np.ndarray | Sequence[int]) -> np.ndarray:
    """…×3 colours (an array, or one triple) → … int32 packing the three channels in order
    into one number."""
    rgb = np.asarray(rgb).astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def palette_index(rgb: np.ndarray, palette: np.ndarray, path: str) -> np.ndarray:
    """Palette indices back from the colours OpenCV expands a palette PNG to. A colour listed
    twice maps to its first index."""
    codes = colour_codes(rgb)
    known, first = np.unique(colour_codes(palette), return_index=True)
    pos = np.clip(np.searchsorted(known, codes), 0, len(known) - 1)
    if (known[pos] != codes).any():
        raise BadFileError(f'{path}: pixel colours not in its palette; cannot recover the '
                           'indices', path)
    return first[pos]


def read_pair(image_path: str, label_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) of one list line, checked to have the same height and width."""
    image, label = read_image(image_path), read_label(label_path)
    if image.shape[:2] != label.shape:
        raise bad_file(label_path, f'label size {label.shape[0]}x{label.shape[1]} differs '
                                   f'from image {image_path} size '
                                   f'{image.shape[0]}x{image.shape[1]}')
    return image, label


def check_label_values(label: np.ndarray, path: str, num_classes: int, ignore: int = IGNORE_LABEL) -> None:
    """Raise BadFileError when the label holds values other than 0..num_classes and `ignore`."""
    values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = [int(v) for v in values if v > num_classes and v != ignore]
    if bad:
        raise bad_file(path, f'label values {bad} outside the classes 0..{num_classes} '
                             f'and {ignore} (ignore)')


def write_image(path: str, image: np.ndarray, params: Sequence[int] = ()) -> str:
    """Write an H×W (grey or label) or H×W×3 BGR uint8 image (format by extension), creating its
    folder, atomically (a failed write leaves no partial file); OSError naming the file when it
    cannot be written (cv2.imwrite only returns False)."""
    extension = os.path.splitext(path)[1]
    try:
        encoded, data = cv2.imencode(extension, np.ascontiguousarray(image), list(params))
    except cv2.error:
        encoded = False
    if not encoded:
        raise OSError(f'cannot write {path}: OpenCV cannot encode a {np.asarray(image).dtype} '
                      f'image of shape {np.shape(image)} as {extension or "(no extension)"}')
    # no fsync: a data set's thousands of labels can be written again (tools/check_data.py finds
    # a damaged one)
    return write_atomic(path, data.tobytes(), sync=False)
