"""Exact reuse of backbone features in evaluation.

The backbone is frozen and the val transform deterministic, so an image always gives the same
features; in a 1,000-episode evaluation the same few hundred images recur as queries and supports
(and across seeds and validations). `FeatureCache` keeps them in a bounded LRU, keyed by image and
transform, on the compute device or in host memory, and runs the backbone only on the misses.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import torch

from model import BackboneFeatures

if TYPE_CHECKING:
    from model import SCCAN

GB = 1024 ** 3


class FeatureCache:
    def __init__(self, budget_gb: float, device: str = 'same'):
        """budget_gb: bytes of features kept at most (an entry larger than that is never stored).
        device: 'same' keeps features where they were computed, 'host' in CPU memory."""
        if budget_gb <= 0:
            raise ValueError(f'feature cache budget must be > 0 GB, got {budget_gb}')
        if device not in ('same', 'host'):
            raise ValueError(f"feature cache device must be 'same' or 'host', got {device!r}")
        self.budget = int(budget_gb * GB)
        self.device = device
        self.entries = OrderedDict()      # key → (mid C×h×w, high C×h×w), least recently used first
        self.bytes = 0
        self.hits = self.misses = 0
        self.backbone_passes = 0          # images run through the backbone

    def encode(self, net: SCCAN, images: torch.Tensor, keys: Sequence[Hashable]) -> BackboneFeatures:
        """BackboneFeatures of N images (N×3×H×W), identical to net.encode(images); `keys`
        names each image and its transform (equal keys must mean equal images)."""
        if len(keys) != len(images):
            raise ValueError(f'{len(keys)} keys for {len(images)} images')
        found = {}
        for key in keys:
            if key in self.entries:
                self.entries.move_to_end(key)
                found[key] = self.entries[key]
        missing = list(OrderedDict.fromkeys(k for k in keys if k not in found))
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            fresh = net.encode(images[[first[k] for k in missing]])
            self.backbone_passes += len(missing)
            for j, key in enumerate(missing):
                found[key] = (fresh.mid[j], fresh.high[j])
                self._store(key, found[key])
        rows = [found[key] for key in keys]
        device = images.device
        return BackboneFeatures(mid=torch.stack([r[0].to(device, non_blocking=True) for r in rows]),
                                high=torch.stack([r[1].to(device, non_blocking=True) for r in rows]))

    def _store(self, key, tensors):
        size = sum(t.numel() * t.element_size() for t in tensors)
        if size > self.budget:
            return
        while self.bytes + size > self.budget:
            _, evicted = self.entries.popitem(last=False)
            self.bytes -= sum(t.numel() * t.element_size() for t in evicted)
        # A copy, not a view that would keep the whole batch's storage alive.
        self.entries[key] = tuple(host_copy(t) if self.device == 'host' else t.clone()
                                  for t in tensors)
        self.bytes += size

    def stats(self) -> dict[str, int | float]:
        return {'hits': self.hits, 'misses': self.misses, 'backbone_passes': self.backbone_passes,
                'entries': len(self.entries), 'gb': self.bytes / GB}


def host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of `tensor` in host memory; of a CUDA tensor, in pinned memory and without waiting
    for the device, so that neither this copy nor the one back stops the GPU's queue (the
    copies are ordered on the stream)."""
    if tensor.device.type != 'cuda':
        return tensor.to('cpu', copy=True)
    return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor, non_blocking=True)
