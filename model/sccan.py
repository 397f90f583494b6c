"""SCCAN (SPEC §2): frozen backbone → mid-level features, prototypes and prior mask → feature
fusion → SCCA transformer → ASPP decoder → two-class logits at input size."""
import torch
import torch.nn.functional as F
from torch import nn

from model.backbone import Backbone
from model.decoder import ASPP, classifier, decode, reduce_block, residual_block
from model.loss import weighted_dice_loss
from model.prior import prior_mask
from model.scca import SCCATransformer

MID_CHANNELS = 512 + 1024   # layer2 ‖ layer3
PROTOTYPE_EPS = 5e-4
OUTPUT_STRIDE = 8


def resize(x, size):
    # PyTorch's CPU bilinear kernel works channels-last and would convert an N×C×H×W input there
    # and back, a slow transposing copy on wide maps (5×2048×60×60: 0.86 s instead of 0.18 s).
    # The values are the same; the result stays channels-last.
    return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode='bilinear',
                         align_corners=True)


def reduce_mid_features(channels):   # down_query / down_supp: 1536 → C
    return nn.Sequential(nn.Conv2d(MID_CHANNELS, channels, 1, bias=False), nn.ReLU(), nn.Dropout2d(p=0.5))


def fusion(channels):                # init_merge_query / init_merge_supp: 2C+1 → C
    return nn.Sequential(nn.Conv2d(channels * 2 + 1, channels, 1, bias=False))


def support_prototype(features, masks):
    """Masked average pooling. features B×K×C×S×S, masks B×K×1×S×S → B×K×C×1×1."""
    area = masks.sum(dim=(-2, -1), keepdim=True) + PROTOTYPE_EPS
    return (features * masks).sum(dim=(-2, -1), keepdim=True) / area


class SCCAN(nn.Module):
    def __init__(self, layers=50, shot=1, backbone_weights=None, fts_size=64, window_size=8, depth=8,
                 num_heads=8, mlp_ratio=1.0, reduce_dim=256, zoom_factor=8, recompute=True,
                 fused_attention=False):
        """recompute: in training, store only the inputs of each SCCA block and recompute its
        activations in the backward pass (half the peak memory, same gradients). The decoder is
        not: its backward runs before the blocks', so its activations never add to that peak.
        fused_attention: SCCA attention through F.scaled_dot_product_attention (see WindowAttention)."""
        super().__init__()
        if shot < 1:
            raise ValueError(f"shot must be ≥ 1, got {shot}")
        if fts_size % window_size:
            raise ValueError(f"fts_size {fts_size} must be a multiple of window_size {window_size}")
        self.layers, self.shot = layers, shot
        self.fts_size, self.zoom_factor = (fts_size, fts_size), zoom_factor
        self.backbone = Backbone(layers)
        if backbone_weights:
            self.backbone.load_pretrained(backbone_weights)
        self.down_query = reduce_mid_features(reduce_dim)
        self.down_supp = reduce_mid_features(reduce_dim)
        self.init_merge_query = fusion(reduce_dim)
        self.init_merge_supp = fusion(reduce_dim)
        self.transformer = SCCATransformer(reduce_dim, depth, num_heads, window_size, mlp_ratio, recompute,
                                           fused_attention)
        self.ASPP_meta = ASPP(reduce_dim)
        self.res1_meta = reduce_block(reduce_dim)
        self.res2_meta = residual_block(reduce_dim)
        self.cls_meta = classifier(reduce_dim)

    # ---- public API -------------------------------------------------------------------------
    def forward(self, query, support, support_masks, query_mask=None):
        """eval: logits B×2×H×W. train: (argmax prediction B×H×W, weighted Dice loss)."""
        self._check_inputs(query, support, support_masks, query_mask)
        # Two backbone calls: on the CPU one concatenated batch measured ~5 % slower.
        logits = self.segment(self.encode(query), self.encode(support.flatten(0, 1)), support_masks,
                              self.output_size(query.shape[-2:]))
        if not self.training:
            return logits
        if query_mask is None:
            raise ValueError("training mode needs query_mask (B×H×W of 0/1/255)")
        return logits.argmax(dim=1), weighted_dice_loss(logits, query_mask)

    def encode(self, images):
        """N×3×H×W → BackboneFeatures of the frozen backbone (no autograd)."""
        return self.backbone(images)

    def segment(self, query_feats, support_feats, support_masks, out_size):
        """Everything after the backbone. query_feats of B images, support_feats of B·K images in
        episode-major order, support_masks B×K×H×W → logits B×2×out_size."""
        b, k = support_masks.shape[:2]
        size = self.fts_size
        query = resize(self.down_query(query_feats.mid), size)                     # B×C×S×S
        support = resize(self.down_supp(support_feats.mid), size)
        support = support.view(b, k, *support.shape[1:])                          # B×K×C×S×S
        masks = resize((support_masks == 1).to(query.dtype).flatten(0, 1).unsqueeze(1), size)
        masks = masks.view(b, k, 1, *size)                                        # B×K×1×S×S
        support_high = resize(support_feats.high, size)
        prior = prior_mask(query_feats.high, support_high.view(b, k, *support_high.shape[1:]),
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

    def output_size(self, input_size):
        """Logit size for an input of `input_size`: (H−1)/8·zoom + 1 (= H with zoom 8)."""
        return tuple((s - 1) // OUTPUT_STRIDE * self.zoom_factor + 1 for s in input_size)

    def parameter_groups(self):
        """(SGD parameters, AdamW parameters): the transformer trains with AdamW (SPEC §5)."""
        sgd = [p for name, p in self.named_parameters()
               if p.requires_grad and not name.startswith('transformer.')]
        return sgd, list(self.transformer.parameters())

    def alignment_indices(self):
        """Per SCCA block, the aligned support patch of every query patch (B×P) of the last
        forward that ran uncompiled."""
        return [block.last_alignment for block in self.transformer.blocks]

    def load_backbone(self, path):
        self.backbone.load_pretrained(path)

    # ---- checks ----------------------------------------------------------------------------
    def _check_inputs(self, query, support, support_masks, query_mask):
        if query.dim() != 4 or query.shape[1] != 3:
            raise ValueError(f"query must be B×3×H×W, got shape {tuple(query.shape)}")
        b, _, h, w = query.shape
        if (h - 1) % OUTPUT_STRIDE or (w - 1) % OUTPUT_STRIDE:
            raise ValueError(f"input size {h}×{w}: (H−1) and (W−1) must be multiples of 8 (e.g. 473, 233, 97)")
        if support.dim() != 5 or support.shape[0] != b or support.shape[2:] != query.shape[1:]:
            raise ValueError(f"support must be B×K×3×H×W = {b}×K×3×{h}×{w}, got {tuple(support.shape)}")
        k = support.shape[1]
        if k != self.shot:
            raise ValueError(f"this model was built for {self.shot}-shot episodes, got {k} support images")
        if tuple(support_masks.shape) != (b, k, h, w):
            raise ValueError(f"support_masks must be B×K×H×W = {b}×{k}×{h}×{w}, got {tuple(support_masks.shape)}")
        if query_mask is not None and tuple(query_mask.shape) != (b, h, w):
            raise ValueError(f"query_mask must be B×H×W = {b}×{h}×{w}, got {tuple(query_mask.shape)}")
        return b, k

    def train(self, mode=True):
        """Frozen BN needs no care; this keeps the backbone in eval mode for clarity."""
        super().train(mode)
        self.backbone.eval()
        return self
