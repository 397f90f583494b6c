"""The browser app's work, without the page: tools/app.py builds the page with Gradio and calls
these handlers, which need no Gradio (the tests call them directly).

A support slot of the page is an image file, the painting on it (Gradio ImageEditor's value: a
dict whose 'layers' are H×W×4 RGBA arrays; any painted pixel is foreground, or with the slot's
box option the box around them) and, optionally, a mask file, which replaces the painting and is
read as predict_sccan.py reads it. Query images are
files too, decoded as the command line decodes them, and each is segmented by the same function
(util.prediction.segment_files.segment_file), so the app's mask PNG is predict_sccan.py's, byte for
byte.

Handlers answer in words: a problem with the input comes back as an `error: ...` message for the
page (the app keeps running). Everything they write goes below the app's own folder `workdir`.
"""
import dataclasses
import glob
import hashlib
import io
import os
import re
import zipfile
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from util.cli import error_line
from util.datasets import SYNTHETIC_LISTS
from util.files.checks import unique_stems
from util.files.image_io import read_bytes, read_label, read_mask, read_rgb, write_image
from util.files.inputs import require_file
from util.files.writer import write_atomic
from util.lists import read_list
from util.prediction.predictor import (EncodedSupport, FewShotSegmenter, check_same_size,
                                       foreground_of)
from util.prediction.segment_files import encode_with_notes, foreground_words, segment_file
from util.prediction.visualize import NOTHING_PREDICTED, SUPPORT_COLOUR, outline

MAX_SUPPORTS = 5
# The synthetic example's class: green checkered rectangles, novel in fold 0 (the demo's model never
# trained on it).
EXAMPLE_CLASS = 2
# The longer side of the pictures the page shows (a huge query's overlay is scaled down to it;
# its mask keeps the query's size).
SHOWN_SIDE = 1280


@dataclasses.dataclass
class SupportSlot:
    """One support as the page holds it; all None when the slot is unused."""
    image: Optional[str] = None        # path of the uploaded image file
    painting: Optional[dict] = None    # the ImageEditor's value (see the module docstring)
    mask: Optional[str] = None         # path of an uploaded mask file; wins over the painting
    box: bool = False                  # the mask is the box around the painted pixels


@dataclasses.dataclass
class RunResult:
    """What a run shows: messages (one per line), the overlays to look at and the files to
    download."""
    messages: str
    overlays: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (PNG, caption)
    downloads: List[str] = dataclasses.field(default_factory=list)   # mask PNGs, then the zip


def find_checkpoints(exp_root: str) -> List[str]:
    """The checkpoints of the training runs below exp_root (their snapshot/ folders, as
    train_sccan.py writes them), newest first."""
    pattern = os.path.join(glob.escape(exp_root), '**', 'snapshot', '*.pth')
    return sorted(glob.glob(pattern, recursive=True), key=os.path.getmtime, reverse=True)


def paint(slot: SupportSlot) -> Optional[np.ndarray]:
    """H×W bool of the pixels painted on any layer of the slot's painting (alpha > 0), or with
    slot.box the smallest box holding them all; None when nothing is painted."""
    layers = [np.asarray(layer) for layer in (slot.painting or {}).get('layers') or []]
    painted = [layer[:, :, 3] > 0 for layer in layers if layer.ndim == 3 and layer.shape[2] == 4]
    if not any(p.any() for p in painted):
        return None
    mask = np.logical_or.reduce(painted)
    if slot.box:
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        mask[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1] = True
    return mask


def painted_mask(number: int, slot: SupportSlot) -> np.ndarray:
    """The slot's paint (paint); ValueError when nothing is painted."""
    mask = paint(slot)
    if mask is None:
        raise ValueError(f'support {number}: empty mask: paint the object on the image with the '
                         'brush, or upload its mask file')
    return mask


def slot_names(number: int, slot: SupportSlot) -> Tuple[str, str]:
    """How messages call a slot's image and mask: 'support 2 image cat.jpg', 'support 2 mask
    cat.png' (or '(painted)')."""
    mask = os.path.basename(slot.mask) if slot.mask else '(painted)'
    return (f'support {number} image {os.path.basename(slot.image or "")}',
            f'support {number} mask {mask}')


def _note(slot: SupportSlot, rgb: np.ndarray, foreground: Optional[np.ndarray]) -> str:
    """A slot's note, given its image and the foreground of its mask file (None without)."""
    if foreground is not None:
        return (f'mask from {os.path.basename(slot.mask)}: {foreground.mean():.1%} of the image '
                '(outlined in blue; remove the mask file to paint instead).')
    painted = paint(slot)
    if painted is not None:
        box = ' (the box around the paint)' if slot.box else ''
        return f'painted: {painted.mean():.1%} of the image{box}.'
    return (f'{rgb.shape[0]}×{rgb.shape[1]} image: paint the object with the brush, or upload its '
            'mask file.')


def no_progress(fraction: float, desc: Optional[str] = None) -> None:
    """The progress callback when nobody is watching."""


class SegmentationApp:
    """The app's state between requests: the last checkpoint loaded and the last supports
    encoded (reused while they do not change), and its folder.

    Args:
        workdir: the app's own temporary folder; results go below it.
        device: 'auto', 'cpu' or 'cuda', as predict_sccan.py --device.
    """

    def __init__(self, workdir: str, device: str = 'auto'):
        self.workdir = workdir
        self.device = device
        self._loaded = None        # (checkpoint key, FewShotSegmenter)
        self._encoded = None       # (supports key, EncodedSupport, notes)
        self._runs = 0

    # --- handlers ---------------------------------------------------------------------------
    def show_support(self, number: int, image: Optional[str],
                     mask: Optional[str]) -> Tuple[Optional[dict], str]:
        """What the page shows when support `number`'s image or mask file changes: the
        ImageEditor's new value (the image to paint on, with a mask file's foreground outlined
        as the overlays draw supports) and the slot's note (slot_note)."""
        slot = SupportSlot(image, None, mask)
        if not image:
            return None, self.slot_note(number, slot)
        try:
            rgb, foreground = self._read_slot(number, slot)
        except (ValueError, OSError) as e:
            return None, self._shown(f'error: {error_line(e)}')
        shown = rgb if foreground is None else outline(rgb, foreground, SUPPORT_COLOUR)
        return {'background': shown, 'layers': [], 'composite': shown}, _note(slot, rgb, foreground)

    def slot_note(self, number: int, slot: SupportSlot) -> str:
        """The note under support `number`, again whenever its painting changes: how much of the
        image its mask covers (a mask file's, else the paint's), or what to do next."""
        if not slot.image:
            return ('error: upload the image of this mask first' if slot.mask else
                    'Upload an image, then paint the object on it (or upload its mask).')
        try:
            return _note(slot, *self._read_slot(number, slot))
        except (ValueError, OSError) as e:
            return self._shown(f'error: {error_line(e)}')

    def run(self, checkpoint: Optional[str], slots: Sequence[SupportSlot],
            queries: Optional[Sequence[str]], progress: Callable = no_progress) -> RunResult:
        """Segment every query with the supports given; a query that fails is reported and the
        others are still segmented. `progress(fraction, desc=...)` hears how far it is.

        Downloads: each query's mask, then a zip of them with the support masks as used
        (supports/support<k>_mask.png, 0/255), with which predict_sccan.py gives the same masks.
        """
        try:
            checkpoint, supports = self._check_inputs(checkpoint, slots, queries)
            progress(0.0, desc='loading the checkpoint')
            seg = self._segmenter(checkpoint)
            progress(0.05, desc='encoding the supports')
            support, notes = self._encode(seg, supports, checkpoint)
        except (ValueError, OSError) as e:
            return RunResult(self._shown(f'error: {error_line(e)}'))
        self._runs += 1
        folder = os.path.join(self.workdir, 'results', f'run{self._runs}')
        result = RunResult('')
        lines = list(notes)
        names = unique_stems([os.path.basename(q) for q in queries])
        for i, (query, name) in enumerate(zip(queries, names)):
            progress(0.1 + 0.9 * i / len(queries), desc=f'query {i + 1} of {len(queries)}')
            paths = [os.path.join(folder, f'{name}_{kind}.png') for kind in ('mask', 'overlay')]
            try:
                mask = segment_file(seg, support, query, *paths, overlay_side=SHOWN_SIDE)
            except (ValueError, OSError) as e:      # the next query may be fine
                lines.append(self._shown(f'error: {error_line(e)}'))
                continue
            lines.append(f'{os.path.basename(query)}: {foreground_words(mask)}')
            result.overlays.append((paths[1], os.path.basename(query) +
                                    ('' if mask.any() else f': {NOTHING_PREDICTED}')))
            result.downloads.append(paths[0])
        if result.downloads:
            used = [write_image(os.path.join(folder, 'supports', f'support{k}_mask.png'),
                                fg.astype(np.uint8) * 255)
                    for (k, _), fg in zip(supports, support.foregrounds)]
            result.downloads.append(zip_files(result.downloads + used, folder,
                                              os.path.join(folder, 'sccan_masks.zip')))
        lines.insert(0, f'{segmented(len(result.overlays), len(queries))} with '
                        f'{os.path.basename(checkpoint)} and {count(support.shot, "support")}.')
        result.messages = '\n'.join(lines)
        return result

    def synthetic_example(self, data_root: str, queries: int = 2) -> Tuple[str, str, List[str]]:
        """A ready example from the synthetic benchmark (`make demo` writes it in data_root): the
        first validation image holding EXAMPLE_CLASS as the support, its mask as a 0/255 PNG,
        and the next `queries` images holding that class. Copies go to the app's folder.

        Returns:
            (support image, support mask, query images), paths below workdir.
        """
        target = EXAMPLE_CLASS
        found = []
        for image, label in read_list(os.path.join(data_root, SYNTHETIC_LISTS['val'])):
            foreground = read_label(os.path.join(data_root, label)) == target
            if foreground.mean() >= 0.05:             # a clearly visible object
                found.append((os.path.join(data_root, image), foreground))
            if len(found) == queries + 1:
                break
        else:
            raise ValueError(f'{data_root}: fewer than {queries + 1} validation images show '
                             f'class {target}; run `make demo` to write the synthetic benchmark')
        folder = os.path.join(self.workdir, 'example')
        copies = [write_atomic(os.path.join(folder, os.path.basename(path)), read_bytes(path))
                  for path, _ in found]
        name = os.path.splitext(os.path.basename(copies[0]))[0]
        mask = write_image(os.path.join(folder, f'{name}_mask.png'),
                           found[0][1].astype(np.uint8) * 255)
        return copies[0], mask, copies[1:]

    # --- steps ------------------------------------------------------------------------------
    def _check_inputs(self, checkpoint, slots, queries):
        """(checkpoint path, [(number, slot)] of the used slots) or ValueError saying what is
        missing."""
        if not checkpoint or not checkpoint.strip():
            raise ValueError('no checkpoint: choose one found under exp/ or type its path '
                             '(`make demo` trains one)')
        used = [(k, slot) for k, slot in enumerate(slots, 1) if slot.image or slot.mask]
        if not used:
            raise ValueError('no support: upload a support image and paint the object on it (or '
                             'upload its mask file)')
        if not queries:
            raise ValueError('no query: upload the image(s) to segment')
        require_file(checkpoint.strip(), 'checkpoint')
        return checkpoint.strip(), used

    def _segmenter(self, path):
        """The checkpoint's FewShotSegmenter, loaded again only when the file changed."""
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = (key, FewShotSegmenter.from_checkpoint(path, device=self.device))
            self._encoded = None
        return self._loaded[1]

    def _encode(self, seg, supports, checkpoint) -> Tuple[EncodedSupport, List[str]]:
        """The supports encoded (util.prediction.segment_files.encode_with_notes), reused while the
        checkpoint, the images and the masks stay the same."""
        images, masks, names = [], [], []
        for number, slot in supports:
            if not slot.image:
                raise ValueError(f'support {number}: a mask file but no image; upload the image')
            images.append(read_rgb(slot.image))
            masks.append(read_mask(slot.mask) if slot.mask else painted_mask(number, slot))
            names.append(slot_names(number, slot))
        key = (self._loaded[0], digest(images + masks))
        if self._encoded is None or self._encoded[0] != key:
            self._encoded = (key, *encode_with_notes(seg, images, masks, names, checkpoint))
        return self._encoded[1:]

    @staticmethod
    def _read_slot(number, slot):
        """(the slot's image, the foreground of its mask file or None without one), the mask
        checked to be the image's size."""
        rgb = read_rgb(slot.image)
        if not slot.mask:
            return rgb, None
        image_name, mask_name = slot_names(number, slot)
        foreground = foreground_of(read_mask(slot.mask), mask_name)
        check_same_size(foreground, rgb, mask_name, image_name)
        return rgb, foreground

    def _shown(self, message):
        """A message as the page shows it: files in the app's folder named by their own name."""
        return re.sub(re.escape(self.workdir.rstrip(os.sep) + os.sep) + r'(?:[^/\s]+/)*', '',
                      message)


def count(n: int, noun: str) -> str:
    """'1 support', '2 supports'."""
    return f'{n} {noun}' + ('' if n == 1 else 's')


def segmented(done: int, asked: int) -> str:
    """'1 query segmented', '3 queries segmented', '2 of 3 queries segmented'."""
    if done == asked:
        return ('1 query' if asked == 1 else f'{asked} queries') + ' segmented'
    return f'{done} of {asked} ' + ('query' if asked == 1 else 'queries') + ' segmented'


def digest(arrays: Sequence[np.ndarray]) -> str:
    """SHA-1 over the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha1()
    for array in arrays:
        h.update(f'{array.dtype}{array.shape}'.encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def zip_files(paths: Sequence[str], folder: str, target: str) -> str:
    """A zip of the files, named by their paths relative to folder; returns target."""
    content = io.BytesIO()
    with zipfile.ZipFile(content, 'w', zipfile.ZIP_DEFLATED) as z:
        for path in paths:
            z.write(path, os.path.relpath(path, folder))
    return write_atomic(target, content.getvalue())
