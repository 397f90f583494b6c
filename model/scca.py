"""Self-Calibrated Cross Attention (paper Sec. 3.2-3.3; the authors' model/swin_sccan.py): patch
split, patch alignment, scaled-cosine self+cross window attention, shifted windows, and the stack
of SCCA blocks."""
import torch
import torch.nn.functional as F
from torch import nn

from model.fast_paths import AUTO, fused_attention_on, switch_on
from model.functional import COSINE_EPS, MASKED_MEAN_EPS
from model.recompute import maybe_recomputed


def split_patches(x: torch.Tensor, window: int) -> torch.Tensor:
    """B×H×W×C → B×P×window²×C, patches in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(b, -1, window * window, c)


def merge_patches(patches: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `split_patches`: B×P×window²×C → B×H×W×C."""
    b, _, _, c = patches.shape
    x = patches.view(b, height // window, width // window, window, window, c).transpose(2, 3)
    return x.reshape(b, height, width, c)


class PatchAlignment(nn.Module):
    """Patch alignment (PAM): for every query patch, the index of the most similar support patch
    that holds foreground. A module without parameters, so that a forward hook can read what it
    aligns."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def forward(self, query: torch.Tensor, support: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
        """query/support B×C×H×W, support_mask B×1×H×W → B×P (long), patches in row-major order."""
        b, c = query.shape[:2]
        window, area = self.window, self.window * self.window
        query_protos = F.avg_pool2d(query, window).view(b, c, -1)                   # B×C×P
        mask_sums = F.avg_pool2d(support_mask, window) * area + MASKED_MEAN_EPS            # B×1×Ph×Pw
        support_protos = F.avg_pool2d(support * support_mask, window) * area / mask_sums
        support_protos = support_protos.view(b, c, -1).transpose(1, 2)             # B×P×C
        # A patch holds foreground unless its mask sum is exactly zero (the reference's test).
        has_foreground = (mask_sums.view(b, -1, 1) != MASKED_MEAN_EPS).to(query.dtype)     # B×P×1
        norms = support_protos.norm(dim=2, keepdim=True) @ query_protos.norm(dim=1, keepdim=True)
        cosine = (support_protos @ query_protos) / (norms + COSINE_EPS)            # B×Ps×Pq
        return (((cosine + 1) / 2) * has_foreground).max(dim=1).indices            # B×Pq


def gather_patches(patches: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """patches B×P×N×C, index B×Pq → B×Pq×N×C: the aligned support patch of every query patch."""
    return torch.gather(patches, 1, index[:, :, None, None].expand(-1, -1, *patches.shape[2:]))


class WindowAttention(nn.Module):
    """Multi-head attention of a patch over its keys. The first `tokens` keys are the patch itself
    (dot product × head_dim^-0.5); any further keys are the aligned support patch, compared by
    scaled cosine similarity, which keeps support features from dominating by magnitude.

    `fused` (set by SCCAN.set_fast_paths): one call to F.scaled_dot_product_attention instead of
    explicit logits (less memory; the faster path on GPUs); AUTO: on CUDA tensors, except in
    training under deterministic algorithms (model.fast_paths.fused_attention_on). Equal up to
    rounding: the cosine's 1e-7 guard sits on each norm (F.normalize) instead of on their
    product.

    Args:
        dim: token width C.
        num_heads: heads h; head width C / h.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.fused = AUTO
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        # x M×N×C, keys M×N'×C (N' = N: self only, 2N: self + cross)
        m, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).view(m, n, heads, c // heads).transpose(1, 2)                   # M×h×N×d
        k, v = self.kv(keys).view(m, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)  # 2×M×h×N'×d
        fused = fused_attention_on(self.fused, x.is_cuda)
        out = (self._fused_attention if fused else self._attention)(q, k, v)           # M×h×N×d
        return self.proj(out.transpose(1, 2).reshape(m, n, c))

    def _attention(self, q, k, v):
        """The authors' arithmetic (swin_sccan.py, WindowAttention.forward), each similarity
        scaled in place in one logits tensor: no slices and concatenation of the M×h×N×N'
        tensor, so fewer passes over it (bitwise the same values and gradients)."""
        n = q.shape[2]
        logits = q @ k.transpose(-2, -1)                                              # M×h×N×N'
        logits[..., :n].mul_(self.scale)
        if k.shape[2] > n:
            k_cross = k[:, :, n:]
            cross_norms = q.norm(dim=-1, keepdim=True) @ k_cross.norm(dim=-1, keepdim=True).transpose(-2, -1)
            logits[..., n:].div_(cross_norms.add_(COSINE_EPS))
        return logits.softmax(dim=-1) @ v

    def _fused_attention(self, q, k, v):
        """Both similarities from one dot product over doubled head dims: [q·scale, q̂] against
        [k, 0] for the patch's own keys and [0, k̂] for the support keys (hats: unit length)."""
        n = q.shape[2]
        if k.shape[2] == n:
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        k_self, k_cross = k[:, :, :n], F.normalize(k[:, :, n:], dim=-1, eps=COSINE_EPS)
        q = torch.cat([q * self.scale, F.normalize(q, dim=-1, eps=COSINE_EPS)], dim=-1)
        k = torch.cat([F.pad(k_self, (0, k_self.shape[-1])), F.pad(k_cross, (k_cross.shape[-1], 0))], dim=2)
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)


class Mlp(nn.Module):
    """Linear → GELU → Linear, applied to each token."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SCCABlock(nn.Module):
    """One block: query patches attend to themselves and their aligned support patch; support
    patches attend to themselves. Shifted blocks pad by half a window so patches straddle the
    previous block's borders (no attention mask: padded zero tokens take part)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float, shifted: bool):
        super().__init__()
        self.window = window
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn_q = WindowAttention(dim, num_heads)
        self.attn_s = WindowAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp_q = Mlp(dim, hidden)
        self.mlp_s = Mlp(dim, hidden)
        self.align = PatchAlignment(window)

    def _pad(self, x):  # B×H×W×C → B×H'×W'×C
        if not self.shifted:
            return x
        before, after = self.window // 2, self.window - self.window // 2
        return F.pad(x, (0, 0, before, after, before, after))

    def _crop(self, x, height, width):
        if not self.shifted:
            return x
        start = self.window // 2
        return x[:, start:start + height, start:start + width]

    def forward(self, q: torch.Tensor, s: torch.Tensor, s_mask: torch.Tensor,
                update_support: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """q, s B×H×W×C tokens, s_mask B×H×W×1 → (q, s); s is returned unchanged when
        `update_support` is False (the last block's support output is never used)."""
        b, height, width, c = q.shape
        q_norm, s_norm, mask = self._pad(self.norm1(q)), self._pad(self.norm1(s)), self._pad(s_mask)
        padded_h, padded_w = q_norm.shape[1:3]
        q_patches = split_patches(q_norm, self.window)                     # B×P×N×C
        s_patches = split_patches(s_norm, self.window)
        index = self.align(q_norm.permute(0, 3, 1, 2), s_norm.permute(0, 3, 1, 2), mask.permute(0, 3, 1, 2))
        keys = torch.cat([q_patches, gather_patches(s_patches, index)], dim=2)   # B×P×2N×C
        q = q + self._attend(self.attn_q, q_patches, keys, padded_h, padded_w, height, width)
        q = q + self.mlp_q(self.norm2(q))
        if update_support:
            s = s + self._attend(self.attn_s, s_patches, s_patches, padded_h, padded_w, height, width)
            s = s + self.mlp_s(self.norm2(s))
        return q, s

    def _attend(self, attention, patches, keys, padded_h, padded_w, height, width):
        b, p, n, c = patches.shape
        out = attention(patches.reshape(b * p, n, c), keys.reshape(b * p, -1, c))
        return self._crop(merge_patches(out.view(b, p, n, c), self.window, padded_h, padded_w), height, width)


class SCCAStage(nn.Module):
    """The blocks, under the authors' parameter names (transformer.layers.0.blocks.N)."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(SCCABlock(dim, num_heads, window, mlp_ratio, shifted=i % 2 == 1)
                                    for i in range(depth))


class SCCATransformer(nn.Module):
    """`depth` SCCA blocks (odd ones shifted) and a final LayerNorm on the query tokens.
    `recompute` (set by SCCAN.set_fast_paths): in training, keep only each block's inputs and
    rerun it in the backward pass; AUTO: off CUDA only (a GPU has the memory, and the rerun
    costs a fifth of its step)."""

    def __init__(self, dim: int = 256, depth: int = 8, num_heads: int = 8, window: int = 8,
                 mlp_ratio: float = 1.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"reduce_dim {dim} must be divisible by num_heads {num_heads}")
        self.window = window
        self.recompute = AUTO
        self.layers = nn.ModuleList([SCCAStage(dim, depth, num_heads, window, mlp_ratio)])
        self.norm0 = nn.LayerNorm(dim)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.layers[0].blocks

    def forward(self, query: torch.Tensor, support: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
        """query, support B×C×H×W, support_mask B×1×H×W → B×C×H×W (query tokens after norm0)."""
        height, width = query.shape[-2:]
        if height % self.window or width % self.window:
            raise ValueError(f"feature grid {height}×{width} must be a multiple of the window {self.window}")
        q, s, mask = (x.permute(0, 2, 3, 1) for x in (query, support, support_mask))  # B×H×W×C
        last = len(self.blocks) - 1
        recompute = self.training and switch_on(self.recompute, q.is_cuda, auto_on_cuda=False)
        for i, block in enumerate(self.blocks):
            q, s = maybe_recomputed(recompute, block, q, s, mask, i != last)
        return self.norm0(q).permute(0, 3, 1, 2)
