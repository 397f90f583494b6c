"""SCCAN (paper Fig. 2; the authors' model/SCCAN.py, OneModel): frozen backbone → mid-level
features, support prototype and prior mask → feature fusion → SCCA transformer → ASPP decoder →
two-class logits at input size."""
from typing import List, Optional, Self, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from model.backbone import Backbone, BackboneFeatures
from model.decoder import ASPP, classifier, decode, reduce_block, residual_block
from model.fast_paths import AUTO, check_switch
from model.functional import MASKED_MEAN_EPS, resize
from model.loss import weighted_dice_loss
from model.prior import PriorMask
from model.scca import SCCATransformer, WindowAttention

OUTPUT_STRIDE = 8


def valid_input_size(size: int) -> bool:
    """Whether SCCAN takes images `size` pixels high (or wide): the backbone's stride-8 grid
    must fall on both borders, (size - 1) % 8 == 0 (input_size_rule)."""
    return size > 0 and (size - 1) % OUTPUT_STRIDE == 0


def input_size_rule(name: str = 'size') -> str:
    """valid_input_size in words, for messages about the value called `name`."""
    return f'({name} - 1) % {OUTPUT_STRIDE} == 0, e.g. 473, 233, 57'


def reduce_mid_features(in_channels: int, channels: int) -> nn.Sequential:
    """down_query / down_supp: 1×1 conv in_channels (the backbone's mid features, 1536 in the
    paper) → C, ReLU, Dropout2d(0.5)."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.ReLU(), nn.Dropout2d(p=0.5))


def fusion(channels: int) -> nn.Sequential:
    """init_merge_query / init_merge_supp: 1×1 conv 2C+1 → C."""
    return nn.Sequential(nn.Conv2d(channels * 2 + 1, channels, 1, bias=False))


def support_prototype(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked average pooling. features B×K×C×S×S, masks B×K×1×S×S → B×K×C×1×1."""
    area = masks.sum(dim=(-2, -1), keepdim=True) + MASKED_MEAN_EPS
    return (features * masks).sum(dim=(-2, -1), keepdim=True) / area


class SCCAN(nn.Module):
    """The Self-Calibrated Cross Attention Network.

    Every constructor argument is part of the architecture (`self.architecture`): checkpoints
    store it and model.build rebuilds from it. The defaults are the paper's; model.build names
    other variants. The weights do not depend on the number of shots K: any K runs. The backbone
    starts random: model.load_backbone_weights loads ImageNet weights into it.

    Args:
        layers: depth of the frozen ResNet backbone, 50 or 101 (14: one block per stage).
        backbone_width: base width of the backbone (64; its mid and high features are 24 and
            32 times as wide).
        fts_size: side S of the grid the SCCA blocks work on (64).
        window_size: patch (window) side of the SCCA blocks (8).
        depth: number of SCCA blocks (8); odd ones are shifted.
        num_heads: attention heads per block (8).
        mlp_ratio: MLP hidden width / reduce_dim (1).
        reduce_dim: feature width C (256).
        zoom_factor: logits size (H − 1) / 8 · zoom + 1 (8: the input size).

    Fast paths (`set_fast_paths`; all exact up to float rounding) are chosen by default, so that
    every entry point runs fast: channels-last memory format; on the CPU activation
    recomputation of the SCCA blocks in training (memory), on CUDA fused attention instead
    (speed). The last two follow the tensors' device at every forward ('auto').
    """

    def __init__(self, layers: int = 50, *, backbone_width: int = 64, fts_size: int = 64,
                 window_size: int = 8, depth: int = 8, num_heads: int = 8, mlp_ratio: float = 1.0,
                 reduce_dim: int = 256, zoom_factor: int = 8):
        super().__init__()
        if fts_size % window_size:
            raise ValueError(f"fts_size {fts_size} must be a multiple of window_size {window_size}")
        self.architecture = dict(layers=layers, backbone_width=backbone_width, fts_size=fts_size,
                                 window_size=window_size, depth=depth, num_heads=num_heads,
                                 mlp_ratio=mlp_ratio, reduce_dim=reduce_dim, zoom_factor=zoom_factor)
        self.fts_size, self.zoom_factor = (fts_size, fts_size), zoom_factor
        self.backbone = Backbone(layers, backbone_width)
        mid_channels = self.backbone.body.mid_channels
        self.down_query = reduce_mid_features(mid_channels, reduce_dim)
        self.down_supp = reduce_mid_features(mid_channels, reduce_dim)
        self.init_merge_query = fusion(reduce_dim)
        self.init_merge_supp = fusion(reduce_dim)
        self.prior = PriorMask()
        self.transformer = SCCATransformer(reduce_dim, depth, num_heads, window_size, mlp_ratio)
        self.ASPP_meta = ASPP(reduce_dim)
        self.res1_meta = reduce_block(reduce_dim)
        self.res2_meta = residual_block(reduce_dim)
        self.cls_meta = classifier(reduce_dim)
        self.set_fast_paths(channels_last=True, recompute=AUTO, fused_attention=AUTO)

    # ---- public API -------------------------------------------------------------------------
    def forward(self, query: torch.Tensor, support: torch.Tensor, support_masks: torch.Tensor,
                query_mask: Optional[torch.Tensor] = None
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """One batch of episodes.

        Args:
            query: B×3×H×W normalised images, (H − 1) % 8 == 0 and (W − 1) % 8 == 0.
            support: B×K×3×H×W normalised images.
            support_masks: B×K×H×W labels, 1 foreground, 0 background, 255 ignore.
            query_mask: B×H×W labels (0/1/255), needed in training mode.

        Returns:
            eval mode: logits B×2×H'×W' (background, foreground), H' = (H − 1) / 8 · zoom + 1.
            train mode: (argmax prediction B×H'×W', weighted Dice loss).
        """
        self._check_inputs(query, support, support_masks, query_mask)
        # Two backbone calls: one on the concatenated batch would first copy every image, for no gain.
        logits = self.segment(self.encode(query), self.encode(support.flatten(0, 1)), support_masks,
                              self.output_size(query.shape[-2:]))
        if not self.training:
            return logits
        if query_mask is None:
            raise ValueError("training mode needs query_mask (B×H×W of 0/1/255)")
        return logits.argmax(dim=1), weighted_dice_loss(logits, query_mask)

    def encode(self, images: torch.Tensor) -> BackboneFeatures:
        """Frozen backbone features (no autograd) of N×3×H×W images, for reuse across episodes.

        Returns:
            BackboneFeatures: mid N×1536×h×w (layer2 ‖ layer3), high N×2048×h×w (layer4) at the
            paper's backbone width, h = (H − 1) / 8 + 1.
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def segment(self, query_feats: BackboneFeatures, support_feats: BackboneFeatures,
                support_masks: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """Everything after the backbone.

        Args:
            query_feats: `encode` of the B query images.
            support_feats: `encode` of the B·K support images, episode-major.
            support_masks: B×K×H×W labels (0/1/255) at the images' size.
            out_size: (H', W') of the logits, e.g. `output_size(query.shape[-2:])`.

        Returns:
            logits B×2×H'×W'.
        """
        b, k = support_masks.shape[:2]
        size = self.fts_size
        query = resize(self.down_query(query_feats.mid), size)                     # B×C×S×S
        support = resize(self.down_supp(support_feats.mid), size)
        support = support.view(b, k, *support.shape[1:])                          # B×K×C×S×S
        masks = resize((support_masks == 1).to(query.dtype).flatten(0, 1).unsqueeze(1), size)
        masks = masks.view(b, k, 1, *size)                                        # B×K×1×S×S
        support_high = resize(support_feats.high, size)
        prior = self.prior(query_feats.high, support_high.view(b, k, *support_high.shape[1:]),
                           masks.flatten(2), size)                                # B×1×S×S
        # K-shot fusion is plain averaging of masks, masked features and prototypes.
        prototype = support_prototype(support, masks).mean(dim=1).expand_as(query)
        support = (support * masks).mean(dim=1)
        mask = masks.mean(dim=1)
        query = self.init_merge_query(torch.cat([query, prototype, prior], dim=1))
        support = self.init_merge_supp(torch.cat([support, prototype, mask], dim=1))
        fused = F.relu(self.transformer(query, support, mask))
        logits = decode(self.ASPP_meta, self.res1_meta, self.res2_meta, self.cls_meta, fused)
        return resize(logits, out_size)

    def output_size(self, input_size: Sequence[int]) -> Tuple[int, ...]:
        """Logit size for an input of `input_size`: (H − 1) / 8 · zoom + 1 (= H with zoom 8)."""
        return tuple((s - 1) // OUTPUT_STRIDE * self.zoom_factor + 1 for s in input_size)

    def set_fast_paths(self, channels_last: Optional[bool] = None,
                       recompute: Union[bool, str, None] = None,
                       fused_attention: Union[bool, str, None] = None) -> 'SCCAN':
        """Switch the exact speed-ups on or off (None: leave as is); returns the model.

        Args:
            channels_last: weights and images in channels-last memory format (faster
                convolutions on CPUs and GPUs). Kept by load_state_dict, .to() and .double().
            recompute: in training, keep only each SCCA block's inputs and rerun the block in
                the backward pass (half the peak memory, same gradients). The decoder is not
                recomputed: its backward runs before the blocks', so its activations never add
                to that peak. 'auto': on for tensors off CUDA, off on CUDA.
            fused_attention: SCCA attention through F.scaled_dot_product_attention
                (model.scca.WindowAttention): no attention matrix stored; the fast path on GPUs.
                'auto': on for CUDA tensors, off elsewhere and in training under deterministic
                algorithms (model.fast_paths.fused_attention_on).
        """
        for name, value in (('recompute', recompute), ('fused_attention', fused_attention)):
            if value is not None:
                check_switch(name, value)
        if channels_last is not None and not isinstance(channels_last, bool):
            raise ValueError(f'channels_last must be True or False, got {channels_last!r}')
        if channels_last is not None:
            self.channels_last = channels_last
            self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        if recompute is not None:
            self.transformer.recompute = recompute
        if fused_attention is not None:
            for module in self.modules():
                if isinstance(module, WindowAttention):
                    module.fused = fused_attention
        return self

    @property
    def fast_paths(self) -> dict:
        """The current switches of `set_fast_paths`."""
        fused = {m.fused for m in self.modules() if isinstance(m, WindowAttention)}
        return {'channels_last': self.channels_last, 'recompute': self.transformer.recompute,
                'fused_attention': fused.pop() if len(fused) == 1 else False}

    # The SGD groups of the authors' OneModel.get_optim, in their order: the lr schedule's
    # index_split counts groups in it.
    SGD_MODULES = ('down_query', 'down_supp', 'init_merge_query', 'init_merge_supp', 'ASPP_meta',
                   'res1_meta', 'res2_meta', 'cls_meta')

    def parameter_groups(self) -> Tuple[List[List[nn.Parameter]], List[nn.Parameter]]:
        """(SGD groups, AdamW parameters): one list of parameters per module of SGD_MODULES,
        and the SCCA transformer's, which trains with AdamW."""
        return ([list(getattr(self, name).parameters()) for name in self.SGD_MODULES],
                list(self.transformer.parameters()))

    # ---- checks ----------------------------------------------------------------------------
    def _check_inputs(self, query, support, support_masks, query_mask):
        if query.dim() != 4 or query.shape[1] != 3:
            raise ValueError(f"query must be B×3×H×W, got shape {tuple(query.shape)}")
        b, _, h, w = query.shape
        if not (valid_input_size(h) and valid_input_size(w)):
            raise ValueError(f"input size {h}×{w}: both sides must satisfy {input_size_rule('side')}")
        if support.dim() != 5 or support.shape[0] != b or support.shape[2:] != query.shape[1:]:
            raise ValueError(f"support must be B×K×3×H×W = {b}×K×3×{h}×{w}, got {tuple(support.shape)}")
        k = support.shape[1]
        if k < 1:
            raise ValueError("support must hold at least one image per episode (K ≥ 1)")
        if tuple(support_masks.shape) != (b, k, h, w):
            raise ValueError(f"support_masks must be B×K×H×W = {b}×{k}×{h}×{w}, "
                             f"got {tuple(support_masks.shape)}")
        if query_mask is not None and tuple(query_mask.shape) != (b, h, w):
            raise ValueError(f"query_mask must be B×H×W = {b}×{h}×{w}, got {tuple(query_mask.shape)}")

    def train(self, mode: bool = True) -> Self:
        """Frozen BN needs no care; this keeps the backbone in eval mode for clarity."""
        super().train(mode)
        self.backbone.eval()
        return self
