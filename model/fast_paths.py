"""The value of a fast-path switch that follows the device (SCCAN.set_fast_paths): AUTO decides
at every forward pass from where the tensors are, so that a model built on the CPU and moved to
a GPU (a bare `SCCAN(...)` in a notebook as much as the scripts) runs each device's fast path."""
import torch

AUTO = 'auto'


def check_switch(name: str, value: object) -> None:
    """Refuse a switch value other than True, False or AUTO (None means "leave as is" and is
    the caller's to skip)."""
    if value is not True and value is not False and value != AUTO:
        raise ValueError(f"{name} must be True, False or '{AUTO}', got {value!r}")


def switch_on(value: bool | str, on_cuda: bool, auto_on_cuda: bool) -> bool:
    """Whether a switch is on for tensors on CUDA (`on_cuda`) or not; AUTO is on where the
    tensors are on CUDA exactly when `auto_on_cuda`, and the opposite elsewhere."""
    if value == AUTO:
        return on_cuda == auto_on_cuda
    return bool(value)


def fused_attention_on(value: bool | str, on_cuda: bool) -> bool:
    """Whether the SCCA attention runs fused (model.scca.WindowAttention) for tensors on CUDA
    (`on_cuda`) or not. AUTO: on CUDA, except where autograd records under deterministic
    algorithms: in their warn-only mode (seed_deterministic's) PyTorch's fused attention kernels
    run a backward that adds with atomics in no fixed order; the plain attention's backward is
    deterministic in every mode, so it is taken in strict mode too."""
    if value == AUTO and torch.is_grad_enabled() and torch.are_deterministic_algorithms_enabled():
        return False
    return switch_on(value, on_cuda, auto_on_cuda=True)
