"""Episode overlays for `test_sccan.py --viz N`: supports with their masks, the query with the
ground truth, the query with the prediction, side by side in one PNG."""
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255
SUPPORT_COLOUR = (0, 120, 255)   # RGB
TRUTH_COLOUR = (0, 200, 0)
PREDICTION_COLOUR = (230, 30, 30)
ALPHA = 0.5


def to_rgb(image):
    """Normalised 3×H×W tensor → H×W×3 uint8 RGB."""
    rgb = image.detach().float().cpu().permute(1, 2, 0).numpy() * STD + MEAN
    return np.clip(rgb, 0, 255).astype(np.uint8)


def overlay(rgb, mask, colour):
    """Tint foreground (mask == 1); darken ignore pixels (255) so they read as 'not scored'."""
    mask = mask.detach().cpu().numpy()
    out = rgb.astype(np.float32)
    fg = mask == 1
    out[fg] = (1 - ALPHA) * out[fg] + ALPHA * np.array(colour, np.float32)
    out[mask == 255] *= 0.5
    return out.astype(np.uint8)


def resize_mask(mask, size):
    """H×W label → size (nearest), for masks scored at another resolution than the image."""
    return F.interpolate(mask[None, None].float(), size=size, mode='nearest')[0, 0].long()


def episode_panel(query, truth, prediction, support, support_masks):
    """query 3×H×W, truth/prediction h×w, support K×3×H×W, support_masks K×H×W → RGB image
    (K + 2 tiles in a row)."""
    size = tuple(query.shape[-2:])
    tiles = [overlay(to_rgb(img), m, SUPPORT_COLOUR) for img, m in zip(support, support_masks)]
    rgb = to_rgb(query)
    tiles.append(overlay(rgb, resize_mask(truth, size), TRUTH_COLOUR))
    tiles.append(overlay(rgb, resize_mask(prediction, size), PREDICTION_COLOUR))
    gap = np.full((size[0], 4, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return np.concatenate(row, axis=1)


def save_episode(path, query, truth, prediction, support, support_masks):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    panel = episode_panel(query, truth, prediction, support, support_masks)
    if not cv2.imwrite(path, cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {path}')


def episode_saver(folder, limit, class_ids):
    """on_episode callback for util.evaluate: saves the first `limit` episodes of this process
    as folder/episode_0000_class<id>.png."""
    def on_episode(n, batch, b, prediction):
        if n >= limit:
            return
        class_id = class_ids[int(torch.as_tensor(batch['class_index'][b]))]
        save_episode(os.path.join(folder, f'episode_{n:04d}_class{class_id}.png'),
                     batch['query'][b], batch['query_mask'][b], prediction,
                     batch['support'][b], batch['support_masks'][b])
    return on_episode
