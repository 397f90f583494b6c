"""Weighted Dice loss (the authors' model/loss.py, WeightedDiceLoss), the only training loss of
SCCAN."""
import torch

DICE_EPS = 1e-8


def weighted_dice_loss(logits: torch.Tensor, label: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """logits B×2×H×W (background, foreground), label B×H×W of 0/1/255 → scalar.

    Each channel is scored on its own sigmoid; ignore pixels (255) are 0 in both targets but their
    predictions still count in Σp², as in the reference. Sum over channels and batch, divided by B."""
    target = torch.stack([label == 0, label == 1], dim=1).to(logits.dtype)   # B×2×H×W
    prob = torch.sigmoid(logits).flatten(2)
    target = target.flatten(2)
    denominator = (prob ** 2).sum(-1) + (target ** 2).sum(-1)
    dice = 2 * (prob * target).sum(-1) / denominator.clamp(min=DICE_EPS)
    return ((1 - dice) * weight).sum() / logits.shape[0]
