"""Where and in which precision the network runs: the device (`resolve_device`) and optional mixed
precision (`amp: bf16|fp16`). The exact speed-ups (channels-last, recomputation, fused attention)
belong to the model (SCCAN.set_fast_paths); compiling it to util.experiment.compile_model.

bf16 autocast runs on CUDA and CPU; fp16 needs CUDA (with loss scaling) and is ignored with a
warning on the CPU. Weights, optimiser states and metrics stay float32.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from util.config import Config

log = logging.getLogger('sccan')

_DTYPES = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def resolve_device(name: str | torch.device | None = 'auto') -> torch.device:
    """'auto' (or None): the GPU when PyTorch sees one, else the CPU; 'cuda' without a GPU is an
    error naming the way out."""
    if name in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda was asked for but PyTorch sees no CUDA GPU; use cpu or auto')
    return device


@dataclasses.dataclass(frozen=True)
class Precision:
    """Mixed precision on one kind of device: `autocast()` around forward passes, and the loss
    scaler of the optimisation steps."""
    device_type: str
    dtype: torch.dtype = None      # autocast dtype; None: full float32

    def autocast(self) -> torch.autocast | contextlib.nullcontext[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, active for fp16 only."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == torch.float16)


def precision_for(cfg: Config, device: torch.device) -> Precision:
    """The Precision of a config's `amp` on `device` (fp16 on a CPU: float32, with a warning).
    On CUDA it also sets the process's TF32 use to the config's `tf32` (set_tf32)."""
    if device.type == 'cuda':
        set_tf32(cfg.tf32)
    dtype = _DTYPES[cfg.amp]
    if dtype == torch.float16 and device.type != 'cuda':
        log.warning('amp: fp16 needs CUDA; running in float32 on %s', device)
        dtype = None
    return Precision(device.type, dtype)


def set_tf32(allowed: bool) -> None:
    """TF32 tensor cores for CUDA float32 matrix products and cuDNN convolutions, for the rest of
    the process. PyTorch allows them for convolutions and not for matrix products by default;
    the authors' PyTorch 1.7 allowed both."""
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
