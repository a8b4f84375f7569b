"""`create_model` and `list_models`: build any preset, alias or variant by name."""

from __future__ import annotations

import sys
from pathlib import Path

from vitlab import commands
from vitlab.cnn import CifarResNet
from vitlab.configs import ALIASES, PRESETS, ModelConfig, get_model_config, list_models
from vitlab.hybrid import HybridEmbedding
from vitlab.model import VisionTransformer

__all__ = ["create_model", "list_models", "model_of", "show_support_list"]


def create_model(
    name: str,
    num_classes: int | None = None,
    img_size: int | None = None,
    pretrained: str | Path | None = None,
    **overrides,
) -> VisionTransformer:
    """Build preset `name` (see `list_models()`), optionally changing any `ModelConfig` field.

    "ResNet-20" is the CNN of the controlled comparison (`vitlab.cnn.CifarResNet`), built the same way.

    `pretrained` is a checkpoint path loaded with `vitlab.load_pretrained` (position embeddings
    resized to `img_size`, head replaced when `num_classes` differs).
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if img_size is not None:
        overrides["img_size"] = img_size
    model = model_of(get_model_config(name, **overrides))
    if pretrained is not None:
        from vitlab.weights.load import load_pretrained

        load_pretrained(model, pretrained)
    return model


def model_of(cfg: ModelConfig) -> VisionTransformer | CifarResNet:
    """The model `cfg` describes, with fresh weights: a ViT (the hybrid's with its ResNet stem), or the CIFAR
    ResNet for `architecture="resnet"`."""
    if cfg.architecture == "resnet":
        return CifarResNet(cfg)
    if cfg.resnet_layers:  # the hybrid: tokens from ResNet features instead of pixel patches (vitlab/hybrid.py)
        stem = HybridEmbedding(
            img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, hidden_size=cfg.hidden_size,
            layers=cfg.resnet_layers,
        )  # fmt: skip
        return VisionTransformer(cfg, patch_embed=stem)
    return VisionTransformer(cfg)


def show_support_list() -> str:
    """A printable table of every preset (size, patch, width, depth, heads) and alias."""
    lines = [f"{'name':<14} {'img':>4} {'patch':>5} {'width':>5} {'depth':>5} {'heads':>5} {'pool':>5}"]
    for name, cfg in PRESETS.items():
        if cfg.architecture == "resnet":
            lines.append(
                f"{name:<14} {cfg.img_size:>4}   CNN: {6 * cfg.num_layers + 2} layers, {cfg.hidden_size} channels first"
            )
            continue
        lines.append(
            f"{name:<14} {cfg.img_size:>4} {cfg.patch_size:>5} {cfg.hidden_size:>5} "
            f"{cfg.num_layers:>5} {cfg.num_heads:>5} {cfg.classifier:>5}"
        )
    lines.append("aliases: " + ", ".join(f"{alias} -> {target}" for alias, target in ALIASES.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m vitlab.factory`: print the table of presets and aliases."""
    import argparse

    parser = commands.ArgumentParser(
        prog="python -m vitlab.factory",
        description="Print every model preset (image size, patch, width, depth, heads, pooling)\n"
        "and every alias that vitlab.create_model and --model_type accept.",
        epilog="in Python:\n"
        "  vitlab.list_models()                                   # the names\n"
        '  vitlab.create_model("ViT-B_16", num_classes=10, img_size=224)\n'
        '  vitlab.create_model("ViT-B_16", num_layers=6)          # any ModelConfig field as a keyword',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.parse_args(argv)
    print(show_support_list())
    print(f"{len(list_models())} names")
    return 0


if __name__ == "__main__":
    sys.exit(commands.run(main))
