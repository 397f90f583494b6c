"""Random episode tensors for tests and benchmarks: the shapes of a batch of episodes, no data."""
import torch


def random_episode(b=2, k=1, size=65, seed=0):
    """Random inputs in the shapes of a batch of episodes (tests, benchmarks):
    query B×3×S×S and support B×K×3×S×S normal noise, support_masks B×K×S×S 0/1 with ignore
    (255) in the top 4 rows, query_mask B×S×S 0/1 (util.episodes.TRAINING_INPUTS, in that order)."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(b, 3, size, size, generator=g)
    support = torch.randn(b, k, 3, size, size, generator=g)
    masks = (torch.rand(b, k, size, size, generator=g) > 0.6).float()
    masks[:, :, :4] = 255
    query_mask = (torch.rand(b, size, size, generator=g) > 0.5).float()
    return query, support, masks, query_mask
