"""Joint image/label transforms (OpenCV), as the authors train and evaluate SCCAN.

Every transform is a callable (image, label) → (image, label): image H×W×3 float32 RGB in 0..255,
label H×W uint8 (0 background, 1 foreground, 255 ignore) until ToTensor turns them into a
3×H×W float tensor and an H×W long tensor. Random choices come from Python's `random` module, so
seeding it (e.g. per episode) makes an augmentation reproducible.
"""
import random
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np
import torch

from util.files.image_io import IGNORE_LABEL

MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]   # ImageNet, RGB, on the 0..255 scale
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


class Compose:
    def __init__(self, transforms: Iterable[Callable[[Any, Any], tuple[Any, Any]]]):
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[Any, Any]:
        for t in self.transforms:
            image, label = t(image, label)
        return image, label

    def size_problem(self, h: int, w: int) -> str | None:
        """Why an h×w image cannot go through these transforms (the first that refuses it:
        those with a `size_problem` method), or None."""
        for t in self.transforms:
            problem = t.size_problem(h, w) if hasattr(t, 'size_problem') else None
            if problem:
                return problem
        return None


class RandScale:
    """Resize both by one factor drawn uniformly from [scale_min, scale_max]."""

    def __init__(self, scale_min: float, scale_max: float):
        if not 0 < scale_min <= scale_max:
            raise ValueError(f'scale range must satisfy 0 < min <= max, got [{scale_min}, '
                             f'{scale_max}]')
        self.scale_min, self.scale_max = scale_min, scale_max

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.scale_min + (self.scale_max - self.scale_min) * random.random()
        image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
        return image, label


class RandRotate:
    """With probability p, rotate both about the centre by an angle (degrees) drawn from
    [rotate_min, rotate_max]; uncovered pixels get `padding` (image) and `ignore` (label)."""

    def __init__(self, rotate_min: float, rotate_max: float, padding: Sequence[float] = MEAN,
                 ignore: int = IGNORE_LABEL, p: float = 0.5):
        if rotate_min > rotate_max:
            raise ValueError(f'rotate range must satisfy min <= max, got [{rotate_min}, '
                             f'{rotate_max}]')
        self.rotate_min, self.rotate_max = rotate_min, rotate_max
        self.padding, self.ignore, self.p = list(padding), ignore, p

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if random.random() < self.p:
            angle = self.rotate_min + (self.rotate_max - self.rotate_min) * random.random()
            h, w = label.shape
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
            image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=self.padding)
            label = cv2.warpAffine(label, matrix, (w, h), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=self.ignore)
        return image, label


class RandomGaussianBlur:
    """With probability p, blur the image with a radius×radius Gaussian kernel."""

    def __init__(self, radius: int = 5, p: float = 0.5):
        self.radius, self.p = radius, p

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if random.random() < self.p:
            image = cv2.GaussianBlur(image, (self.radius, self.radius), 0)
        return image, label


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if random.random() < self.p:
            image, label = cv2.flip(image, 1), cv2.flip(label, 1)
        return image, label


class ForegroundCrop:
    """Random crop_h×crop_w crop. Smaller inputs are first padded evenly on both sides (image
    `padding`, label `ignore`). A crop keeping less than `keep` of the foreground (label ==
    foreground) pixels is redrawn, up to `retries` times; the last draw is kept. The authors'
    transform.Crop draws once, then again `while crop_cnt <= 30`: 31 retries, 32 draws in all."""

    def __init__(self, crop_h: int, crop_w: int, padding: Sequence[float] = MEAN,
                 ignore: int = IGNORE_LABEL, keep: float = 0.85, retries: int = 31, foreground: int = 1):
        self.crop_h, self.crop_w = crop_h, crop_w
        self.padding, self.ignore = list(padding), ignore
        self.keep, self.retries, self.foreground = keep, retries, foreground

    def pad(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = label.shape
        pad_h, pad_w = max(self.crop_h - h, 0), max(self.crop_w - w, 0)
        if pad_h or pad_w:
            border = (pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)
            image = cv2.copyMakeBorder(image, *border, cv2.BORDER_CONSTANT, value=self.padding)
            label = cv2.copyMakeBorder(label, *border, cv2.BORDER_CONSTANT, value=self.ignore)
        return image, label

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.pad(image, label)
        h, w = label.shape
        total = np.count_nonzero(label == self.foreground)
        for _ in range(self.retries + 1):
            y = random.randint(0, h - self.crop_h)
            x = random.randint(0, w - self.crop_w)
            crop = label[y:y + self.crop_h, x:x + self.crop_w]
            if np.count_nonzero(crop == self.foreground) >= self.keep * total:
                break
        return image[y:y + self.crop_h, x:x + self.crop_w], crop


def val_resize_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(new_h, new_w): longer side → size, aspect kept, both floored to multiples of 8.
    The shorter side is the authors' (transform.Resize, find_new_hw): the ratio first,
    int(w * (size / h)), which rounds differently from int(w * size / h) for a few sizes
    (296 of 407 at 473: 343, not 344, hence 336 after flooring, not 344)."""
    if h >= w:
        new_h, new_w = size, int(w * (size / h))
    else:
        new_h, new_w = int(h * (size / w)), size
    return new_h // 8 * 8, new_w // 8 * 8


class ImageTooThin(ValueError):
    """ValResize of an image whose short side would shrink to nothing; the message follows the
    image's name."""


class ValResize:
    """Validation resize: val_resize_shape, then pad bottom/right to size×size (image 0,
    label `ignore`)."""

    def __init__(self, size: int, ignore: int = IGNORE_LABEL):
        self.size, self.ignore = size, ignore

    def size_problem(self, h: int, w: int) -> str | None:
        """Why an h×w image cannot be resized (its short side would shrink to nothing), or None:
        known from the size alone, so a list's sizes are checked before any image is read."""
        new_h, new_w = val_resize_shape(h, w, self.size)
        if not (new_h and new_w):
            return (f'{h}×{w} image: too thin to keep a pixel of its short side at val_size '
                    f'{self.size}')
        return None

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        problem = self.size_problem(*label.shape)
        if problem:
            raise ImageTooThin(problem)
        new_h, new_w = val_resize_shape(*label.shape, self.size)
        image_canvas = np.zeros((self.size, self.size, 3), np.float32)
        image_canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h),
                                                  interpolation=cv2.INTER_LINEAR)
        label_canvas = np.full((self.size, self.size), self.ignore, np.uint8)
        label_canvas[:new_h, :new_w] = cv2.resize(label, (new_w, new_h),
                                                  interpolation=cv2.INTER_NEAREST)
        return image_canvas, label_canvas


class ToTensor:
    """H×W×3 image → 3×H×W float tensor; H×W label → long tensor."""

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 3 or label.ndim != 2:
            raise ValueError(f'ToTensor expects an H×W×C image and an H×W label, got shapes '
                             f'{image.shape} and {label.shape}')
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        return image, torch.from_numpy(np.ascontiguousarray(label)).long()


class Normalize:
    def __init__(self, mean: Sequence[float] = MEAN, std: Sequence[float] = STD):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sub(image, self.mean).div_(self.std), label


def train_transform(train_h: int, train_w: int | None = None, scale_min: float = 0.9,
                    scale_max: float = 1.1, rotate_min: float = -10, rotate_max: float = 10,
                    padding_label: int = IGNORE_LABEL) -> Compose:
    """The training augmentation: scale, rotate, blur, flip, foreground-keeping crop to
    train_h×train_w (train_w default: train_h), normalise."""
    train_w = train_h if train_w is None else train_w
    return Compose([
        RandScale(scale_min, scale_max),
        RandRotate(rotate_min, rotate_max, padding=MEAN, ignore=padding_label),
        RandomGaussianBlur(),
        RandomHorizontalFlip(),
        ForegroundCrop(train_h, train_w, padding=MEAN, ignore=padding_label),
        ToTensor(),
        Normalize(),
    ])


def val_transform(val_size: int) -> Compose:
    """The evaluation transform: ValResize to val_size×val_size, normalise."""
    return Compose([ValResize(val_size), ToTensor(), Normalize()])
