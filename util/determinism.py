"""Reproducible runs on a GPU (config key seed_deterministic): the same config, seeds, number of
processes, GPU model and software give bit-identical training and testing, run after run.

On a CPU, PyTorch's kernels give the same results run to run already (for a given number of
threads); on a GPU several do not by default: cuDNN picks convolution algorithms by timing them,
cuBLAS may split a product differently on each stream's workspace, and some kernels add with
atomic operations in no fixed order. `seed_deterministic: True` turns them off:

- `torch.use_deterministic_algorithms(True, warn_only=True)`: PyTorch's deterministic kernels
  wherever it has them; an op that has none warns (naming itself) instead of stopping the run;
- cuDNN in deterministic mode, its benchmark off;
- `CUBLAS_WORKSPACE_CONFIG=:4096:8` (CUBLAS_WORKSPACE), read when a process first uses cuBLAS:
  `prepare_process` sets it, called by the scripts right after reading the config (so torchrun's
  workers get it too) and by training and testing before they build the model (for callers of
  the Python API), with a warning where the process had used CUDA before (a notebook: cuBLAS
  keeps the workspace it started with, and PyTorch stops warning once the variable is set);
- every bilinear resize that is differentiated on a GPU (all of SCCAN's trainable ones) computed
  as two matrix products (`DeterministicResizes`): PyTorch's backward kernel of bilinear
  interpolation adds with atomics and has no deterministic version.

Data order and augmentation are deterministic in every mode (util.episodes: each episode draws
under its own seed, whichever process or loading worker reads it).
"""
import contextlib
import functools
import inspect
import logging
import os
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

log = logging.getLogger('sccan')

CUBLAS_WORKSPACE = ':4096:8'
CUBLAS_VARIABLE = 'CUBLAS_WORKSPACE_CONFIG'


def prepare_process(enabled: bool) -> None:
    """With `enabled`, put CUBLAS_WORKSPACE in the environment for the rest of the process (a
    value set by the user stays): before the process's first CUDA work, or it comes too late,
    which a warning says."""
    if not enabled or CUBLAS_VARIABLE in os.environ:
        return
    os.environ[CUBLAS_VARIABLE] = CUBLAS_WORKSPACE
    if torch.cuda.is_initialized():
        log.warning('seed_deterministic: this process used CUDA before %s was set, so cuBLAS may '
                    'keep a workspace that is not deterministic; set %s=%s in the environment '
                    'before starting Python', CUBLAS_VARIABLE, CUBLAS_VARIABLE, CUBLAS_WORKSPACE)


@contextlib.contextmanager
def deterministic(enabled: bool, training_device: torch.device | str | None = None) -> Iterator[None]:
    """Inside, with `enabled`: deterministic algorithms (warn_only), cuDNN deterministic without
    benchmark, and when `training_device` is a CUDA device DeterministicResizes; the previous
    settings are back on the way out. Without `enabled` nothing changes. (The cuBLAS variable:
    prepare_process.) The resizes only matter where gradients flow on a GPU, and a function mode
    costs Python time on every operation: on a CPU a third of a training step."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    on_gpu = training_device is not None and torch.device(training_device).type == 'cuda'
    try:
        with DeterministicResizes() if on_gpu else contextlib.nullcontext():
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


_INTERPOLATE = inspect.signature(F.interpolate)


class DeterministicResizes(TorchFunctionMode):
    """While active: F.interpolate(x, size=..., mode='bilinear', align_corners=True) (SCCAN's
    resize) on a tensor of `device_types` that autograd records runs as `bilinear_resize`, whose
    backward is two matrix products, deterministic; any other call runs as it would. `resized`
    counts the calls taken over."""

    def __init__(self, device_types: Sequence[str] = ('cuda',)):
        super().__init__()
        self.device_types = tuple(device_types)
        self.resized = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.interpolate:
            call = _INTERPOLATE.bind(*args, **kwargs)
            call.apply_defaults()
            a = call.arguments
            x = a['input']
            if (a['mode'] == 'bilinear' and a['align_corners'] is True and a['size'] is not None
                    and a['scale_factor'] is None and not a['antialias'] and x.dim() == 4
                    and x.device.type in self.device_types and x.requires_grad
                    and torch.is_grad_enabled()):
                self.resized += 1
                return bilinear_resize(x, a['size'])
        return func(*args, **kwargs)


def bilinear_resize(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """F.interpolate(x, size, mode='bilinear', align_corners=True) as rows @ x @ columnsᵀ
    (N×C×h×w → N×C×H×W): up to rounding the same values and gradients, by matrix products only.
    Computed in float64, also under autocast, and returned in x's dtype: a float32 product would
    run on TF32 tensor cores where `tf32` allows them, rounding its inputs to 10 bits, where the
    interpolation kernel computes in float32 (the products are small: two thin matrices)."""
    h, w = x.shape[-2:]
    out_h, out_w = (size, size) if isinstance(size, int) else size
    dtype = torch.float64
    rows = interpolation_matrix(h, out_h, dtype, x.device)          # H×h
    columns = interpolation_matrix(w, out_w, dtype, x.device)       # W×w
    with torch.autocast(x.device.type, enabled=False):
        out = (rows @ x.to(dtype) @ columns.T).to(x.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)    # as interpolate keeps it
    return out


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """n_out×n_in weights of 1-D linear interpolation with aligned corners: output i samples
    input position i·(n_in − 1)/(n_out − 1) from its two neighbours. Cached: read, never
    written."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    position = torch.arange(n_out, dtype=torch.float64) * scale
    low = position.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    weight = position - low
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    matrix.index_put_((rows, low), 1 - weight, accumulate=True)
    matrix.index_put_((rows, high), weight, accumulate=True)
    return matrix.to(dtype=dtype, device=device)
