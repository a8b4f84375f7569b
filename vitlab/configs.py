"""Architectures: the `ModelConfig` dataclass and the named presets.

The ImageNet presets are the paper's Table 1 (Ti and S from DeiT / AugReg); the CIFAR presets are
small patch-4 models meant to be trained from scratch on 32 x 32 images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

CLASSIFIERS = ("token", "gap")


@dataclass
class ModelConfig:
    """Everything that fixes a ViT's shape; a preset is one of these with a name."""

    img_size: int = 224  # input height = width in pixels; must be a multiple of patch_size
    patch_size: int = 16  # P: each P x P patch becomes one token (16 -> "ViT-B_16")
    in_chans: int = 3  # input channels (RGB)
    hidden_size: int = 768  # D: token width throughout the encoder
    num_layers: int = 12  # L: number of encoder blocks
    num_heads: int = 12  # attention heads; hidden_size must divide evenly among them
    mlp_dim: int = 3072  # MLP hidden width, 4 * D in the paper's models
    num_classes: int = 1000  # output classes; 0 removes the head and the model returns features
    classifier: str = "token"  # "token": classify the CLS token; "gap": mean of the patch tokens
    class_token: bool = True  # prepend a learned CLS token (Google's "gap" models have none)
    fc_norm: bool = False  # MAE style: final LayerNorm on the pooled vector instead of on every token
    representation_size: int | None = None  # width of the pre-logits layer (Linear + tanh); None = none
    dropout_rate: float = 0.0  # dropout after position embeddings, attention output and MLP layers
    attention_dropout_rate: float = 0.0  # dropout on the attention probabilities
    drop_path_rate: float = 0.0  # stochastic depth at the last block (linearly less before it)

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def replace(self, **overrides) -> ModelConfig:
        """A copy with some fields changed; unknown field names are an error that lists the valid ones."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"unknown ModelConfig field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
        return dataclasses.replace(self, **overrides)


def _imagenet(patch: int, width: int, depth: int, heads: int, mlp: int, **extra) -> ModelConfig:
    return ModelConfig(
        img_size=224, patch_size=patch, hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=mlp, **extra
    )


def _cifar(width: int, depth: int, heads: int, mlp: int) -> ModelConfig:
    return ModelConfig(
        img_size=32, patch_size=4, hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=mlp, num_classes=10
    )


PRESETS: dict[str, ModelConfig] = {
    # The paper's models (Table 1); Ti and S as in DeiT and Google's AugReg release.
    "ViT-Ti_16": _imagenet(16, 192, 12, 3, 768),
    "ViT-S_16": _imagenet(16, 384, 12, 6, 1536),
    "ViT-S_32": _imagenet(32, 384, 12, 6, 1536),
    "ViT-B_16": _imagenet(16, 768, 12, 12, 3072),
    "ViT-B_32": _imagenet(32, 768, 12, 12, 3072),
    "ViT-L_16": _imagenet(16, 1024, 24, 16, 4096),
    "ViT-L_32": _imagenet(32, 1024, 24, 16, 4096),
    "ViT-H_14": _imagenet(14, 1280, 32, 16, 5120),
    # MAE-pre-trained ViT-B/16 fine-tuned on ImageNet-1k: global average pooling of the patch
    # tokens (the CLS token is kept but unused) and the final LayerNorm on the pooled vector.
    "ViT-B_16-MAE": _imagenet(16, 768, 12, 12, 3072, classifier="gap", fc_norm=True),
    # From scratch on CIFAR (32 x 32, patch 4 -> 64 tokens).
    # 2.7 M parameters: the ViT of Lee et al., "Vision Transformer for Small-Size Datasets".
    "ViT-CIFAR-3M": _cifar(192, 9, 12, 384),
    # 6.3 M parameters: the ViT of omihub777/ViT-CIFAR (90.9% after 200 epochs).
    "ViT-CIFAR-6M": _cifar(384, 7, 12, 384),
    # A few thousand parameters: for tests and the notebooks' smoke mode.
    "ViT-Test": ModelConfig(
        img_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=10
    ),
}

ALIASES: dict[str, str] = {
    # MindCV's ImageNet-1k names
    "vit_b_32_224": "ViT-B_32",
    "vit_l_16_224": "ViT-L_16",
    "vit_l_32_224": "ViT-L_32",
    # MindFormers' MAE-fine-tuned ViT-B/16
    "vit_base_p16": "ViT-B_16-MAE",
    # torchvision's names
    "vit_b_16": "ViT-B_16",
    "vit_b_32": "ViT-B_32",
    "vit_l_16": "ViT-L_16",
    "vit_l_32": "ViT-L_32",
    "vit_h_14": "ViT-H_14",
}


def resolve_model_name(name: str) -> str:
    """The preset name behind `name` (an alias or a preset); an unknown name lists the valid ones."""
    if name in PRESETS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def list_models() -> list[str]:
    """Every preset name, then every alias."""
    return list(PRESETS) + list(ALIASES)


def get_model_config(name: str, **overrides) -> ModelConfig:
    """A fresh copy of preset `name` with `overrides` applied."""
    return PRESETS[resolve_model_name(name)].replace(**overrides)
