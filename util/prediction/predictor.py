"""Segment your own images: a few annotated support examples in, query masks out.

    from util.prediction.predictor import FewShotSegmenter
    seg = FewShotSegmenter.from_checkpoint(
        'exp/pascal/SCCAN/split0/resnet50/snapshot/train_epoch_99_0.6831.pth')
    mask = seg.segment([support_rgb], [support_mask], query_rgb)   # H×W uint8, 1 = foreground
    prob = seg.probabilities([support_rgb], [support_mask], query_rgb)   # H×W float32 in [0, 1]

Images are numpy H×W×3 uint8 RGB arrays of any size (H×W grayscale and H×W×4 RGBA are accepted;
alpha is dropped). Every image goes through the benchmark's validation transform
(util.transform.val_transform, the authors' transform.Resize): the longer side is resized to
`val_size`, both sides floored to multiples of 8, and the image is padded at the bottom/right to
val_size × val_size. The query's logits are cropped to that valid region and resized back to the
query's own size, so the padding never reaches the output (the benchmark's scoring instead
resizes the whole canvas to the longer side; the two differ only in the last few rows/columns).

Support masks (see `foreground_of`): bool arrays (True = foreground); {0,1} masks, where 255 may
mark ignored pixels as in the datasets; otherwise greyscale masks where foreground is ≥ 128
({0,255}, anti-aliased or JPEG masks). A class-id label map must be turned into a mask first:
`label == class_id`. A mask that is (almost) all foreground, or that looks like a label map,
gives a warning (`mask_warnings`).

The SCCAN weights do not depend on the number of shots K (K-shot fusion averages the shots), so
the net is run with K = the number of supports given, whatever K it was trained with.

On CUDA each query runs as a recorded CUDA graph (`cuda_graphs`, util.evaluation.replay: one
recording per number of shots; the same logits, without launch overhead).
"""
import dataclasses
import warnings
from typing import Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model import BackboneFeatures, SCCAN, sccan_from_checkpoint
from model.checkpoint import metadata
from model.sccan import input_size_rule, valid_input_size
from util.evaluation.replay import replayed
from util.files.image_io import IGNORE_LABEL, support_mask_problem
from util.config import SCHEMA
from util.precision import resolve_device, set_tf32
from util.transform import ImageTooThin, val_resize_shape, val_transform


@dataclasses.dataclass
class EncodedSupport:
    """Supports ready for any number of queries: backbone features computed once."""
    features: BackboneFeatures   # of the K supports
    masks: torch.Tensor    # K×S×S labels at val_size: 1 foreground, 0 background, 255 padding
    images: list           # the K RGB images as given (for overlays)
    foregrounds: list      # the K H×W bool foreground masks as given

    @property
    def shot(self) -> int:
        return self.masks.shape[0]


class FewShotSegmenter:
    """A SCCAN net wrapped for whole images of any size (see the module docstring).

    Args:
        net: an SCCAN (or anything with its encode / segment API); put in eval mode.
        val_size: side of the canvas images are resized and padded to, (val_size − 1) % 8 == 0.
        trained_shot: the K the weights were trained with, when known (for notes only).
        cuda_graphs: on CUDA, run each query as a recorded CUDA graph (util.evaluation.replay).
    """

    def __init__(self, net: SCCAN, val_size: int = 473, trained_shot: Optional[int] = None,
                 cuda_graphs: bool = True):
        if val_size < 9 or not valid_input_size(val_size):
            raise ValueError(f'val_size must satisfy {input_size_rule("val_size")}; got {val_size}')
        self.net = net.eval()
        self.val_size = val_size
        self.transform = val_transform(val_size)
        self.trained_shot = trained_shot    # K the checkpoint was trained with, if known
        self._query_logits = replayed(net, self._logits) if cuda_graphs else self._logits

    @classmethod
    def from_checkpoint(cls, path: str, layers: Optional[int] = None, device: str = 'auto',
                        val_size: Optional[int] = None,
                        cuda_graphs: bool = True) -> 'FewShotSegmenter':
        """The SCCAN a checkpoint describes (model.build), with its weights, on `device`.

        Args:
            path: a checkpoint of ours, of the authors, or a plain state dict.
            layers: backbone depth to insist on; None: the checkpoint's.
            device: 'auto' (the GPU when there is one), 'cpu' or 'cuda'.
            val_size: canvas side; None: the checkpoint's config val_size, else 473.
            cuda_graphs: as for the constructor.

        On CUDA it sets the process's TF32 use to the checkpoint config's `tf32` (the config's
        default where it has none; util.precision.set_tf32), as test_sccan.py sets its config's:
        with the same setting both give the same masks.
        """
        device = resolve_device(device)
        net, checkpoint = sccan_from_checkpoint(path, layers)
        meta = metadata(checkpoint)
        config = meta.get('config') or {}
        if device.type == 'cuda':
            set_tf32(config.get('tf32', SCHEMA['tf32'].default))
        return cls(net.to(device), val_size=val_size or config.get('val_size', 473),
                   trained_shot=meta.get('shot', config.get('shot')), cuda_graphs=cuda_graphs)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    # --- public API -------------------------------------------------------------------------
    def segment(self, support_images: Sequence[np.ndarray], support_masks: Sequence[np.ndarray],
                query_image: np.ndarray) -> np.ndarray:
        """The query's mask given K annotated supports.

        Args:
            support_images: K images, each H_k×W_k×3 uint8 RGB (or grayscale / RGBA).
            support_masks: K masks, each H_k×W_k (rule in MASK_RULE).
            query_image: H×W×3 uint8 RGB.

        Returns:
            H×W uint8 mask at the query's size: 1 foreground, 0 background.
        """
        return to_mask(self.probabilities(support_images, support_masks, query_image))

    def probabilities(self, support_images: Sequence[np.ndarray], support_masks: Sequence[np.ndarray],
                      query_image: np.ndarray) -> np.ndarray:
        """Like `segment`, but the H×W float32 foreground probability."""
        return self.predict(self.encode_support(support_images, support_masks), query_image)

    def segment_many(self, support_images: Sequence[np.ndarray], support_masks: Sequence[np.ndarray],
                     query_images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """`segment` for each query in turn (a generator); the supports are encoded once."""
        support = self.encode_support(support_images, support_masks)
        return (to_mask(self.predict(support, q)) for q in query_images)

    def encode_support(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                       names: Optional[Sequence[Sequence[str]]] = None) -> EncodedSupport:
        """Check and encode K support (image, mask) pairs; reuse the result for many queries.

        Args:
            images, masks: as for `segment`.
            names: K (image name, mask name) pairs for the error messages (e.g. file paths).
        """
        images, masks = list(images), list(masks)
        if not images:
            raise ValueError('at least one support image and mask is needed')
        if len(images) != len(masks):
            raise ValueError(f'{len(images)} support images but {len(masks)} support masks')
        names = names or [(f'support image {k}', f'support mask {k}') for k in range(len(images))]
        rgbs, foregrounds, tensors, labels = [], [], [], []
        for image, mask, (image_name, mask_name) in zip(images, masks, names):
            rgb = as_rgb(image, image_name)
            for warning in image_warnings(rgb, image_name):     # before a mask error it explains
                warnings.warn(warning, stacklevel=2)
            fg = foreground_of(mask, mask_name)
            check_same_size(fg, rgb, mask_name, image_name)
            problem = support_mask_problem(fg)
            if problem:
                raise ValueError(f'{mask_name} {problem}; ' + MASK_RULE)
            for warning in mask_warnings(mask, fg, mask_name):
                warnings.warn(warning, stacklevel=2)
            tensor, label = self._canvas(rgb, fg, image_name)
            if not (label == 1).any():
                raise ValueError(f'{mask_name}: its {int(fg.sum())} foreground pixels vanish when '
                                 f'the image is resized to {self.val_size}; give a larger object '
                                 'or a higher val_size')
            rgbs.append(rgb)
            foregrounds.append(fg)
            tensors.append(tensor)
            labels.append(label)
        with torch.inference_mode():
            features = self.net.encode(torch.stack(tensors).to(self.device))   # K×3×S×S
        return EncodedSupport(features, torch.stack(labels).to(self.device), rgbs, foregrounds)

    def predict(self, support: EncodedSupport, query_image: np.ndarray,
                name: str = 'query image') -> np.ndarray:
        """Foreground probability (H×W float32) of one H×W×3 query given encoded supports;
        `name` (e.g. its file) is what error messages call it."""
        rgb = as_rgb(query_image, name)
        image, _ = self._canvas(rgb, np.zeros(rgb.shape[:2], bool), name)
        h, w = val_resize_shape(*rgb.shape[:2], self.val_size)
        with torch.inference_mode():
            logits = self._query_logits(image[None].to(self.device), support.features.mid[None],
                                        support.features.high[None], support.masks[None])
            logits = logits[:, :, :h, :w].float()                            # valid region
            # cv2 resized the image with half-pixel centres; align_corners=False inverts that.
            logits = F.interpolate(logits, size=rgb.shape[:2], mode='bilinear',
                                   align_corners=False)                      # 1×2×H×W
            prob = torch.softmax(logits, dim=1)[0, 1]
        return prob.cpu().numpy()

    # --- helpers ------------------------------------------------------------------------------
    def _logits(self, query, support_mid, support_high, support_masks):
        """1×3×S×S query, 1×K×… support features and 1×K×S×S masks → 1×2×S×S logits."""
        return self.net.segment(self.net.encode(query),
                                BackboneFeatures(support_mid.flatten(0, 1), support_high.flatten(0, 1)),
                                support_masks, out_size=(self.val_size, self.val_size))

    def _canvas(self, rgb, foreground, what):
        """H×W×3 uint8 and H×W bool → the val transform's normalised 3×S×S image and S×S label
        (1 foreground, 0 background, 255 padding)."""
        try:
            return self.transform(rgb.astype(np.float32), foreground.astype(np.uint8))
        except ImageTooThin as e:
            raise ValueError(f'{what}: {e}') from None


MASK_RULE = ('foreground is True in bool masks, 1 in {0,1} masks (255 = ignore) and >= 128 '
             'otherwise; for a class-id label map pass (label == class_id)')


def as_rgb(image: np.ndarray, what: str) -> np.ndarray:
    """numpy H×W×3 uint8 RGB from RGB, RGBA (alpha dropped), H×W or H×W×1 grayscale."""
    image = np.asarray(image)
    if image.ndim < 2 or 0 in image.shape[:2]:
        raise ValueError(f'{what} has shape {image.shape}; expected a non-empty H×W×3 image')
    if image.dtype != np.uint8:
        raise ValueError(f'{what} must be uint8 (0..255), got {image.dtype}; e.g. for floats in '
                         '[0, 1] pass (image * 255).round().astype(np.uint8)')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    raise ValueError(f'{what} has shape {image.shape}; expected H×W×3 RGB, H×W×4 RGBA or H×W '
                     'grayscale')


def foreground_of(mask: np.ndarray, what: str) -> np.ndarray:
    """H×W bool foreground of a support mask (rule in MASK_RULE)."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f'{what} has shape {mask.shape}; expected an H×W mask')
    if mask.dtype == bool:
        return mask
    if not np.issubdtype(mask.dtype, np.number):
        raise ValueError(f'{what} has dtype {mask.dtype}; expected bool or numbers')
    if np.isin(mask, (0, 1, IGNORE_LABEL)).all() and (mask == 1).any():
        return mask == 1
    if np.issubdtype(mask.dtype, np.floating) and mask.max() <= 1:
        return mask >= 0.5
    return mask >= 128


def check_same_size(foreground: np.ndarray, rgb: np.ndarray, mask_name: str, image_name: str) -> None:
    """ValueError naming both when an H×W mask and an H×W×3 image differ in size."""
    if foreground.shape[:2] != rgb.shape[:2]:
        raise ValueError(f'{mask_name} is {foreground.shape[0]}×{foreground.shape[1]} (H×W) but '
                         f'{image_name} is {rgb.shape[0]}×{rgb.shape[1]}; they must match')


# A support mask whose foreground covers less or more than this is probably not what was meant.
NEAR_EMPTY, NEAR_FULL = 0.005, 0.995
LABEL_REGION = 0.01       # share of the pixels a label map's class value covers, unlike anti-aliasing
# An object seldom fills its image's whole border; the background of an inverted mask does.
BORDER_FILLED, MOSTLY = 0.98, 0.5


MASK_LIKE = 0.99          # share of an image's values that are pure black or white, as in a mask


def image_warnings(rgb: np.ndarray, what: str) -> List[str]:
    """Why a support image is probably not what was meant (a list of sentences): it is black and
    white only, as a mask is, which is what an image and its mask given the other way round
    look like (the photo, read as a mask, may pass its threshold almost everywhere)."""
    if np.isin(rgb, (0, 255)).mean() > MASK_LIKE:
        return [f'{what} is black and white only, as a mask is: were the image and its mask given '
                'the other way round?']
    return []


def mask_warnings(mask: np.ndarray, foreground: np.ndarray, what: str) -> List[str]:
    """Why a support mask is probably not what was meant (a list of sentences): its foreground
    is (almost) all or nothing of it, surrounds it as a background would (inverted), or it looks
    like a class-id label map (several values between 0 and 255 that each cover a region, not
    just anti-aliased edges)."""
    notes = []
    share = foreground.mean()
    border = np.concatenate([foreground[0], foreground[-1], foreground[:, 0], foreground[:, -1]])
    if share > NEAR_FULL:
        notes.append(f'{what}: {share:.1%} of it is foreground after thresholding; an inverted or '
                     f'blank mask? ({MASK_RULE})')
    elif share > MOSTLY and border.mean() > BORDER_FILLED:
        notes.append(f'{what}: its foreground ({share:.1%} of it) fills the whole border and '
                     f'surrounds the rest, as a background does: an inverted mask? ({MASK_RULE})')
    elif share < NEAR_EMPTY:
        notes.append(f'{what}: only {share:.2%} of it is foreground after thresholding')
    mask = np.asarray(mask)
    if np.issubdtype(mask.dtype, np.integer):
        values, counts = np.unique(mask[(mask != 0) & (mask != IGNORE_LABEL)], return_counts=True)
        regions = values[counts >= LABEL_REGION * mask.size]
        if len(regions) >= 2:
            notes.append(f'{what} looks like a class-id label map (values '
                         f'{", ".join(map(str, regions))}): {share:.1%} of it counts as foreground '
                         f'({MASK_RULE}); give the mask of one class instead, 255 where the label is '
                         'that class')
    return notes


def to_mask(probability: np.ndarray) -> np.ndarray:
    """Foreground probability → uint8 mask (1 where foreground wins, as argmax of the logits)."""
    return (probability > 0.5).astype(np.uint8)
