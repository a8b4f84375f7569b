"""Synthetic checkpoints in Google's exact `.npz` layout, written from the architecture numbers alone.

Independent of `vitlab.weights.npz.save_npz`: the key names and shapes are spelled out here as in
Google's `vit_jax/models_vit.py`, so a mistake in the exporter cannot hide a mistake in the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Arch:
    """The numbers that fix the shapes of a Google ViT checkpoint."""

    patch: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp: int = 3072
    img_size: int = 224
    num_classes: int = 21843
    representation: int | None = None  # pre_logits width (imagenet21k files: = width)
    cls: bool = True  # False: Google's "gap" models, no 'cls' and no CLS position
    channels: int = 3

    @property
    def grid(self) -> int:
        return self.img_size // self.patch


def google_arrays(arch: Arch, seed: int = 0, std: float = 0.05) -> dict[str, np.ndarray]:
    """Random float32 weights under Google's key names and shapes."""
    rng = np.random.default_rng(seed)

    def rand(*shape, mean=0.0):
        return mean + np.float32(std) * rng.standard_normal(shape, dtype=np.float32)

    d, h = arch.width, arch.heads
    tokens = arch.grid**2 + (1 if arch.cls else 0)
    arrays = {
        "embedding/kernel": rand(arch.patch, arch.patch, arch.channels, d),  # HWIO
        "embedding/bias": rand(d),
        "Transformer/posembed_input/pos_embedding": rand(1, tokens, d),
        "Transformer/encoder_norm/scale": rand(d, mean=1.0),
        "Transformer/encoder_norm/bias": rand(d),
    }
    if arch.cls:
        arrays["cls"] = rand(1, 1, d)
    for i in range(arch.depth):
        block = f"Transformer/encoderblock_{i}/"
        attention = block + "MultiHeadDotProductAttention_1/"
        arrays.update(
            {
                block + "LayerNorm_0/scale": rand(d, mean=1.0),
                block + "LayerNorm_0/bias": rand(d),
                block + "LayerNorm_2/scale": rand(d, mean=1.0),
                block + "LayerNorm_2/bias": rand(d),
                block + "MlpBlock_3/Dense_0/kernel": rand(d, arch.mlp),
                block + "MlpBlock_3/Dense_0/bias": rand(arch.mlp),
                block + "MlpBlock_3/Dense_1/kernel": rand(arch.mlp, d),
                block + "MlpBlock_3/Dense_1/bias": rand(d),
                attention + "out/kernel": rand(h, d // h, d),
                attention + "out/bias": rand(d),
            }
        )
        for name in ("query", "key", "value"):
            arrays[f"{attention}{name}/kernel"] = rand(d, h, d // h)
            arrays[f"{attention}{name}/bias"] = rand(h, d // h)
    features = d
    if arch.representation:
        arrays["pre_logits/kernel"] = rand(d, arch.representation)
        arrays["pre_logits/bias"] = rand(arch.representation)
        features = arch.representation
    if arch.num_classes:
        arrays["head/kernel"] = rand(features, arch.num_classes)
        arrays["head/bias"] = rand(arch.num_classes)
    return arrays


def write_google_npz(path: str | Path, arch: Arch, seed: int = 0, changes: dict | None = None) -> Path:
    """Write a synthetic checkpoint; `changes` replace (array) or delete (None) keys first."""
    arrays = google_arrays(arch, seed)
    for key, value in (changes or {}).items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


# Flax Linen numbers a block's submodules per class; Google's released files number them across
# classes in call order. Spelled out from Google's `vit_jax/models_vit.py` (Linen) and big_vision's
# `models/vit.py`, whose `fix_old_checkpoints` converts the released names the same way.
ORIGINAL_TO_LINEN = {
    "LayerNorm_0/": "LayerNorm_0/",
    "MultiHeadDotProductAttention_1/": "MultiHeadDotProductAttention_0/",
    "LayerNorm_2/": "LayerNorm_1/",
    "MlpBlock_3/": "MlpBlock_0/",
}


def linen_arrays(arch: Arch, seed: int = 0, big_vision: bool = False, scan: bool = False) -> dict[str, np.ndarray]:
    """The weights of `google_arrays(arch, seed)` as a Flax-Linen export writes them.

    `big_vision=True`: every key under "params/", the position table at the top level as
    "pos_embedding" for the patches only (big_vision adds no position to the CLS token, so this file
    equals the released layout with a zero CLS position); `scan=True`: all blocks stacked into
    "Transformer/encoderblock/" along a leading depth axis.
    """
    arrays = {}
    for key, value in google_arrays(arch, seed).items():
        if key.startswith("Transformer/encoderblock_"):
            block, module, rest = key.split("/", 3)[1], *key.split("/", 3)[2:]
            key = f"Transformer/{block}/{ORIGINAL_TO_LINEN[module + '/']}{rest}"
        arrays[key] = value
    if big_vision:
        table = arrays.pop("Transformer/posembed_input/pos_embedding")
        arrays["pos_embedding"] = table[:, 1:] if arch.cls else table
    if scan:
        per_block = {}
        for key in [k for k in arrays if k.startswith("Transformer/encoderblock_")]:
            _, block, rest = key.split("/", 2)
            per_block.setdefault(rest, {})[int(block.removeprefix("encoderblock_"))] = arrays.pop(key)
        for rest, blocks in per_block.items():
            arrays[f"Transformer/encoderblock/{rest}"] = np.stack([blocks[i] for i in range(arch.depth)])
    if big_vision:
        arrays = {f"params/{key}": value for key, value in arrays.items()}
    return arrays


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path
