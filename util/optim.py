"""Optimisers and learning-rate schedule of the SCCAN recipe (the authors' OneModel.get_optim and
util/util.py, poly_learning_rate).

- SGD (momentum, weight decay) over the learnable modules outside the transformer, one group per
  module in the authors' order (SCCAN.SGD_MODULES); its lr follows poly decay
  base_lr·(1 − iter/max_iter)^power, and groups with index > index_split (all of them with the
  default −1) train at 10× that value: base_lr 0.005 starts at 0.05.
- AdamW over the SCCA transformer at a constant transformer_lr (6e-5).
A training step is forward_backward then optimizer_step (both optimisers under one loss scaler).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch

from util.episodes import TRAINING_INPUTS, batch_tensors

if TYPE_CHECKING:
    from model.sccan import SCCAN
    from util.config import Config
    from util.precision import Precision

LR_SCALE = 10.0     # the reference code's scale_lr for SGD groups past index_split


def build_optimizers(net: SCCAN, cfg: Config) -> tuple[torch.optim.SGD, torch.optim.AdamW]:
    """(sgd, adamw) for an SCCAN: SGD with one group per list of net.parameter_groups()[0],
    AdamW over its transformer."""
    sgd_groups, transformer_params = net.parameter_groups()
    sgd = torch.optim.SGD([{'params': group} for group in sgd_groups], lr=cfg.base_lr,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    adamw = torch.optim.AdamW(transformer_params, lr=cfg.transformer_lr)
    return sgd, adamw


def poly_lr(base_lr: float, iteration: int, max_iter: int, power: float, warmup_iters: int = 0) -> float:
    """lr at 1-based `iteration`: linear warmup from 0.1·base_lr over `warmup_iters`, then poly
    decay (reaching 0 at max_iter)."""
    if iteration < warmup_iters:
        return base_lr * (0.1 + 0.9 * iteration / warmup_iters)
    return base_lr * (1.0 - iteration / max_iter) ** power


def set_sgd_lr(optimizer: torch.optim.Optimizer, lr: float, index_split: int = -1,
               scale: float = LR_SCALE) -> None:
    """Groups up to index_split get lr, later groups lr·scale."""
    for index, group in enumerate(optimizer.param_groups):
        group['lr'] = lr if index <= index_split else lr * scale


def apply_schedule(optimizer: torch.optim.Optimizer, cfg: Config, iteration: int, max_iter: int,
                   iters_per_epoch: int) -> float:
    """Set the SGD lr for 1-based `iteration` from the config; returns the base lr used."""
    warmup_iters = iters_per_epoch // 2 if cfg.warmup else 0
    lr = poly_lr(cfg.base_lr, iteration, max_iter, cfg.power, warmup_iters)
    set_sgd_lr(optimizer, lr, cfg.index_split)
    return lr


def forward_backward(model: torch.nn.Module, batch: Mapping[str, Any], precision: Precision,
                     scaler: torch.amp.GradScaler, device: torch.device) -> torch.Tensor:
    """Training forward and backward of one batch (gradients left in place, summed over
    processes by DDP); returns this process's loss, detached."""
    inputs = batch_tensors(batch, device, TRAINING_INPUTS)
    for p in model.parameters():
        p.grad = None
    with precision.autocast():
        _, loss = model(*inputs)
    scaler.scale(loss).backward()     # on every process even when non-finite, as DDP needs
    return loss.detach()


def optimizer_step(scaler: torch.amp.GradScaler, optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """Step every optimiser through the one scaler, then update the scale once (PyTorch's
    pattern for several optimisers): with fp16, an optimiser whose gradients hold inf/NaN skips
    its step, and the scale is halved."""
    for optimizer in optimizers:
        scaler.step(optimizer)
    scaler.update()
