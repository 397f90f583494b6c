"""Pictures of episodes and predictions: masks outlined on images, tiles side by side.

One set of drawing pieces for every picture the project writes: `test_sccan.py --viz N` (one
panel per episode), predict_sccan.py and the browser app (query overlays with support
thumbnails) and tools/demo.py (examples.png). Masks are label maps: 1 foreground, 0 background,
255 ignored (drawn darker, as "not scored"). A mask is drawn as its outline, a coloured line
between black edges: a tint would read as the colour of the object under it (the synthetic
objects are saturated red, green, blue, magenta), so a red tint on a red object looked like a
prediction where there was none. An empty prediction is labelled so.
"""
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from util.files.image_io import IGNORE_LABEL, write_image
from util.transform import MEAN, STD

SUPPORT_COLOUR = (0, 120, 255)   # RGB, the line of each kind of mask
TRUTH_COLOUR = (0, 200, 0)
PREDICTION_COLOUR = (230, 30, 30)
EDGE_COLOUR = (0, 0, 0)          # both sides of every line: it stands out on any image colour
ALPHA = 0.5                      # the opacity of the app's paint brush (tools/app.py)
GAP = 4                          # white pixels between tiles
WHITE = (255, 255, 255)
NOTHING_PREDICTED = 'nothing found'


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """Normalised 3×H×W tensor → H×W×3 uint8 RGB."""
    rgb = image.detach().float().cpu().permute(1, 2, 0).numpy() * np.array(STD) + np.array(MEAN)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def as_array(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """A label map (numpy array or tensor) as a numpy array."""
    return mask.detach().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)


def outline(rgb: np.ndarray, mask: np.ndarray | torch.Tensor, colour: tuple[int, int, int]) -> np.ndarray:
    """H×W×3 uint8 RGB with the boundary of the foreground (mask == 1) drawn as a `colour` line
    between black edges (a 1-pixel line with a black pixel on each side for images under 500
    pixels, wider in proportion above), and ignored pixels (255) darkened. `mask`: H×W numpy
    array or tensor."""
    mask = as_array(mask)
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    out[mask == IGNORE_LABEL] //= 2
    contours, _ = cv2.findContours((mask == 1).astype(np.uint8), cv2.RETR_LIST,
                                   cv2.CHAIN_APPROX_NONE)
    radius = round(max(mask.shape) / 1000)           # the line: 2·radius + 1 pixels
    for paint, r in ((EDGE_COLOUR, 2 * radius + 1), (colour, radius)):
        cv2.drawContours(out, contours, -1, paint, max(1, 2 * r))   # thickness 2r: 2r + 1 px
    return out


def labelled(rgb: np.ndarray, text: str) -> np.ndarray:
    """`rgb` with `text` written in its top-left corner, white on a black band."""
    out = rgb.copy()
    scale = max(0.3, rgb.shape[1] / 400)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (w + 4, h + base + 4), EDGE_COLOUR, cv2.FILLED)
    cv2.putText(out, text, (2, h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, 1, cv2.LINE_AA)
    return out


def prediction_drawn(rgb: np.ndarray, prediction: np.ndarray | torch.Tensor) -> np.ndarray:
    """The query with its predicted mask's outline, or labelled 'nothing found' when the
    prediction holds no foreground pixel."""
    drawn = outline(rgb, prediction, PREDICTION_COLOUR)
    return drawn if (as_array(prediction) == 1).any() else labelled(drawn, NOTHING_PREDICTED)


def resize_mask(mask: np.ndarray | torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """Label map → (h, w) `size` (nearest neighbour), for masks scored at another resolution
    than their image."""
    mask = as_array(mask)
    return cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def scaled_to(rgb: np.ndarray, side: int) -> np.ndarray:
    """`rgb` scaled (aspect kept) so that its longer side is `side`."""
    scale = side / max(rgb.shape[:2])
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def fitted(rgb: np.ndarray, side: int) -> np.ndarray:
    """`rgb`, scaled down where its longer side exceeds `side` (a picture to show)."""
    return rgb if max(rgb.shape[:2]) <= side else scaled_to(rgb, side)


def thumbnail(rgb: np.ndarray, mask: np.ndarray | torch.Tensor, colour: tuple[int, int, int],
              box: int) -> np.ndarray:
    """`rgb` scaled to fit a box×box square, its mask outlined at that scale, top-left in that
    square."""
    small = scaled_to(rgb, box)
    small = outline(small, resize_mask(mask, small.shape[:2]), colour)
    return cv2.copyMakeBorder(small, 0, box - small.shape[0], 0, box - small.shape[1],
                              cv2.BORDER_CONSTANT, value=WHITE)


def side_by_side(tiles: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Tiles in a row, top-aligned, with white gaps and white below the shorter ones."""
    height = max(t.shape[0] for t in tiles)
    return _join([cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=WHITE)
                  for t in tiles], gap, axis=1)


def stacked(tiles: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """Tiles in a column, left-aligned, with white gaps and white right of the narrower ones."""
    width = max(t.shape[1] for t in tiles)
    return _join([cv2.copyMakeBorder(t, 0, 0, 0, width - t.shape[1], cv2.BORDER_CONSTANT, value=WHITE)
                  for t in tiles], gap, axis=0)


def _join(tiles, gap, axis):
    """Concatenate along `axis` (0 rows, 1 columns) with `gap` white pixels between."""
    shape = list(tiles[0].shape)
    shape[axis] = gap
    spacer = np.full(shape, 255, np.uint8)
    return np.concatenate([part for tile in tiles for part in (spacer, tile)][1:], axis=axis)


def episode_panel(query: torch.Tensor, truth: np.ndarray | torch.Tensor,
                  prediction: np.ndarray | torch.Tensor, support: torch.Tensor,
                  support_masks: torch.Tensor) -> np.ndarray:
    """One episode as a row: each support with its mask (blue outline), the query with the
    ground truth (green), the query with the prediction (red, or 'nothing found').

    Args:
        query: normalised 3×H×W tensor; support: K×3×H×W; support_masks: K×H×W labels.
        truth, prediction: h×w label maps, resized to H×W if they were scored at another size.
    Returns:
        H×W'×3 uint8 RGB.
    """
    size = tuple(query.shape[-2:])
    rgb = to_rgb(query)
    tiles = [outline(to_rgb(image), mask, SUPPORT_COLOUR) for image, mask in zip(support, support_masks)]
    tiles.append(outline(rgb, resize_mask(truth, size), TRUTH_COLOUR))
    tiles.append(prediction_drawn(rgb, resize_mask(prediction, size)))
    return side_by_side(tiles)


def batch_panel(batch: Mapping[str, Any], b: int, prediction: np.ndarray | torch.Tensor) -> np.ndarray:
    """episode_panel of episode `b` of a collated batch and its prediction, as
    util.evaluation.evaluate's on_episode callbacks receive them."""
    return episode_panel(batch['query'][b], batch['query_mask'][b], prediction, batch['support'][b],
                         batch['support_masks'][b])


def prediction_overlay(query: np.ndarray, mask: np.ndarray, support_images: Sequence[np.ndarray],
                       support_masks: Sequence[np.ndarray]) -> np.ndarray:
    """The query (H×W×3 uint8 RGB) with its predicted mask (H×W, 1 = foreground) outlined in
    red (or labelled 'nothing found'), and a column of support thumbnails with their masks
    outlined in blue on its right."""
    box = max(48, query.shape[0] // max(len(support_images), 3))
    thumbnails = [thumbnail(image, fg, SUPPORT_COLOUR, box)
                  for image, fg in zip(support_images, support_masks)]
    return side_by_side([prediction_drawn(query, mask), stacked(thumbnails, gap=0)], gap=0)


def write_rgb(path: str, rgb: np.ndarray) -> str:
    """Write an H×W×3 uint8 RGB image (format by extension); OSError naming the file."""
    return write_image(path, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))


EPISODE_PATTERN = 'episode_*_class*.png'      # the names episode_saver writes


def episode_saver(folder: str, limit: int,
                  class_ids: Sequence[int]) -> Callable[[int, Mapping[str, Any], int, torch.Tensor], None]:
    """on_episode callback for util.evaluation.evaluate: saves episodes 0..limit-1 of the plan
    (those that this process evaluates) as folder/episode_<e>_class<id>.png."""
    def on_episode(e, batch, b, prediction):
        if e >= limit:
            return
        class_id = class_ids[int(torch.as_tensor(batch['class_index'][b]))]
        write_rgb(os.path.join(folder, f'episode_{e:04d}_class{class_id}.png'),
                  batch_panel(batch, b, prediction))
    return on_episode
