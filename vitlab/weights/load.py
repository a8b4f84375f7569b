"""Load any checkpoint into a model: `load_pretrained`, built on `apply_state_dict`.

Loading happens in two stages so that each checkpoint format only needs a reader:

1. a reader turns the file into a state dict with vitlab's names and PyTorch layouts
   (`vitlab.weights.npz` for Google's files, `vitlab.weights.state_dicts` for PyTorch files
   in timm's, torchvision's or vitlab's names);
2. `apply_state_dict` adapts it to the model (position-embedding grid, head, pre-logits), checks
   every key and shape *before* touching the model, then loads it in one `load_state_dict` call.
   A failed check leaves the model exactly as it was.

Position embeddings of another grid are resized like timm's `.npz` loader does: bilinear
`F.interpolate`, no antialiasing, CLS position untouched (see `vitlab.model.resize_pos_embed`).
Google's own fine-tuning code uses `scipy.ndimage.zoom(order=1)`, which samples the grid at
slightly different points, so its resized table differs by a small fraction of the values' scale.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitlab.model import VisionTransformer, resize_pos_embed
from vitlab.weights.download import fetch_if_missing, how_to_get
from vitlab.weights.errors import CheckpointError, preview_keys
from vitlab.weights.npz import google_names, npz_to_state_dict, read_npz
from vitlab.weights.state_dicts import TORCH_SUFFIXES, adopt_input_normalization, read_for_model

__all__ = ["LoadReport", "apply_state_dict", "load_pretrained"]


@dataclass
class LoadReport:
    """What `apply_state_dict` did with each key of the checkpoint."""

    source: str
    loaded: list[str] = field(default_factory=list)  # copied unchanged
    resized: dict[str, str] = field(default_factory=dict)  # key -> "old shape -> new shape"
    replaced: dict[str, str] = field(default_factory=dict)  # key -> why the model's own value is used
    skipped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> why it was dropped
    notes: list[str] = field(default_factory=list)  # anything else to know, e.g. the inputs the weights expect

    def summary(self) -> str:
        """A few lines for people: counts, then every resized, replaced and skipped key."""
        lines = [
            f"loaded {len(self.loaded)} tensors from {self.source}: {len(self.resized)} resized, "
            f"{len(self.replaced)} replaced, {len(self.skipped)} skipped"
        ]
        lines += [f"  resized  {key}: {why}" for key, why in self.resized.items()]
        lines += [f"  replaced {key}: {why}" for key, why in self.replaced.items()]
        lines += [f"  skipped  {key}: {why}" for key, why in self.skipped.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# --- a vitlab state dict -> the model ---------------------------------------------------------
def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _adapt_class_token(model, state, report) -> None:
    if "cls_token" in state and model.cls_token is None:
        state.pop("cls_token")
        state["pos_embed"] = state["pos_embed"][:, 1:]  # drop the CLS position with the token
        report.skipped["cls_token"] = "the model has no class token (class_token=False); its position is dropped too"
    elif "cls_token" not in state and model.cls_token is not None:
        raise CheckpointError(
            f"checkpoint {report.source} has no class token (a 'gap' model without 'cls'), but the model has one: "
            "build the model with class_token=False, classifier='gap'"
        )


def _adapt_pos_embed(model, state, report, name: str) -> None:
    source, target = state["pos_embed"], model.pos_embed
    if source.shape[-1] != target.shape[-1]:
        raise CheckpointError(
            f"{name} in {report.source}: checkpoint shape {_shape(source)} (as pos_embed), model {_shape(target)}; "
            "the width (hidden_size) differs: choose the preset that matches the checkpoint"
        )
    if source.shape == target.shape:
        return
    grid = model.patch_embed.grid_size
    resized = resize_pos_embed(source, grid, model.num_prefix_tokens, mode="bilinear", antialias=False)
    state["pos_embed"] = resized
    report.resized["pos_embed"] = (
        f"{_shape(source)} -> {_shape(resized)} (bilinear, no antialias, prefix position kept) for the "
        f"{grid}x{grid} grid of {model.cfg.img_size}px images"
    )


def _adapt_pre_logits(model, state, report) -> None:
    in_file = "pre_logits.0.weight" in state
    in_model = isinstance(model.pre_logits, torch.nn.Sequential)
    if in_file and not in_model:
        for key in ("pre_logits.0.weight", "pre_logits.0.bias"):
            state.pop(key)
            report.skipped[key] = (
                "the model has no representation layer (representation_size=None), so the checkpoint's "
                "pre-logits (Linear + tanh) are dropped, as in Google's fine-tuning"
            )
    elif in_model and not in_file:
        target = model.state_dict()
        for key in ("pre_logits.0.weight", "pre_logits.0.bias"):
            state[key] = target[key]
            report.replaced[key] = "not in the checkpoint: the model's initial values are kept"


def _adapt_head(model, state, report) -> None:
    target = model.state_dict()
    if "head.weight" not in target:  # num_classes=0: a feature extractor
        for key in ("head.weight", "head.bias"):
            if state.pop(key, None) is not None:
                report.skipped[key] = "the model has no head (num_classes=0)"
        return
    source = state.get("head.weight")
    if source is not None and source.shape[0] == target["head.weight"].shape[0]:
        return  # same classes: copied (the width is checked with every other key)
    why = (
        "not in the checkpoint"
        if source is None
        else f"the checkpoint has {source.shape[0]} classes, the model {target['head.weight'].shape[0]}"
    )
    for key in ("head.weight", "head.bias"):
        state[key] = torch.zeros_like(target[key])
        report.replaced[key] = f"{why}: zero-initialised (the paper's fine-tuning protocol)"


def _check_keys(model, state, source: str, key_names: dict[str, str]) -> None:
    target = model.state_dict()
    if "fc_norm.weight" in target and "encoder.norm.weight" in state:
        raise CheckpointError(
            f"the model normalises the pooled vector (fc_norm=True) but checkpoint {source} normalises every token "
            "(final encoder norm): build the model with fc_norm=False"
        )
    missing = [key for key in target if key not in state]
    if missing:
        names = ", ".join(repr(key_names.get(key, key)) for key in missing[:4])
        raise CheckpointError(
            f"checkpoint {source} has no {names}{' ...' if len(missing) > 4 else ''} ({len(missing)} tensor(s) of the "
            f"model missing; the checkpoint has {_count_blocks(state)} encoder blocks, the model "
            f"{len(model.encoder.blocks)})"
        )
    unexpected = [key for key in state if key not in target]
    if unexpected:
        raise CheckpointError(
            f"checkpoint {source} has keys the model does not: {preview_keys(key_names.get(k, k) for k in unexpected)} "
            f"(the checkpoint has {_count_blocks(state)} encoder blocks, the model {len(model.encoder.blocks)}); "
            "choose the preset that matches the checkpoint"
        )
    for key, value in target.items():
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{key_names.get(key, key)} in {source}: checkpoint shape {_shape(state[key])} (as {key}) does not "
                f"match the model's {_shape(value)}; {_hint(key)}"
            )


def _count_blocks(state) -> int:
    return len({key.split(".")[2] for key in state if key.startswith("encoder.blocks.")})


def _hint(key: str) -> str:
    if key.startswith("patch_embed"):
        return "the patch size, width or input channels differ: choose the preset that matches the checkpoint"
    return "the width (hidden_size / mlp_dim) differs: choose the preset that matches the checkpoint"


def apply_state_dict(
    model: VisionTransformer,
    state_dict: dict[str, torch.Tensor],
    source: str = "state dict",
    key_names: dict[str, str] | None = None,
) -> LoadReport:
    """Adapt a vitlab-named state dict to `model`, check every key and shape, then load it all at once.

    Position embeddings are resized to the model's grid, the head is copied when the class count
    matches and zero-initialised otherwise, pre-logits are loaded or dropped to fit the model.
    Nothing in the model changes unless every check passes. `key_names` maps vitlab keys to the
    checkpoint's own names for error messages.
    """
    state = dict(state_dict)
    report = LoadReport(source=source)
    key_names = key_names or {}
    if "pos_embed" not in state:
        raise CheckpointError(f"checkpoint {source} has no {key_names.get('pos_embed', 'pos_embed')!r}")
    _adapt_class_token(model, state, report)
    _adapt_pos_embed(model, state, report, key_names.get("pos_embed", "pos_embed"))
    _adapt_pre_logits(model, state, report)
    _adapt_head(model, state, report)
    _check_keys(model, state, source, key_names)
    untouched = set(report.resized) | set(report.replaced)
    report.loaded = [key for key in model.state_dict() if key not in untouched]
    model.load_state_dict(state, strict=True)
    return report


# --- any file -> the model ----------------------------------------------------------------------
def load_pretrained(
    model: VisionTransformer, path: str | os.PathLike, *, download: bool = True, verbose: bool = True
) -> LoadReport:
    """Load a checkpoint into `model`: resized positions, new head if the classes differ.

    Google's `.npz` files, and PyTorch state dicts (`.pth`, `.pt`, `.bin`, `.safetensors`) in timm's,
    torchvision's or vitlab's key names (MAE's releases use timm's). A missing file with a known
    name (e.g. `Pretrained/imagenet21k_ViT-B_16.npz`) is downloaded first when `download=True`.
    """
    path = Path(path)
    if download:
        fetch_if_missing(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist: {how_to_get(path)}")
        state, key_names, layout = read_for_model(path, model)
    else:
        layout = None
        arrays = read_npz(path)
        try:
            state = npz_to_state_dict(arrays, model)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from None
        key_names = google_names(model)
    report = apply_state_dict(model, state, source=str(path), key_names=key_names)
    if layout is not None:  # only after a successful load: a failed one leaves the model as it was
        report.notes += adopt_input_normalization(model, layout)
    if verbose:
        print(report.summary())
    return report
