"""Activation recomputation: trade a second forward pass for not storing activations."""
from typing import Any, Callable, TypeVar

import torch.utils.checkpoint
from torch import is_grad_enabled

_T = TypeVar('_T')


def maybe_recomputed(enabled: bool, function: Callable[..., _T], *args: Any) -> _T:
    """function(*args). When `enabled` and autograd records, only the inputs are kept for the
    backward pass, which reruns `function` (with the same dropout draws) to get its activations."""
    if enabled and is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)
    return function(*args)
