"""State-dict key names of other libraries' ViTs, one table per library, read both ways.

The models hold the same tensors with the same shapes; only some module names differ
(vitlab names projections for what they make: `to_qkv`, `to_out`, and groups the blocks and the
final norm under `encoder`). torchvision's `nn.MultiheadAttention` packs q, k and v into one
`in_proj_weight` (3D, D) in the same order and head layout as vitlab's `to_qkv`. The hybrid's
ResNet (`patch_embed.backbone.*`) has timm's module names, so its keys pass through unchanged.

A table lists (their name piece, vitlab's name piece) pairs; "^" anchors a piece at the start of a
key. Renaming applies each pair at most once per key, in order; the other direction reads the same
pairs backwards, so renaming `to_qkv` is a change in one place per library. Names that only older
files use are in a second, read-only table.
"""

from __future__ import annotations

import re

import torch

TIMM_NAMES = [
    ("^blocks.", "^encoder.blocks."),
    (".attn.qkv.", ".attn.to_qkv."),
    (".attn.proj.", ".attn.to_out."),
    ("^norm.", "^encoder.norm."),
]
TIMM_OLD_NAMES = [("^pre_logits.fc.", "^pre_logits.0.")]  # timm < 0.6 kept Google's representation layer
TORCHVISION_NAMES = [
    ("^class_token", "^cls_token"),
    ("^conv_proj.", "^patch_embed.proj."),
    ("^encoder.pos_embedding", "^pos_embed"),
    ("^encoder.layers.encoder_layer_", "^encoder.blocks."),
    (".ln_1.", ".norm1."),
    (".ln_2.", ".norm2."),
    (".self_attention.in_proj_weight", ".attn.to_qkv.weight"),
    (".self_attention.in_proj_bias", ".attn.to_qkv.bias"),
    (".self_attention.out_proj.", ".attn.to_out."),
    (".mlp.0.", ".mlp.fc1."),
    (".mlp.3.", ".mlp.fc2."),
    ("^encoder.ln.", "^encoder.norm."),
    ("^heads.head.", "^head."),
    ("^heads.pre_logits.", "^pre_logits.0."),
]
TORCHVISION_OLD_NAMES = [(".mlp.linear_1.", ".mlp.fc1."), (".mlp.linear_2.", ".mlp.fc2.")]  # torchvision < 0.13


def _compiled(table, backwards: bool) -> list[tuple[re.Pattern, str]]:
    rules = []
    for theirs, ours in table:
        source, target = (ours, theirs) if backwards else (theirs, ours)
        anchor = "^" if source.startswith("^") else ""
        rules.append((re.compile(anchor + re.escape(source.lstrip("^"))), target.lstrip("^")))
    return rules


def rename_keys(keys, table, backwards: bool = False) -> list[str]:
    """`keys` renamed by `table`: theirs to vitlab's, or with `backwards` vitlab's to theirs."""
    rules = _compiled(table, backwards)
    renamed = []
    for key in keys:
        for pattern, replacement in rules:
            key = pattern.sub(replacement, key, count=1)
        renamed.append(key)
    return renamed


def _rename(state_dict: dict[str, torch.Tensor], table, backwards: bool = False) -> dict[str, torch.Tensor]:
    return dict(zip(rename_keys(state_dict, table, backwards), state_dict.values()))


def timm_to_vitlab(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ViT state dict with vitlab's key names (tensors shared, not copied)."""
    return _rename(state_dict, TIMM_NAMES + TIMM_OLD_NAMES)


def vitlab_to_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vitlab state dict with timm's key names (tensors shared, not copied)."""
    return _rename(state_dict, TIMM_NAMES, backwards=True)


def torchvision_to_vitlab(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision `vit_*` state dict with vitlab's key names (tensors shared, not copied)."""
    return _rename(state_dict, TORCHVISION_NAMES + TORCHVISION_OLD_NAMES)


def vitlab_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vitlab state dict with torchvision's key names (tensors shared, not copied)."""
    return _rename(state_dict, TORCHVISION_NAMES, backwards=True)
