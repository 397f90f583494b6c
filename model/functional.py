"""Small tensor operations shared by SCCAN's parts, with the authors' numerical guards."""
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Cosine similarity a·b / (|a|·|b| + COSINE_EPS): the prior mask and patch alignment (the
# authors' model/SCCAN.py, OneModel.generate_prior; model/swin_sccan.py).
COSINE_EPS = 1e-7
# Masked average pooling Σ f·m / (Σ m + MASKED_MEAN_EPS): support prototypes (their
# Weighted_GAP) and patch prototypes of patch alignment.
MASKED_MEAN_EPS = 5e-4


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True, as every resize of the authors' model.
    x N×C×h×w → N×C×size, channels-last.

    PyTorch's CPU bilinear kernel works channels-last and would convert an N×C×H×W input there
    and back, a slow transposing copy on wide maps. The values are the same either way."""
    return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode='bilinear',
                         align_corners=True)
