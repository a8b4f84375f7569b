"""DINOv2 weights in their three published layouts, renamed to vitlab's keys.

- Meta's hub files (`dinov2_vits14_pretrain.pth`): timm-like names, with `mask_token`, the
  registers as `register_tokens` and LayerScale as `blocks.i.ls1.gamma`.
- timm's (`vit_small_patch14_dinov2.lvd142m`): Meta's names without `mask_token`; its `_reg4_`
  models keep the registers as `reg_token` and fold the CLS position into `cls_token`, so their
  `pos_embed` holds the patch grid only.
- Hugging Face's (`facebook/dinov2-small`, `model.safetensors`): `embeddings.*` and
  `encoder.layer.i.*`, with q, k and v as three Linear layers (`attention.attention.query`; in the
  state dict of a transformers >= 5 model, `attention.q_proj`) and LayerScale as `lambda1`.

Each layout is one table of (theirs, vitlab's) name pieces; the names the other way are the same
table read backwards. `mask_token` (the masked-patch token of pre-training) passes through and is
dropped, with a line in the load report, by `vitlab.weights.load.apply_state_dict`.
"""

from __future__ import annotations

import re

import torch

from vitlab.weights.convert import TIMM_NAMES, rename_keys
from vitlab.weights.errors import CheckpointError

LAYOUTS = ("dinov2-meta", "dinov2-timm", "dinov2-hf")

# (the file's name piece, vitlab's), read as in `vitlab.weights.convert`: timm's ViT names, and its registers.
DINOV2_TIMM_NAMES = TIMM_NAMES + [("^reg_token", "^register_tokens")]  # Meta's name of the registers is vitlab's
HF_NAMES = [
    ("^embeddings.cls_token", "^cls_token"),
    ("^embeddings.mask_token", "^mask_token"),
    ("^embeddings.register_tokens", "^register_tokens"),
    ("^embeddings.position_embeddings", "^pos_embed"),
    ("^embeddings.patch_embeddings.projection.", "^patch_embed.proj."),
    ("^encoder.layer.", "^encoder.blocks."),
    (".attention.attention.qkv.", ".attn.to_qkv."),  # after q, k and v are joined (`_join_qkv`)
    (".attention.output.dense.", ".attn.to_out."),
    (".attention.o_proj.", ".attn.to_out."),  # transformers >= 5 in memory; its files keep the names above
    (".layer_scale1.lambda1", ".ls1.gamma"),
    (".layer_scale2.lambda1", ".ls2.gamma"),
    ("^layernorm.", "^encoder.norm."),
]
# Hugging Face's three projections: (pattern, their names, the joined layer), as its files name them and as
# the state dict of a transformers >= 5 model names them.
QKV_NAMES = [
    (r"(.*\.attention\.attention\.)(query|key|value)\.(weight|bias)$", ("query", "key", "value"), "qkv"),
    (r"(.*\.attention\.)(q_proj|k_proj|v_proj)\.(weight|bias)$", ("q_proj", "k_proj", "v_proj"), "attention.qkv"),
]
HF_PREFIX = "dinov2."  # Dinov2ForImageClassification keeps the backbone under this name


def detect(keys) -> str | None:
    """The DINOv2 layout of a state dict's keys, or None when it is not DINOv2's."""
    keys = {key.removeprefix(HF_PREFIX) for key in keys}
    if "embeddings.patch_embeddings.projection.weight" in keys:
        return "dinov2-hf"
    if not any(re.match(r"blocks\.\d+\.ls1\.", key) for key in keys):
        return None  # a plain ViT: timm's own layout
    return "dinov2-meta" if keys & {"mask_token", "register_tokens"} else "dinov2-timm"


def _refuse_swiglu(state_dict) -> None:
    if any(".mlp.w12." in key or ".mlp.weights_in." in key for key in state_dict):
        raise CheckpointError(
            "these are DINOv2 ViT-g/14 weights, whose MLP is a SwiGLU (mlp.w12 / mlp.w3), which vitlab's model does "
            "not implement: use the ViT-L/14 weights (dinov2_vitl14) or timm's vit_giant_patch14_dinov2"
        )


def _join_qkv(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face's query / key / value Linear layers as one `qkv` layer (q, k, v stacked, as timm's)."""
    joined = {}
    for key, value in state_dict.items():
        hit = next(((re.match(p, key), names, qkv) for p, names, qkv in QKV_NAMES if re.match(p, key)), None)
        if hit is None:
            joined[key] = value
            continue
        match, names, qkv = hit
        prefix, kind = match.group(1), match.group(3)
        if match.group(2) != names[0]:
            continue  # joined when its query was met
        parts = [state_dict.get(f"{prefix}{name}.{kind}") for name in names]
        if any(part is None for part in parts):
            raise CheckpointError(f"{prefix}{names[0]}.{kind} has no {names[1]} and {names[2]} beside it")
        joined[f"{prefix}{qkv}.{kind}"] = torch.cat(parts, dim=0)  # (3D, D) or (3D,)
    return joined


def to_vitlab(state_dict: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """A DINOv2 state dict of `layout` with vitlab's key names (tensors shared, except q/k/v joined)."""
    _refuse_swiglu(state_dict)
    if layout == "dinov2-hf":
        state_dict = {key.removeprefix(HF_PREFIX): value for key, value in state_dict.items()}
        state_dict = _join_qkv(state_dict)
        table = HF_NAMES
    else:
        table = DINOV2_TIMM_NAMES
    renamed = dict(zip(rename_keys(state_dict, table), state_dict.values()))
    pos, cls = renamed.get("pos_embed"), renamed.get("cls_token")
    if layout == "dinov2-timm" and pos is not None and cls is not None and _is_square(pos.shape[1]):
        # timm's "_reg4_" models: the CLS position is already in cls_token, pos_embed holds the patches only.
        renamed["pos_embed"] = torch.cat([torch.zeros_like(cls), pos], dim=1)  # (1, 1 + N, D)
    return renamed


def _is_square(count: int) -> bool:
    return int(count**0.5) ** 2 == count


def file_names(vitlab_keys, layout: str) -> list[str]:
    """The names a file of `layout` gives vitlab's keys (for messages; q, k and v shown together)."""
    table = HF_NAMES if layout == "dinov2-hf" else DINOV2_TIMM_NAMES
    names = rename_keys(vitlab_keys, table, backwards=True)
    if layout == "dinov2-hf":
        names = [name.replace(".attention.attention.qkv.", ".attention.attention.{query,key,value}.") for name in names]
    return names
