"""Reading images and label maps with errors that name the file.

Label maps are single-channel 8-bit images of class ids: 0 background, 1..N the classes, and
IGNORE_LABEL (255) for pixels no metric or loss counts (VOC's object borders, padding).
"""
import os

import cv2
import numpy as np

IGNORE_LABEL = 255


class BadFileError(ValueError):
    """A data file that exists but cannot be used (unreadable, wrong size or values). The
    message starts with the path; `path` holds it when known (an error re-raised by a DataLoader
    worker is rebuilt from the message alone)."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


def bad_file(path, problem):
    return BadFileError(f'{path}: {problem}', path)


def require_file(path, what='file'):
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')


def read_image(path):
    """RGB image as float32 H×W×3 (values 0..255), as the transforms expect."""
    require_file(path, 'image')
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise bad_file(path, 'cannot be decoded as an image')
    return np.float32(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def read_label(path):
    """Label map as uint8 H×W of class ids (0 background, 255 ignore). Only single-channel 8-bit
    PNGs are accepted: a colour (e.g. VOC palette) PNG would silently turn into grey levels."""
    require_file(path, 'label')
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise bad_file(path, 'cannot be decoded as a label image')
    if label.ndim != 2 or label.dtype != np.uint8:
        raise bad_file(path, f'label must be a single-channel 8-bit image of class ids, got '
                             f'shape {label.shape} {label.dtype} (a colour/palette PNG? convert '
                             f'it with tools/prepare_pascal.py or tools/prepare_coco.py)')
    return label


def read_pair(image_path, label_path):
    """(image, label) of one list line, checked to have the same height and width."""
    image, label = read_image(image_path), read_label(label_path)
    if image.shape[:2] != label.shape:
        raise bad_file(label_path, f'label size {label.shape[0]}x{label.shape[1]} differs '
                                   f'from image {image_path} size '
                                   f'{image.shape[0]}x{image.shape[1]}')
    return image, label


def check_label_values(label, path, num_classes, ignore=IGNORE_LABEL):
    """Raise BadFileError when the label holds values other than 0..num_classes and `ignore`."""
    values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = [int(v) for v in values if v > num_classes and v != ignore]
    if bad:
        raise bad_file(path, f'label values {bad} outside the classes 0..{num_classes} '
                             f'and {ignore} (ignore)')


def write_image(path, image, params=()):
    """Write an H×W (grey or label) or H×W×3 BGR uint8 image, creating its folder; OSError naming
    the file when nothing could be written (cv2.imwrite only returns False)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(image), list(params)):
        raise OSError(f'cannot write {path} (is {folder} writable, with space left?)')
    return path
