"""Prior mask (paper Sec. 3.1, "pseudo mask aggregation"; the authors' OneModel.generate_prior):
where in the query the support's foreground likely is, from cosine similarities of frozen layer4
features. Nothing here is trained."""
import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.functional import COSINE_EPS


class PriorMask(nn.Module):
    """The prior mask; a module without parameters, so that a forward hook can read it.

    Always computed in float32 (float64 for float64 inputs), also under bf16/fp16 autocast: the
    min–max normalisation stretches the narrow range of the softmax-weighted mask sums to [0, 1],
    so their bf16 rounding moved the prior by up to 0.19 on a golden episode (5-shot, 233×233);
    in float32 it stays within 2e-5 of float64. The price: one similarity matmul per shot runs
    in float32 instead of bf16."""

    def forward(self, query_high: torch.Tensor, support_high: torch.Tensor, support_masks: torch.Tensor,
                fts_size: Sequence[int]) -> torch.Tensor:
        """query_high B×C×h×w, support_high B×K×C×S×S, support_masks B×K×S·S (at the feature
        grid) → B×1×fts_size×fts_size, averaged over the K shots."""
        dtype = torch.promote_types(query_high.dtype, torch.float32)
        device = query_high.device.type
        # 'meta' (shapes only, no data: FLOP counts, device checks) has no autocast to leave
        with torch.autocast(device, enabled=False) if device != 'meta' else contextlib.nullcontext():
            return _prior_mask(query_high.to(dtype), support_high.to(dtype), support_masks.to(dtype),
                               fts_size)


# Entries of one similarity block off CUDA (16 MB in float32): a block that stays in a CPU's
# last-level cache makes the division, softmax and mask product after its matmul cheaper (a 5-shot
# episode's prior at 473: 1.69 → 1.46 s on a 2-core AMD EPYC) and bounds the prior's memory.
CPU_BLOCK_ENTRIES = 1 << 22


def _prior_mask(query_high, support_high, support_masks, fts_size):
    b, k = support_high.shape[:2]
    h, w = query_high.shape[-2:]
    query = query_high.flatten(2).transpose(1, 2)                 # B×Nq×C
    query_norm = query.norm(dim=-1, keepdim=True)
    support_pixels = support_high.shape[-2] * support_high.shape[-1]
    # On CUDA one product per shot: fewer launches. A query pixel's row is the same arithmetic
    # in any block (the matmul kernel may sum in another order: 2e-14 apart in float64; at 473
    # in float32 the blocks measured bitwise equal to one product).
    rows = query.shape[1] if query.is_cuda else max(1, CPU_BLOCK_ENTRIES // (b * support_pixels))
    priors = []
    # One shot at a time: a B×Nq×Ns similarity is large (59M entries at 473), K of them at once
    # measured slower and needed K times the memory.
    for shot in range(k):
        support = support_high[:, shot].flatten(2)                # B×C×Ns
        support_norm = support.norm(dim=1, keepdim=True)
        mask = support_masks[:, shot].unsqueeze(-1)               # B×Ns×1
        priors.append(torch.cat([_mask_sums(query[:, i:i + rows], query_norm[:, i:i + rows],
                                            support, support_norm, mask)
                                 for i in range(0, query.shape[1], rows)], dim=1))
    prior = torch.stack(priors, dim=1)                            # B×K×Nq
    low = prior.min(dim=-1, keepdim=True).values
    high = prior.max(dim=-1, keepdim=True).values
    prior = (prior - low) / (high - low + COSINE_EPS)
    prior = F.interpolate(prior.view(b * k, 1, h, w), size=fts_size, mode='bilinear', align_corners=True)
    return prior.view(b, k, *prior.shape[-2:]).mean(dim=1, keepdim=True)


def _mask_sums(query, query_norm, support, support_norm, mask):
    """query B×n×C (n query pixels), support B×C×Ns → B×n: for each query pixel, the support
    mask weighted by the softmax of its cosine similarities over all support pixels."""
    # Query-major layout, so the softmax over support pixels runs on contiguous rows.
    similarity = query @ support
    similarity /= query_norm @ support_norm + COSINE_EPS
    return (F.softmax(similarity, dim=-1) @ mask).squeeze(-1)
