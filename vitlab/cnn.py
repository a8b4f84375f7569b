"""The CNN of the controlled comparison: the CIFAR ResNet of He et al. (2016, Section 4.2), from torchvision's blocks.

    image (B, 3, 32, 32)
      -> stem                    3x3 convolution to 16 channels, BatchNorm, ReLU          (B, 16, 32, 32)
      -> stage 1                 n basic blocks at 16 channels                            (B, 16, 32, 32)
      -> stage 2                 n blocks at 32 channels, the first with stride 2         (B, 32, 16, 16)
      -> stage 3                 n blocks at 64 channels, the first with stride 2         (B, 64, 8, 8)
      -> pool                    global average over the 8 x 8 positions                  (B, 64)
      -> head                    Linear to classes

With n = 3 blocks per stage it is ResNet-20 (6n + 2 = 20 weight layers): 272,474 parameters with 10
classes (torchvision's `BasicBlock`, whose shortcut across a change of width is a 1x1 convolution; the
paper's option A pads with zeros instead and has 269,722) and about 41 MFLOPs per 32 px image.

What a ViT must learn from data, these layers have built in: a 3x3 kernel sees only neighbouring pixels
(locality), and the same kernel slides over every position (weight sharing, so a cat's ear is detected
wherever it is). There are no tokens, no attention and no position embeddings: the attention maps and
position-embedding figures of `vitlab.visualize` have nothing to show for this model.

The model is described by a `ModelConfig` with `architecture="resnet"`, so that the presets, `create_model`,
checkpoints, the trainer, `evaluate` and `predict` treat it as they treat a ViT: `hidden_size` is the width
of the first stage (16), `num_layers` the blocks per stage (3); the attention fields are unused.
"""

from __future__ import annotations

import torch
from torch import nn

from vitlab.configs import ModelConfig
from vitlab.errors import BadType, BadValue

STAGES = 3  # the CIFAR ResNets have three stages, each halving the grid and doubling the width after the first


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: a 3x3 stem, three stages of n basic blocks, global average pooling, a head."""

    def __init__(self, cfg: ModelConfig):
        # torchvision's blocks, imported here: torchvision's import pulls in torch._dynamo, which a command's
        # --help should not wait for.
        from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3

        super().__init__()
        if cfg.architecture != "resnet":
            raise BadValue(f"CifarResNet builds architecture 'resnet', got {cfg.architecture!r}")
        self.cfg = cfg
        width = cfg.hidden_size
        self.stem = nn.Sequential(conv3x3(cfg.in_chans, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        stages, channels = [], width
        for stage in range(STAGES):
            out, stride = width * 2**stage, 1 if stage == 0 else 2
            blocks = []
            for block in range(cfg.num_layers):
                shortcut = None
                if block == 0 and (stride != 1 or channels != out):  # the identity cannot skip a change of shape
                    shortcut = nn.Sequential(conv1x1(channels, out, stride), nn.BatchNorm2d(out))
                blocks.append(BasicBlock(channels, out, stride if block == 0 else 1, downsample=shortcut))
                channels = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = channels
        self.head = nn.Linear(channels, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()
        # Convolutions on CPUs run faster on channels-last tensors (pixels outermost, channels innermost): a
        # training step of batch 128 took 1/1.38 of the time on 2 cores. Only the layout changes, not the values.
        self.to(memory_format=torch.channels_last)

    def init_weights(self) -> None:
        """He initialisation for convolutions (the ResNet paper's), BatchNorm at scale 1 and shift 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (B, C, H / 4, W / 4): 64 channels on an 8 x 8 grid for 32 px inputs."""
        return self.stages(self.stem(x.contiguous(memory_format=torch.channels_last)))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))  # (B, C): global average pooling
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_attention_maps(self, x: torch.Tensor):
        raise BadType(
            "a CNN has no attention maps: ResNet-20 mixes neighbouring pixels with 3x3 convolutions, it has no "
            "tokens attending to each other; attention maps and rollout are for the ViT models"
        )

    def get_num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def reset_classifier(self, num_classes: int) -> None:
        """A new zero-initialised head for `num_classes` classes (0 removes it: the model returns pooled features)."""
        self.cfg = self.cfg.replace(num_classes=num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
