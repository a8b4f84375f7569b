"""State-dict key mappings between vitlab and timm's or torchvision's `VisionTransformer`.

The models hold the same tensors with the same shapes; only some module names differ
(vitlab names projections for what they make: `to_qkv`, `to_out`, and groups the blocks and the
final norm under `encoder`). torchvision's `nn.MultiheadAttention` packs q, k and v into one
`in_proj_weight` (3D, D) in the same order and head layout as vitlab's `to_qkv`. The hybrid's
ResNet (`patch_embed.backbone.*`) has timm's module names, so its keys pass through unchanged.
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
    (r"^pre_logits\.fc\.", "pre_logits.0."),  # timm < 0.6 kept Google's representation layer
]
_VITLAB_TO_TIMM = [
    (r"^encoder\.blocks\.", "blocks."),
    (r"\.attn\.to_qkv\.", ".attn.qkv."),
    (r"\.attn\.to_out\.", ".attn.proj."),
    (r"^encoder\.norm\.", "norm."),
]
_TORCHVISION_TO_VITLAB = [
    (r"^class_token$", "cls_token"),
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^encoder\.pos_embedding$", "pos_embed"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.", r"encoder.blocks.\1."),
    (r"\.ln_1\.", ".norm1."),
    (r"\.ln_2\.", ".norm2."),
    (r"\.self_attention\.in_proj_weight$", ".attn.to_qkv.weight"),
    (r"\.self_attention\.in_proj_bias$", ".attn.to_qkv.bias"),
    (r"\.self_attention\.out_proj\.", ".attn.to_out."),
    (r"\.mlp\.(0|linear_1)\.", ".mlp.fc1."),  # torchvision < 0.13 named the MLP's layers linear_1/2
    (r"\.mlp\.(3|linear_2)\.", ".mlp.fc2."),
    (r"^encoder\.ln\.", "encoder.norm."),
    (r"^heads\.head\.", "head."),
    (r"^heads\.pre_logits\.", "pre_logits.0."),
]
_VITLAB_TO_TORCHVISION = [
    (r"^cls_token$", "class_token"),
    (r"^patch_embed\.proj\.", "conv_proj."),
    (r"^pos_embed$", "encoder.pos_embedding"),
    (r"^encoder\.blocks\.(\d+)\.", r"encoder.layers.encoder_layer_\1."),
    (r"\.norm1\.", ".ln_1."),
    (r"\.norm2\.", ".ln_2."),
    (r"\.attn\.to_qkv\.weight$", ".self_attention.in_proj_weight"),
    (r"\.attn\.to_qkv\.bias$", ".self_attention.in_proj_bias"),
    (r"\.attn\.to_out\.", ".self_attention.out_proj."),
    (r"\.mlp\.fc1\.", ".mlp.0."),
    (r"\.mlp\.fc2\.", ".mlp.3."),
    (r"^encoder\.norm\.", "encoder.ln."),
    (r"^head\.", "heads.head."),
    (r"^pre_logits\.0\.", "heads.pre_logits."),
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


def torchvision_to_vitlab(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision `vit_*` state dict with vitlab's key names (tensors shared, not copied)."""
    return _rename(state_dict, _TORCHVISION_TO_VITLAB)


def vitlab_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vitlab state dict with torchvision's key names (tensors shared, not copied)."""
    return _rename(state_dict, _VITLAB_TO_TORCHVISION)
