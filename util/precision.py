"""How the network runs: optional mixed precision (`amp: bf16|fp16`), channels-last memory
format (on by default) and torch.compile; tools/benchmark_modes.py measures each.

bf16 autocast and channels-last run on CUDA and CPU; fp16 needs CUDA (with loss scaling) and is
ignored with a warning on the CPU. Weights, optimiser states and metrics stay float32.
"""
import contextlib
import dataclasses
import logging

import torch

log = logging.getLogger('sccan')

_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclasses.dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype = None      # autocast dtype; None: full float32
    channels_last: bool = False
    compile: bool = False

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self):
        """Loss scaling, active for fp16 only."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)

    def prepare_model(self, net):
        """The SCCAN to run, changed in place. compile: the backbone and the SCCA transformer
        (the heavy parts) are compiled as modules, so parameter names and the encode/segment
        entry points used by the feature cache stay as they are."""
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.compile:
            net.backbone.compile()
            net.transformer.compile()
        return net

    def prepare_images(self, images):
        """Channels-last for N×C×H×W image batches (5-D support stacks stay as they are)."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images


def precision_for(cfg, device):
    dtype = _DTYPES[cfg.amp]
    if dtype == torch.float16 and device.type != 'cuda':
        log.warning('amp: fp16 needs CUDA; running in float32 on %s', device)
        dtype = None
    return Precision(device.type, dtype, cfg.channels_last, cfg.compile)
