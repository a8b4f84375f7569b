"""State-dict key mappings between vitlab and timm's `VisionTransformer`.

The two models hold the same tensors with the same shapes; only some module names differ
(vitlab names projections for what they make: `to_qkv`, `to_out`, and groups the blocks and the
final norm under `encoder`).
"""

from __future__ import annotations

import re

import torch

# (timm pattern, vitlab replacement); applied in order, each at most once per key.
_TIMM_TO_VITLAB = [
    (r"^blocks\.", "encoder.blocks."),
    (r"\.attn\.qkv\.", ".attn.to_qkv."),
    (r"\.attn\.proj\.", ".attn.to_out."),
    (r"^norm\.", "encoder.norm."),
]
_VITLAB_TO_TIMM = [
    (r"^encoder\.blocks\.", "blocks."),
    (r"\.attn\.to_qkv\.", ".attn.qkv."),
    (r"\.attn\.to_out\.", ".attn.proj."),
    (r"^encoder\.norm\.", "norm."),
]


def _rename(state_dict: dict[str, torch.Tensor], rules) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key, count=1)
        renamed[key] = value
    return renamed


def timm_to_vitlab(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ViT state dict with vitlab's key names (tensors shared, not copied)."""
    return _rename(state_dict, _TIMM_TO_VITLAB)


def vitlab_to_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vitlab state dict with timm's key names (tensors shared, not copied)."""
    return _rename(state_dict, _VITLAB_TO_TIMM)
