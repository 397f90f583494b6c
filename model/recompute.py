"""Activation recomputation: trade a second forward pass for not storing activations."""
import torch.utils.checkpoint
from torch import is_grad_enabled


def maybe_recomputed(enabled, function, *args):
    """function(*args). When `enabled` and autograd records, only the inputs are kept for the
    backward pass, which reruns `function` (with the same dropout draws) to get its activations."""
    if enabled and is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)
    return function(*args)
