"""Load any checkpoint into a model: `load_pretrained`, built on `apply_state_dict`.

Loading happens in two stages so that each checkpoint format only needs a reader:

1. a reader turns the file into a state dict with vitlab's names and PyTorch layouts
   (`vitlab.weights.npz` for Google's files, `vitlab.weights.state_dicts` for PyTorch files
   in timm's, torchvision's or vitlab's names);
2. `apply_state_dict` adapts it to the model (position-embedding grid, head, pre-logits), checks
   every key and shape *before* touching the model, then loads it in one `load_state_dict` call.
   A failed check leaves the model exactly as it was.

Position embeddings of another grid are resized bilinearly with the CLS position untouched, in
one of two ways (`vitlab.model.resize_pos_embed`): "google", as Google's fine-tuning code does with
`scipy.ndimage.zoom(order=1)` (= `align_corners=True`), the default for `.npz` files; or "timm", as
timm's `.npz` loader does (`align_corners=False`), the default for PyTorch state dicts. The two
tables differ by a few percent; `LoadReport.pos_embed_resize` says which was used.

The model then computes the GELU of the weights' source (`match_gelu`): the tanh form for Google's
files (flax's default `gelu`), the exact one for timm's and torchvision's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitlab.errors import BadValue, MissingFile
from vitlab.model import VisionTransformer, resize_pos_embed
from vitlab.weights.errors import CheckpointError, preview_keys
from vitlab.weights.fetch import fetch_if_missing, how_to_get
from vitlab.weights.npz import google_names, npz_to_state_dict, read_arrays, to_original_names
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
    gelu_approximate: str | None = None  # the GELU the model computes after loading: "tanh" (Google's) or "none"
    pos_embed_resize: str | None = None  # how the position grid was resized ("google" / "timm"); None = not resized

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


# How a position grid is resized for another image size: the name, `resize_pos_embed`'s arguments, the report's words.
POS_EMBED_RESIZES = {
    "google": (dict(align_corners=True), "bilinear with aligned corners, as Google's scipy.ndimage.zoom(order=1)"),
    "timm": (dict(), "bilinear, align_corners=False, no antialias, as timm's .npz loader"),
    # DINOv2's 37 x 37 grid, three ways: each source's own code.
    "bicubic": (dict(mode="bicubic"), "bicubic to the new grid size, no antialias, as transformers' Dinov2Model"),
    "meta": (
        dict(mode="bicubic", scale_offset=0.1),
        "bicubic with scale factor (G + 0.1) / g, no antialias, as Meta's DINOv2 hub code",
    ),
    "timm-bicubic": (dict(mode="bicubic", antialias=True), "bicubic with antialias, as timm's loader of .pth files"),
}
# The way each source resizes its own weights (the default of `load_pretrained`).
SOURCE_RESIZE = {
    "npz": "google", "timm": "timm", "torchvision": "timm", "vitlab": "timm",
    "dinov2-meta": "meta", "dinov2-timm": "timm-bicubic", "dinov2-hf": "bicubic",
}  # fmt: skip


def _check_resize(pos_embed_resize: str) -> None:
    if pos_embed_resize not in POS_EMBED_RESIZES:
        raise BadValue(f"unknown pos_embed_resize {pos_embed_resize!r}: choose one of {', '.join(POS_EMBED_RESIZES)}")


def _adapt_pos_embed(model, state, report, name: str, how: str) -> None:
    source, target = state["pos_embed"], model.pos_embed
    if source.shape[-1] != target.shape[-1]:
        raise CheckpointError(
            f"{name} in {report.source}: checkpoint shape {_shape(source)} (as pos_embed), model {_shape(target)}; "
            "the width (hidden_size) differs: choose the preset that matches the checkpoint"
        )
    if source.shape == target.shape:
        return
    grid = model.patch_embed.grid_size
    arguments, words = POS_EMBED_RESIZES[how]
    resized = resize_pos_embed(source, grid, model.num_prefix_positions, **arguments)
    state["pos_embed"] = resized
    report.pos_embed_resize = how
    report.resized["pos_embed"] = (
        f"{_shape(source)} -> {_shape(resized)} ({how}: {words}; prefix position kept) for the "
        f"{grid}x{grid} grid of {model.cfg.img_size}px images"
    )


def _adapt_dinov2_tokens(model, state, report, key_names) -> None:
    """DINOv2's extra tokens: `mask_token` is dropped; registers must be where the model has them, and as many."""
    if state.pop("mask_token", None) is not None:
        report.skipped[key_names.get("mask_token", "mask_token")] = (
            "DINOv2's token for masked patches, used only in pre-training (iBOT's masked image modelling)"
        )
    source, target = state.get("register_tokens"), model.register_tokens
    have = 0 if source is None else source.shape[1]
    want = 0 if target is None else target.shape[1]
    if have != want:
        shapes = [None if tensor is None else _shape(tensor) for tensor in (source, target)]
        fix = "a '_reg' model (e.g. dinov2_vits14_reg)" if have else "a model without registers (e.g. dinov2_vits14)"
        raise CheckpointError(
            f"register tokens in {report.source}: the checkpoint has {have}, shape {shapes[0]}, the model {want}, "
            f"shape {shapes[1]}: build {fix}"
        )
    has_scale = any(key.endswith(".ls1.gamma") for key in state)
    if has_scale != (model.cfg.layer_scale_init is not None):
        which = ("has", "has none") if has_scale else ("has none", "has")
        raise CheckpointError(
            f"checkpoint {report.source} {which[0]} LayerScale (the ls1 / ls2 gammas of DINOv2's blocks) and the model "
            f"{which[1]}: choose the preset that matches the checkpoint (dinov2_* for DINOv2 weights)"
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


def _adapt_head(model, state, report, zero_head: bool) -> None:
    target = model.state_dict()
    if "head.weight" not in target:  # num_classes=0: a feature extractor
        for key in ("head.weight", "head.bias"):
            if state.pop(key, None) is not None:
                report.skipped[key] = "the model has no head (num_classes=0)"
        return
    source = state.get("head.weight")
    same_classes = source is not None and source.shape[0] == target["head.weight"].shape[0]
    if same_classes and not zero_head:
        return  # same classes: copied (the width is checked with every other key)
    if source is None:
        why = "not in the checkpoint"
    elif same_classes:
        why = "zero_head=True (Google's fine-tuning loader always starts from a zero head)"
    else:
        why = f"the checkpoint has {source.shape[0]} classes, the model {target['head.weight'].shape[0]}"
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
    pos_embed_resize: str = "timm",
    zero_head: bool = False,
) -> LoadReport:
    """Adapt a vitlab-named state dict to `model`, check every key and shape, then load it all at once.

    Position embeddings are resized to the model's grid (`pos_embed_resize`: "google" or "timm"), the
    head is copied when the class count matches and zero-initialised otherwise (always with
    `zero_head=True`), pre-logits are loaded or dropped to fit the model.
    Nothing in the model changes unless every check passes. `key_names` maps vitlab keys to the
    checkpoint's own names for error messages.
    """
    _check_resize(pos_embed_resize)
    state = dict(state_dict)
    report = LoadReport(source=source)
    key_names = key_names or {}
    if "pos_embed" not in state:
        raise CheckpointError(f"checkpoint {source} has no {key_names.get('pos_embed', 'pos_embed')!r}")
    _adapt_class_token(model, state, report)
    _adapt_dinov2_tokens(model, state, report, key_names)
    _adapt_pos_embed(model, state, report, key_names.get("pos_embed", "pos_embed"), pos_embed_resize)
    _adapt_pre_logits(model, state, report)
    _adapt_head(model, state, report, zero_head)
    _check_keys(model, state, source, key_names)
    untouched = set(report.resized) | set(report.replaced)
    report.loaded = [key for key in model.state_dict() if key not in untouched]
    model.load_state_dict(state, strict=True)
    return report


# --- any file -> the model ----------------------------------------------------------------------
# The GELU each source's model computes: flax's default is the tanh form, PyTorch's the exact one.
# vitlab's own files do not say, so a model loading them keeps its own (run checkpoints record it).
SOURCE_GELU = {"npz": "tanh", "timm": "none", "torchvision": "none", "vitlab": None}
SOURCE_GELU.update(dict.fromkeys(("dinov2-meta", "dinov2-timm", "dinov2-hf"), "none"))


def _adopt_gelu(model: VisionTransformer, source: str, report: LoadReport, match: bool) -> None:
    wanted = SOURCE_GELU[source] if match else None
    if wanted is not None and wanted != model.cfg.gelu_approximate:
        names = {"tanh": "the tanh approximation", "none": "the exact (erf) GELU"}
        who = "Google's JAX model" if source == "npz" else f"the model of these weights ({source})"
        report.notes.append(
            f"GELU set to {names[wanted]} (gelu_approximate={wanted!r}, was {model.cfg.gelu_approximate!r}), "
            f"as {who} computes with these weights; load with match_gelu=False to keep the model's"
        )
        model.set_gelu_approximate(wanted)
    report.gelu_approximate = model.cfg.gelu_approximate


def load_pretrained(
    model: VisionTransformer,
    path: str | os.PathLike,
    *,
    download: bool = True,
    verbose: bool = True,
    match_gelu: bool = True,
    pos_embed_resize: str | None = None,
    zero_head: bool = False,
) -> LoadReport:
    """Load a checkpoint into `model`: resized positions, new head if the classes differ.

    Google's `.npz` files (the released, Flax-Linen and big_vision key names), and PyTorch state
    dicts (`.pth`, `.pt`, `.bin`, `.safetensors`) in timm's, torchvision's or vitlab's key names
    (MAE's releases use timm's), and DINOv2's in Meta's, timm's or Hugging Face's (into a dinov2_* model).
    A missing file with a known name (e.g.
    `Pretrained/imagenet21k_ViT-B_16.npz`) is downloaded first when `download=True`.
    With `match_gelu` the model then computes the GELU of the weights' source: the tanh form for
    Google's files, the exact one for timm's and torchvision's (`report.gelu_approximate` says which).
    A position grid of another size is resized the way of `pos_embed_resize` (`POS_EMBED_RESIZES`),
    by default the way the weights' source does it (`SOURCE_RESIZE`): "google" (aligned corners) for
    `.npz` files, "timm" for PyTorch state dicts, and for DINOv2's 37 x 37 grid "meta", "timm-bicubic"
    or "bicubic" (Hugging Face's) by the layout of the file.
    `zero_head=True` starts from a zero head even when the class count matches, as Google's
    fine-tuning does.
    """
    if pos_embed_resize is not None:
        _check_resize(pos_embed_resize)
    path = Path(path)
    if download:
        fetch_if_missing(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        if not path.is_file():
            raise MissingFile(f"checkpoint {path} does not exist: {how_to_get(path)}")
        state, key_names, layout = read_for_model(path, model)
    else:
        layout = None
        raw = read_arrays(path)
        try:
            arrays, layout_notes = to_original_names(raw)
            state = npz_to_state_dict(arrays, model)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from None
        key_names = google_names(model)
    how = pos_embed_resize or SOURCE_RESIZE[layout or "npz"]
    report = apply_state_dict(
        model, state, source=str(path), key_names=key_names, pos_embed_resize=how, zero_head=zero_head
    )
    if layout is None:
        report.notes += layout_notes
    # Only after a successful load: a failed one leaves the model as it was.
    _adopt_gelu(model, layout or "npz", report, match_gelu)
    if layout is not None:
        report.notes += adopt_input_normalization(model, layout)
    if verbose:
        print(report.summary())
    return report
