"""Frozen deep-stem dilated ResNet-50/101 ("v2", PSPNet's ImageNet weights; the authors'
model/backbone_res.py and backbone_utils.py).

Layout and parameter names follow the authors' `backbone.body.*` so their checkpoints and
`initmodel/resnet{50,101}_v2.pth` load as they are. A one-block-per-stage depth (14) and other
base widths than the paper's 64 make small backbones of the same layout, for tests and smoke runs.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# Depth, counted as for ResNet-50 (3 convolutions per bottleneck + 2) → blocks in layer1..layer4.
BLOCKS_PER_STAGE = {14: (1, 1, 1, 1), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BN_EPS = 1e-5


class BackboneFeatures(NamedTuple):
    """What SCCAN reads from the backbone for a batch of N images (stride 8); widths for the
    base width w (64 in the paper)."""
    mid: torch.Tensor   # N×24w×h×w: layer2 ‖ layer3 (1536 channels at w = 64)
    high: torch.Tensor  # N×32w×h×w: layer4 (2048 channels at w = 64)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (buffers, never trained). It is never
    run on its own: `folded_into` merges it into the convolution before it (an exact rewrite that
    saves a pass over every activation). The state dict keeps the authors' BN keys."""

    def __init__(self, channels: int):
        super().__init__()
        for name, value in (('weight', 1.0), ('bias', 0.0), ('running_mean', 0.0), ('running_var', 1.0)):
            self.register_buffer(name, torch.full((channels,), value))
        self._folded, self._folded_from = {}, None
        self.fold_resets = 0    # folded weights dropped so far; replay.module_state follows it

    def _apply(self, fn, recurse=True):
        self._reset_folded()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self._reset_folded()
        super()._load_from_state_dict(*args, **kwargs)

    def _reset_folded(self):
        """Drop the folded weights when the model is moved, cast or loaded: the new tensors may
        sit where freed ones sat, at version 0 again (a GPU's caching allocator hands the same
        blocks back), which the cache key alone would take for the old ones."""
        self._folded, self._folded_from = {}, None
        self.fold_resets += 1

    def folded_into(self, conv: nn.Conv2d,
                    dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of `conv` followed by this BN as one convolution, cast to `dtype`
        (None: as stored), as autocast would cast them for the convolution: the same values, but
        cast once rather than at every call (each is a kernel launch on a GPU). Computed once
        and reused until a source tensor changes (its storage, version, dtype or device), or
        the model is moved, cast or loaded (`_reset_folded`)."""
        if torch.compiler.is_compiling():   # traced into the graph: no Python-side cache there
            return self._fold(conv)
        sources = (conv.weight, self.weight, self.bias, self.running_mean, self.running_var)
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        if key != self._folded_from:
            self._folded, self._folded_from = {None: self._fold(conv)}, key
        if dtype not in self._folded:
            self._folded[dtype] = tuple(t.to(dtype) for t in self._folded[None])
        return self._folded[dtype]

    def _fold(self, conv):
        scale = self.weight * (self.running_var + BN_EPS).rsqrt()
        return conv.weight * scale.view(-1, 1, 1, 1), self.bias - self.running_mean * scale


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1,
            dilation: int = 1) -> tuple[nn.Conv2d, FrozenBatchNorm2d]:
    """A bias-free 'same'-padded convolution and the frozen BN after it."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=dilation * (kernel // 2),
                     dilation=dilation, bias=False)
    return conv, FrozenBatchNorm2d(out_ch)


def conv_bn_forward(conv: nn.Conv2d, bn: FrozenBatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """conv then BN, as one convolution with the folded weights (under autocast: held in its
    dtype, FrozenBatchNorm2d.folded_into)."""
    device = x.device.type
    autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
    dtype = torch.get_autocast_dtype(device) if autocast else None
    weight, bias = bn.folded_into(conv, dtype)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck: the stride sits on the 3×3 conv."""
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1, self.bn1 = conv_bn(in_ch, width, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride=stride, dilation=dilation)
        self.conv3, self.bn3 = conv_bn(width, out_ch, 1)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place: the backbone runs without autograd, and fewer fresh tensors is less traffic.
        out = conv_bn_forward(self.conv1, self.bn1, x).relu_()
        out = conv_bn_forward(self.conv2, self.bn2, out).relu_()
        out = conv_bn_forward(self.conv3, self.bn3, out)
        out += x if self.downsample is None else conv_bn_forward(*self.downsample, x)
        return out.relu_()


class DeepStemResNet(nn.Module):
    """Three 3×3 stem convs, max-pool, four bottleneck stages; layer3/4 dilated (output stride 8).

    Args:
        layers: depth, a key of BLOCKS_PER_STAGE.
        width: base width w: the stem is w, w, 2w wide, the stages' bottlenecks w, 2w, 4w, 8w
            (outputs four times that).
    """

    def __init__(self, layers: int = 50, width: int = 64):
        super().__init__()
        if layers not in BLOCKS_PER_STAGE:
            raise ValueError(f"layers must be one of {sorted(BLOCKS_PER_STAGE)}, got {layers!r}")
        if width < 1:
            raise ValueError(f"backbone_width must be positive, got {width!r}")
        self.conv1, self.bn1 = conv_bn(3, width, 3, stride=2)
        self.conv2, self.bn2 = conv_bn(width, width, 3)
        self.conv3, self.bn3 = conv_bn(width, 2 * width, 3)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._in_ch = 2 * width
        blocks = BLOCKS_PER_STAGE[layers]
        self.layer1 = self._stage(width, blocks[0], stride=1, dilation=1, previous_dilation=1)
        self.layer2 = self._stage(2 * width, blocks[1], stride=2, dilation=1, previous_dilation=1)
        # Dilation replaces the stride; the first block keeps the previous dilation (torchvision rule).
        self.layer3 = self._stage(4 * width, blocks[2], stride=1, dilation=2, previous_dilation=1)
        self.layer4 = self._stage(8 * width, blocks[3], stride=1, dilation=4, previous_dilation=2)
        del self._in_ch
        self.mid_channels = (2 * width + 4 * width) * Bottleneck.expansion     # layer2 ‖ layer3

    def _stage(self, width, n_blocks, stride, dilation, previous_dilation):
        blocks = [Bottleneck(self._in_ch, width, stride=stride, dilation=previous_dilation)]
        self._in_ch = width * Bottleneck.expansion
        blocks += [Bottleneck(self._in_ch, width, dilation=dilation) for _ in range(n_blocks - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = conv_bn_forward(self.conv1, self.bn1, x).relu_()
        x = conv_bn_forward(self.conv2, self.bn2, x).relu_()
        x = conv_bn_forward(self.conv3, self.bn3, x).relu_()
        layer1 = self.layer1(self.maxpool(x))
        layer2 = self.layer2(layer1)
        layer3 = self.layer3(layer2)
        return layer1, layer2, layer3, self.layer4(layer3)


class Backbone(nn.Module):
    """The frozen feature extractor: never trained, always run without autograd."""

    def __init__(self, layers: int = 50, width: int = 64):
        super().__init__()
        self.body = DeepStemResNet(layers, width)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BackboneFeatures:  # N×3×H×W → BackboneFeatures at stride 8
        _, layer2, layer3, layer4 = self.body(images)
        return BackboneFeatures(mid=torch.cat([layer2, layer3], dim=1), high=layer4)
