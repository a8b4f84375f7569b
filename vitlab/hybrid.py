"""The hybrid ViT's patch embedding (paper Section 3.1): a ResNet-50 stem whose feature map is the "image".

    image (B, 3, H, W)
      -> root         7x7/2 weight-standardised conv, GroupNorm, ReLU, 3x3/2 max-pool   (B, 64, H/4, W/4)
      -> stages       bottleneck units; stage 1 keeps the resolution, each later one halves it
                      (3, 4, 9) units: (B, 256, H/4) -> (B, 512, H/8) -> (B, 1024, H/16)
      -> proj         1 x 1 "patches" of the feature map, projected to D                  (B, N, D)

R50+ViT-B_16 drops ResNet-50's fourth stage and puts its 9 units into the third, so one token
covers 16 x 16 pixels as in ViT-B/16. The backbone is Google's `models_resnet.py` (a ResNet "v2"
with weight-standardised convolutions and GroupNorm, but post-activation units: conv -> GN -> ReLU),
with TF "SAME" padding. The numerical details follow timm's `vit_base_r50_s16_224`, the reference
the tests compare with: the standardised kernel is (w - mean) / sqrt(var + 1e-8) and GroupNorm's eps
is 1e-5. Google's flax code uses (w - mean) / (std + 1e-5) and GroupNorm eps 1e-6; on random weights
that moves the logits by about 0.1-0.6% (almost all of it from the kernel formula). Module names
follow timm's, so its state dicts load as they are.

`vitlab.model` does not import this module: `vitlab.factory.model_of` builds the stem and hands it to
`VisionTransformer(cfg, patch_embed=...)`, so vitlab/model.py runs on its own with torch and einops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitlab.model import PatchGrid

WEIGHT_STANDARDIZATION_EPS = 1e-8  # timm's StdConv2dSame for the hybrid
GROUP_NORM_EPS = 1e-5  # timm's GroupNormAct
GROUP_NORM_GROUPS = 32
STEM_WIDTH = 64  # channels of the root conv; a stage's units output 4x their bottleneck width


def pad_same(x: torch.Tensor, kernel_size: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow's "SAME" padding: output size ceil(H / stride); the odd pixel goes right / bottom."""
    padding = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel_size - size, 0)
        padding += [total // 2, total - total // 2]
    return F.pad(x, padding, value=value)


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation: each output filter is normalised to mean 0, variance 1.

    With GroupNorm after it, this lets the ResNet train with small per-device batches (BiT, Kolesnikov
    et al. 2020). Padding is TF "SAME", computed from the input size, as in Google's flax model.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)

    def standardized_weight(self) -> torch.Tensor:
        """The kernel actually used: per output channel, zero mean and unit variance (biased)."""
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, correction=0)
        return (self.weight - mean) / torch.sqrt(var + WEIGHT_STANDARDIZATION_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.standardized_weight(), None, self.stride)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS)


class Stem(nn.Module):
    """The root block: 7x7/2 conv, GroupNorm, ReLU, 3x3/2 max-pool; 4x smaller, 64 channels."""

    def __init__(self, in_chans: int, width: int = STEM_WIDTH):
        super().__init__()
        self.conv = StdConv2d(in_chans, width, kernel_size=7, stride=2)
        self.norm = group_norm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.conv(x)))  # (B, 64, H/2, W/2)
        x = pad_same(x, kernel_size=3, stride=2, value=float("-inf"))  # padding never wins the max
        return F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, H/4, W/4)


class Downsample(nn.Module):
    """The projection shortcut of a stage's first unit: 1x1 conv (strided) and GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv = StdConv2d(in_channels, out_channels, kernel_size=1, stride=stride)
        self.norm = group_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """A bottleneck unit: 1x1 (narrow) -> 3x3 (strided) -> 1x1 (4x wider), each conv -> GN; ReLU after the sum."""

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = 4 * width
        needs_projection = in_channels != out_channels or stride != 1
        self.downsample = Downsample(in_channels, out_channels, stride) if needs_projection else None
        self.conv1 = StdConv2d(in_channels, width, kernel_size=1)
        self.norm1 = group_norm(width)
        self.conv2 = StdConv2d(width, width, kernel_size=3, stride=stride)
        self.norm2 = group_norm(width)
        self.conv3 = StdConv2d(width, out_channels, kernel_size=1)
        self.norm3 = group_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return F.relu(y + shortcut)


class Stage(nn.Module):
    """`depth` bottleneck units of one width; the first one changes the resolution and channels."""

    def __init__(self, in_channels: int, width: int, depth: int, stride: int):
        super().__init__()
        units = [Bottleneck(in_channels, width, stride)]
        units += [Bottleneck(4 * width, width) for _ in range(depth - 1)]
        self.blocks = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResNetBackbone(nn.Module):
    """Stem and stages of a ResNet-v2 without the classifier: (B, C, H, W) -> (B, 256 * 2^(S-1), H/s, W/s)."""

    def __init__(self, layers: tuple[int, ...], in_chans: int = 3):
        super().__init__()
        if not layers or any(depth < 1 for depth in layers):
            raise ValueError(f"resnet_layers must be a non-empty tuple of unit counts >= 1, got {layers!r}")
        self.stem = Stem(in_chans)
        stages, in_channels = [], STEM_WIDTH
        for index, depth in enumerate(layers):
            width = STEM_WIDTH * 2**index
            stages.append(Stage(in_channels, width, depth, stride=1 if index == 0 else 2))
            in_channels = 4 * width
        self.stages = nn.Sequential(*stages)
        self.num_features = in_channels
        self.stride = 4 * 2 ** (len(layers) - 1)  # the stem divides by 4, every stage after the first by 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class HybridEmbedding(PatchGrid):
    """ResNet features as patches: every position of the final feature map becomes one token.

    The same interface as `vitlab.model.PatchEmbedding`; `patch_size` is the backbone's total
    stride (16 for three stages), the pixels each token covers.
    """

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, hidden_size: int, layers: tuple[int, ...]):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans)
        self.backbone = ResNetBackbone(tuple(layers), in_chans)
        if patch_size != self.backbone.stride:
            raise ValueError(
                f"patch_size {patch_size} does not match the ResNet's stride {self.backbone.stride} for "
                f"resnet_layers={tuple(layers)}: use patch_size={self.backbone.stride}"
            )
        # Google's hybrid configs use 1 x 1 patches of the feature map: a per-position Linear.
        self.proj = nn.Conv2d(self.backbone.num_features, hidden_size, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        features = self.backbone(x)  # (B, 1024, H/16, W/16)
        x = self.proj(features)  # (B, D, H/16, W/16)
        return rearrange(x, "b d gh gw -> b (gh gw) d")  # (B, N, D)
