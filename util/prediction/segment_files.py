"""Segmenting image files with a FewShotSegmenter: the steps predict_sccan.py and the browser app
(tools/app.py) share, so that both write the same mask for the same inputs, byte for byte."""
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

from util.files.image_io import read_rgb, write_image
from util.prediction.predictor import EncodedSupport, FewShotSegmenter, to_mask
from util.prediction.visualize import NOTHING_PREDICTED, fitted, prediction_overlay, write_rgb


def encode_with_notes(seg: FewShotSegmenter, images: Sequence[np.ndarray],
                      masks: Sequence[np.ndarray], names: Sequence[Sequence[str]],
                      checkpoint_name: str) -> Tuple[EncodedSupport, List[str]]:
    """seg.encode_support, with what the user should read about it as sentences.

    Args:
        images, masks, names: as FewShotSegmenter.encode_support takes them.
        checkpoint_name: how the notes call the checkpoint (e.g. its path).
    Returns:
        The encoded supports, and the notes: 'warning: ...' for each doubtful image or mask (see
        util.prediction.predictor.image_warnings and mask_warnings), 'note: ...' when the
        checkpoint was trained with another number of shots. A support that fails raises its
        error with the doubts raised before it.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            support = seg.encode_support(images, masks, names=names)
        except ValueError as e:
            if caught:      # a doubt raised before the failure may say why it failed
                raise ValueError(f'{e} (and {"; ".join(str(w.message) for w in caught)})') from e
            raise
    notes = [f'warning: {warning.message}' for warning in caught]
    if seg.trained_shot and seg.trained_shot != support.shot:
        notes.append(f'note: {checkpoint_name} was trained with {seg.trained_shot} shot(s); '
                     f'running it with {support.shot} (SCCAN averages the shots, its weights do '
                     'not depend on K)')
    return support, notes


def foreground_words(mask: np.ndarray) -> str:
    """How much of the query a predicted mask (H×W, 1 = foreground) covers, in words: an empty
    mask says that nothing was found, a few pixels are counted (a bare '0.0 %' reads as a
    result either way)."""
    pixels = int(np.count_nonzero(mask))
    if pixels == 0:
        return f"{NOTHING_PREDICTED}: no pixel is foreground (the model sees no object like the supports')"
    if pixels / mask.size < 0.0005:
        return f'foreground {pixels} pixel(s), under 0.1%'
    return f'foreground {pixels / mask.size:.1%}'


def segment_file(seg: FewShotSegmenter, support: EncodedSupport, query_path: str, mask_path: str,
                 overlay_path: str, overlay_side: Optional[int] = None) -> np.ndarray:
    """Segment one query image file; write its mask (0/255 PNG, the query's size) and its
    overlay (util.prediction.visualize.prediction_overlay), scaled down to `overlay_side` pixels at
    most where given (a picture to show).

    Returns:
        The H×W uint8 mask, 1 = foreground.
    """
    query = read_rgb(query_path)
    mask = to_mask(seg.predict(support, query, name=query_path))
    write_image(mask_path, mask * 255)
    overlay = prediction_overlay(query, mask, support.images, support.foregrounds)
    write_rgb(overlay_path, fitted(overlay, overlay_side) if overlay_side else overlay)
    return mask
