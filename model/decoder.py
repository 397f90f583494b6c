"""ASPP decoder (the authors' model/ASPP.py and the *_meta modules of OneModel): multi-rate
context, a residual refinement, a two-class classifier.

The parts are separate modules because SCCAN owns them under the authors' names
(`ASPP_meta`, `res1_meta`, `res2_meta`, `cls_meta`); `decode` wires them."""
import torch
from torch import nn


def conv(in_ch: int, out_ch: int, kernel: int, dilation: int = 1, bias: bool = False) -> nn.Conv2d:
    """A 'same'-padded convolution."""
    return nn.Conv2d(in_ch, out_ch, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=bias)


class ASPP(nn.Module):
    """Image pooling, 1×1 and three dilated 3×3 branches (rates 6, 12, 18), concatenated → 5C."""

    def __init__(self, channels: int):
        super().__init__()
        self.layer6_0 = nn.Sequential(conv(channels, channels, 1, bias=True), nn.ReLU())
        self.layer6_1 = nn.Sequential(conv(channels, channels, 1, bias=True), nn.ReLU())
        self.layer6_2 = nn.Sequential(conv(channels, channels, 3, dilation=6, bias=True), nn.ReLU())
        self.layer6_3 = nn.Sequential(conv(channels, channels, 3, dilation=12, bias=True), nn.ReLU())
        self.layer6_4 = nn.Sequential(conv(channels, channels, 3, dilation=18, bias=True), nn.ReLU())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B×C×h×w → B×5C×h×w
        pooled = self.layer6_0(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, *x.shape[-2:])
        branches = (self.layer6_1, self.layer6_2, self.layer6_3, self.layer6_4)
        return torch.cat([pooled] + [branch(x) for branch in branches], dim=1)


def reduce_block(channels: int) -> nn.Sequential:     # res1_meta: 5C → C
    return nn.Sequential(conv(channels * 5, channels, 1), nn.ReLU())


def residual_block(channels: int) -> nn.Sequential:   # res2_meta: added to its input
    return nn.Sequential(conv(channels, channels, 3), nn.ReLU(), conv(channels, channels, 3), nn.ReLU())


def classifier(channels: int, classes: int = 2) -> nn.Sequential:   # cls_meta
    return nn.Sequential(conv(channels, channels, 3), nn.ReLU(), nn.Dropout2d(p=0.1),
                         nn.Conv2d(channels, classes, 1))


def decode(aspp: nn.Module, reduce: nn.Module, residual: nn.Module, classify: nn.Module,
           x: torch.Tensor) -> torch.Tensor:
    """The decoder's wiring: ASPP → reduce → residual refinement → classifier. x B×C×h×w →
    logits B×2×h×w."""
    x = reduce(aspp(x))
    return classify(residual(x) + x)
