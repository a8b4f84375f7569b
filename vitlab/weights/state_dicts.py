"""PyTorch state dicts from timm, torchvision and vitlab itself, read safely and renamed to vitlab's keys.

file (.pth / .pt / .bin / .safetensors)
  -> read_torch_state_dict   tensors only (weights_only=True), unwrapped from {"model": ...}
  -> detect_layout           "timm" (also MAE's releases), "torchvision" or "vitlab"
  -> to_vitlab_state_dict    vitlab's key names, plus the file's own names for error messages
  -> vitlab.weights.load.apply_state_dict   the same checks, resizing and atomic load as for .npz
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vitlab.configs import GOOGLE_MEAN, GOOGLE_STD, IMAGENET_MEAN, IMAGENET_STD
from vitlab.errors import BadValue, MissingFile
from vitlab.model import VisionTransformer
from vitlab.weights import dinov2
from vitlab.weights.convert import timm_to_vitlab, torchvision_to_vitlab, vitlab_to_timm, vitlab_to_torchvision
from vitlab.weights.errors import CheckpointError, unreadable_torch_file

__all__ = [
    "TORCH_SUFFIXES",
    "adopt_input_normalization",
    "detect_layout",
    "read_for_model",
    "read_torch_state_dict",
    "to_vitlab_state_dict",
    "torchvision_to_vitlab",
]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
LAYOUTS = ("timm", "torchvision", "vitlab", *dinov2.LAYOUTS)
# Training scripts wrap the weights: MAE and vitlab's trainer under "model", Lightning under "state_dict".
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
# DistributedDataParallel and torch.compile put these in front of every key.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# --- reading ---------------------------------------------------------------------------------------
def read_torch_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a `.pth` / `.pt` / `.bin` (weights only) or `.safetensors` file, unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"checkpoint {path} does not exist: check the path (python -m vitlab.download --list)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes), an interrupted download: fetch it again")
    if path.suffix.lower() == ".safetensors":
        content = _read_safetensors(path)
    else:
        content = _read_pickle(path)
    return _unwrap(content, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError for bad headers and short files
        raise CheckpointError(
            f"checkpoint {path} ({path.stat().st_size:,} bytes) is truncated or not a .safetensors file "
            f"({type(error).__name__}: {error}): delete it and fetch it again"
        ) from error


def _read_pickle(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails in many ways: OSError, RuntimeError, EOFError, struct.error
        raise unreadable_torch_file(path, error, "delete it and fetch it again") from error


def _is_state_dict(content) -> bool:
    return isinstance(content, dict) and bool(content) and all(isinstance(v, torch.Tensor) for v in content.values())


def _unwrap(content, path: Path) -> dict[str, torch.Tensor]:
    """The state dict itself: found under a wrapper key if needed, without DDP / compile prefixes."""
    if not _is_state_dict(content) and isinstance(content, dict):
        inner = next((content[key] for key in WRAPPER_KEYS if _is_state_dict(content.get(key))), None)
        content = inner if inner is not None else content
    if not _is_state_dict(content):
        what = f"a dict with keys {sorted(content)[:8]}" if isinstance(content, dict) else f"a {type(content).__name__}"
        raise CheckpointError(
            f"checkpoint {path} holds {what}, not a state dict (names -> tensors) or one under "
            f"{' / '.join(repr(k) for k in WRAPPER_KEYS)}"
        )
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in content):
            content = {key.removeprefix(prefix): value for key, value in content.items()}
    return dict(content)


# --- layouts ---------------------------------------------------------------------------------------
def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """Which library's key names a ViT state dict uses: "timm", "torchvision", "vitlab" or a DINOv2 layout
    ("dinov2-meta", "dinov2-timm", "dinov2-hf"; see `vitlab.weights.dinov2`)."""
    keys = set(state_dict)
    found = dinov2.detect(keys)
    if found:
        return found
    if "class_token" in keys or "conv_proj.weight" in keys or any(k.startswith("encoder.layers.") for k in keys):
        return "torchvision"
    if any(k.startswith("encoder.blocks.") for k in keys):
        return "vitlab"
    if any(k.startswith("blocks.") for k in keys) or "patch_embed.proj.weight" in keys:
        return "timm"
    preview = ", ".join(sorted(keys)[:6])
    raise CheckpointError(
        f"cannot tell whose Vision Transformer these weights are (keys: {preview}, ...): expected timm's names "
        "(blocks.0.attn.qkv.weight), torchvision's (encoder.layers.encoder_layer_0...) or vitlab's "
        "(encoder.blocks.0...)"
    )


_TO_VITLAB = {"timm": timm_to_vitlab, "torchvision": torchvision_to_vitlab, "vitlab": dict}
_FROM_VITLAB = {"timm": vitlab_to_timm, "torchvision": vitlab_to_torchvision, "vitlab": dict}
for _layout in dinov2.LAYOUTS:
    _TO_VITLAB[_layout] = lambda state_dict, layout=_layout: dinov2.to_vitlab(state_dict, layout)
    _FROM_VITLAB[_layout] = lambda names, layout=_layout: dict.fromkeys(dinov2.file_names(names, layout))


def to_vitlab_state_dict(
    state_dict: dict[str, torch.Tensor], model: VisionTransformer, layout: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename to vitlab's keys: returns (state dict, {vitlab key: the file's own key name} for messages)."""
    layout = layout or detect_layout(state_dict)
    if layout not in LAYOUTS:
        raise BadValue(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    renamed = _TO_VITLAB[layout](state_dict)
    # Names the file uses (or would use, for keys it lacks), so errors speak the file's language.
    model_keys = list(model.state_dict())
    key_names = dict(zip(model_keys, _FROM_VITLAB[layout](dict.fromkeys(model_keys))))
    if len(renamed) == len(state_dict):  # one file key per vitlab key (Hugging Face's q, k, v are three)
        key_names.update(zip(renamed, state_dict))
    if "fc_norm.weight" in renamed and not model.cfg.fc_norm:
        raise CheckpointError(
            "the checkpoint normalises the pooled vector (fc_norm, MAE style) but the model normalises every token: "
            "build the model with fc_norm=True, classifier='gap' (the preset vit_base_p16 for MAE's ViT-B/16)"
        )
    return renamed, key_names


def read_for_model(
    path: str | os.PathLike, model: VisionTransformer
) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """Read a PyTorch weights file and rename it for `model`: (vitlab state dict, key names for messages, layout)."""
    state_dict = read_torch_state_dict(path)
    try:
        layout = detect_layout(state_dict)
        return (*to_vitlab_state_dict(state_dict, model, layout), layout)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def adopt_input_normalization(model: VisionTransformer, layout: str) -> list[str]:
    """Fit `model.cfg.image_mean/std` to weights of `layout` loaded into it; returns notes for the load report.

    torchvision's ViTs are trained on ImageNet-normalised inputs, so a model still set to Google's
    [-1, 1] is switched to ImageNet's mean and std. timm's weights vary (MAE's and DeiT's use
    ImageNet's statistics, Google's ports [-1, 1]), so for them the model is left alone and only told.
    """
    cfg = model.cfg
    if (cfg.image_mean, cfg.image_std) != (GOOGLE_MEAN, GOOGLE_STD) or layout == "vitlab":
        return []
    overrides = f"model_overrides={{'image_mean': {IMAGENET_MEAN}, 'image_std': {IMAGENET_STD}}}"
    if layout == "torchvision" or layout in dinov2.LAYOUTS:
        model.cfg = cfg.replace(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
        who = "DINOv2" if layout in dinov2.LAYOUTS else "torchvision"
        return [
            f"{who} weights expect ImageNet mean/std inputs: model.cfg.image_mean/std set to "
            f"{IMAGENET_MEAN}/{IMAGENET_STD}; for training pass {overrides}"
        ]
    return [
        "timm-layout weights: MAE's and many timm models expect ImageNet mean/std inputs, Google's ports "
        "[-1, 1]; the model keeps [-1, 1] (mean/std 0.5): if these weights want ImageNet's, build the model "
        f"with image_mean={IMAGENET_MEAN}, image_std={IMAGENET_STD} (for training pass {overrides})"
    ]
