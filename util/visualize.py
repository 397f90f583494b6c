"""Pictures of episodes and predictions: masks tinted over images, tiles side by side.

One set of drawing pieces for every picture the project writes: `test_sccan.py --viz N` (one
panel per episode), predict_sccan.py (query overlays with support thumbnails) and tools/demo.py
(examples.png). Masks are label maps: 1 foreground, 0 background, 255 ignored (drawn darker, as
"not scored").
"""
import os

import cv2
import numpy as np
import torch

from util.image_io import IGNORE_LABEL, write_image
from util.transform import MEAN, STD

SUPPORT_COLOUR = (0, 120, 255)   # RGB
TRUTH_COLOUR = (0, 200, 0)
PREDICTION_COLOUR = (230, 30, 30)
ALPHA = 0.5
GAP = 4                          # white pixels between tiles
WHITE = (255, 255, 255)


def to_rgb(image):
    """Normalised 3×H×W tensor → H×W×3 uint8 RGB."""
    rgb = image.detach().float().cpu().permute(1, 2, 0).numpy() * np.array(STD) + np.array(MEAN)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def tint(rgb, mask, colour):
    """H×W×3 uint8 RGB with the foreground (mask == 1) tinted `colour` and ignored pixels (255)
    darkened. `mask`: H×W numpy array or tensor."""
    mask = mask.detach().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)
    out = rgb.astype(np.float32)
    foreground = mask == 1
    out[foreground] = (1 - ALPHA) * out[foreground] + ALPHA * np.array(colour, np.float32)
    out[mask == IGNORE_LABEL] *= 0.5
    return out.astype(np.uint8)


def resize_mask(mask, size):
    """Label map → (h, w) `size` (nearest neighbour), for masks scored at another resolution
    than their image."""
    mask = mask.detach().cpu().numpy() if torch.is_tensor(mask) else np.asarray(mask)
    return cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def thumbnail(rgb, box):
    """`rgb` scaled to fit a box×box square (aspect kept), top-left in that square."""
    scale = box / max(rgb.shape[:2])
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(small, 0, box - size[1], 0, box - size[0], cv2.BORDER_CONSTANT, value=WHITE)


def side_by_side(tiles, gap=GAP):
    """Tiles in a row, top-aligned, with white gaps and white below the shorter ones."""
    height = max(t.shape[0] for t in tiles)
    return _join([cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=WHITE)
                  for t in tiles], gap, axis=1)


def stacked(tiles, gap=GAP):
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


def episode_panel(query, truth, prediction, support, support_masks):
    """One episode as a row: each support with its mask (blue), the query with the ground truth
    (green), the query with the prediction (red).

    Args:
        query: normalised 3×H×W tensor; support: K×3×H×W; support_masks: K×H×W labels.
        truth, prediction: h×w label maps, resized to H×W if they were scored at another size.
    Returns:
        H×W'×3 uint8 RGB.
    """
    size = tuple(query.shape[-2:])
    rgb = to_rgb(query)
    tiles = [tint(to_rgb(image), mask, SUPPORT_COLOUR) for image, mask in zip(support, support_masks)]
    tiles.append(tint(rgb, resize_mask(truth, size), TRUTH_COLOUR))
    tiles.append(tint(rgb, resize_mask(prediction, size), PREDICTION_COLOUR))
    return side_by_side(tiles)


def batch_panel(batch, b, prediction):
    """episode_panel of episode `b` of a collated batch and its prediction, as util.evaluate's
    on_episode callbacks receive them."""
    return episode_panel(batch['query'][b], batch['query_mask'][b], prediction, batch['support'][b],
                         batch['support_masks'][b])


def prediction_overlay(query, mask, support_images, support_masks):
    """The query (H×W×3 uint8 RGB) with its predicted mask (H×W, 1 = foreground) in red, and a
    column of support thumbnails with their masks in blue on its right."""
    box = max(48, query.shape[0] // max(len(support_images), 3))
    thumbnails = [thumbnail(tint(image, fg, SUPPORT_COLOUR), box)
                  for image, fg in zip(support_images, support_masks)]
    return side_by_side([tint(query, mask, PREDICTION_COLOUR), stacked(thumbnails, gap=0)], gap=0)


def write_rgb(path, rgb):
    """Write an H×W×3 uint8 RGB image (format by extension); OSError naming the file."""
    return write_image(path, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))


EPISODE_PATTERN = 'episode_*_class*.png'      # the names episode_saver writes


def episode_saver(folder, limit, class_ids):
    """on_episode callback for util.evaluate: saves episodes 0..limit-1 of the plan (those that
    this process evaluates) as folder/episode_<e>_class<id>.png."""
    def on_episode(e, batch, b, prediction):
        if e >= limit:
            return
        class_id = class_ids[int(torch.as_tensor(batch['class_index'][b]))]
        write_rgb(os.path.join(folder, f'episode_{e:04d}_class{class_id}.png'),
                  batch_panel(batch, b, prediction))
    return on_episode
