"""Prior mask ("pseudo mask aggregation", SPEC §2.6): where in the query the support's foreground
likely is, from cosine similarities of frozen layer4 features. Nothing here is trained."""
import torch.nn.functional as F

COSINE_EPS = 1e-7


def prior_mask(query_high, support_high, support_masks, fts_size):
    """query_high B×C×h×w, support_high B×K×C×S×S, support_masks B×K×S·S (at the feature grid)
    → B×1×fts_size×fts_size, averaged over the K shots."""
    b, k, c = support_high.shape[:3]
    h, w = query_high.shape[-2:]
    query = query_high.flatten(2).unsqueeze(1)                    # B×1×C×Nq
    support = support_high.flatten(3).transpose(-2, -1)           # B×K×Ns×C
    norms = support.norm(dim=-1, keepdim=True) @ query.norm(dim=2, keepdim=True)   # B×K×Ns×Nq
    similarity = (support @ query) / (norms + COSINE_EPS)
    # Each query pixel takes the softmax-weighted support mask over all support pixels.
    weights = F.softmax(similarity.transpose(-2, -1), dim=-1)     # B×K×Nq×Ns
    prior = (weights @ support_masks.unsqueeze(-1)).squeeze(-1)   # B×K×Nq
    low = prior.min(dim=-1, keepdim=True).values
    high = prior.max(dim=-1, keepdim=True).values
    prior = (prior - low) / (high - low + COSINE_EPS)
    prior = F.interpolate(prior.view(b * k, 1, h, w), size=fts_size, mode='bilinear', align_corners=True)
    return prior.view(b, k, *prior.shape[-2:]).mean(dim=1, keepdim=True)
