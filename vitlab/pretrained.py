"""Google's original ViT `.npz` checkpoints, in (`load_pretrained`) and out (`save_npz`).

Loading happens in two stages so that other checkpoint formats only need a reader:

1. a reader turns the file into a state dict with vitlab's names and PyTorch layouts
   (`read_npz` + `npz_to_state_dict` for Google's files, `vitlab.state_dicts` for PyTorch files
   in timm's, torchvision's or vitlab's names);
2. `apply_state_dict` adapts it to the model (position-embedding grid, head, pre-logits), checks
   every key and shape *before* touching the model, then loads it in one `load_state_dict` call.
   A failed check leaves the model exactly as it was.

Google's layout (flax names, JAX layouts): kernels are (in, out) where PyTorch stores (out, in);
the patch kernel is HWIO (P, P, C, D); attention kernels keep the heads apart, (D, heads, head_dim)
for query/key/value and (heads, head_dim, D) for the output; LayerNorm's weight is called `scale`.

Position embeddings of another grid are resized like timm's `.npz` loader does: bilinear
`F.interpolate`, no antialiasing, CLS position untouched (see `vitlab.model.resize_pos_embed`).
Google's own fine-tuning code uses `scipy.ndimage.zoom(order=1)`, which samples the grid at
slightly different points, so its resized table differs by a small fraction of the values' scale.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vitlab.files import atomic_write
from vitlab.hybrid import google_backbone_names
from vitlab.model import VisionTransformer, resize_pos_embed

__all__ = [
    "LoadReport",
    "apply_state_dict",
    "load_pretrained",
    "npz_to_state_dict",
    "read_npz",
    "save_npz",
    "state_dict_to_npz",
]

BLOCK = "Transformer/encoderblock_{}/"
ATTENTION = "MultiHeadDotProductAttention_1/"
# Some exports wrap every key in the optimiser's or flax's tree; timm strips the same prefixes.
KEY_PREFIXES = ("opt/target/", "params/")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the message says why and what to do."""


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


# --- stage 1: Google's file -> arrays -> vitlab state dict --------------------------------------
def _what_to_do(path: Path) -> str:
    """Where to get the file: the exact URL for a known Google name, else the download command."""
    from vitlab.download import known_checkpoint, url_for

    known = known_checkpoint(path.name)
    if known is None:
        return (
            f"download a checkpoint (see `python -m vitlab.download --list`) and place it at {path}, "
            "or pass the path of one you have"
        )
    name, variant = known
    return (
        f"run `python -m vitlab.download {name} --variant {variant} --dest {path.parent}` "
        f"or download {url_for(name, variant)} and place it at {path}"
    )


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file (no pickles); a missing, empty or damaged file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: {_what_to_do(path)}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes), an interrupted download: {_what_to_do(path)}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith((b"PK", b"\x93NUMPY")):  # a zip archive (.npz) or a single .npy array
        what = "a pickle file" if magic.startswith(b"\x80") else f"not an .npz file (it starts with {magic!r})"
        raise CheckpointError(
            f"checkpoint {path} is {what}; only .npz archives of plain arrays load: {_what_to_do(path)}"
        )
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy file: np.load returns the array itself
            raise CheckpointError(
                f"checkpoint {path} holds a single array, not an .npz archive of named arrays: {_what_to_do(path)}"
            )
        with data:
            arrays = {key: data[key] for key in data.files}
    except CheckpointError:
        raise
    except ValueError as error:
        if "pickle" not in str(error) and "Object arrays" not in str(error):
            raise CheckpointError(f"checkpoint {path} cannot be read ({error}): {_what_to_do(path)}") from error
        raise CheckpointError(
            f"checkpoint {path} contains pickled Python objects, which are not loaded because unpickling "
            "can run arbitrary code; Google's checkpoints hold plain arrays only: re-export the weights as "
            f"plain float arrays (vitlab.save_npz does), or {_what_to_do(path)}"
        ) from error
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        size = path.stat().st_size
        raise CheckpointError(
            f"checkpoint {path} ({size:,} bytes) is truncated or not an .npz file ({type(error).__name__}: "
            f"{error}): delete it and {_what_to_do(path)}"
        ) from error
    return _strip_prefix(arrays)


def _strip_prefix(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for prefix in KEY_PREFIXES:
        if "embedding/kernel" not in arrays and f"{prefix}embedding/kernel" in arrays:
            return {key.removeprefix(prefix): value for key, value in arrays.items()}
    return arrays


def _tensor(arrays: dict[str, np.ndarray], key: str, ndim: int) -> torch.Tensor:
    if key not in arrays:
        raise CheckpointError(f"checkpoint has no {key!r} (keys: {_preview(arrays)})")
    value = arrays[key]
    if value.ndim != ndim:
        raise CheckpointError(f"checkpoint key {key!r} has shape {value.shape}, expected {ndim} dimensions")
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


def _dense(arrays, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A flax Dense (kernel (in, out)) as a PyTorch Linear weight (out, in) and bias."""
    return _tensor(arrays, f"{key}/kernel", 2).T, _tensor(arrays, f"{key}/bias", 1)


def _layer_norm(arrays, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _tensor(arrays, f"{key}/scale", 1), _tensor(arrays, f"{key}/bias", 1)


def _attention(arrays, key: str, num_heads: int, hidden_size: int) -> dict[str, torch.Tensor]:
    """Google's separate q/k/v projections, each (D, heads, head_dim), as one fused `to_qkv`."""
    weights, biases = [], []
    for name in ("query", "key", "value"):
        kernel = _tensor(arrays, f"{key}{name}/kernel", 3)  # (D, heads, head_dim)
        # Checked only at equal width: a different width is reported with both shapes later.
        if kernel.shape[1] != num_heads and kernel.shape[0] == kernel.shape[1] * kernel.shape[2] == hidden_size:
            raise CheckpointError(
                f"checkpoint key {key}{name}/kernel has shape {tuple(kernel.shape)}: {kernel.shape[1]} heads, but "
                f"the model has num_heads={num_heads}; build the model with num_heads={kernel.shape[1]}"
            )
        weights.append(kernel.flatten(1).T)  # (heads * head_dim, D): rows are the outputs, head by head
        biases.append(_tensor(arrays, f"{key}{name}/bias", 2).flatten())  # (heads * head_dim,)
    out_kernel = _tensor(arrays, f"{key}out/kernel", 3)  # (heads, head_dim, D)
    return {
        "to_qkv.weight": torch.cat(weights),  # (3D, D) in the order q, k, v
        "to_qkv.bias": torch.cat(biases),  # (3D,)
        "to_out.weight": out_kernel.flatten(0, 1).T,  # (D, heads * head_dim)
        "to_out.bias": _tensor(arrays, f"{key}out/bias", 1),
    }


def _block(arrays, index: int, num_heads: int, hidden_size: int) -> dict[str, torch.Tensor]:
    key = BLOCK.format(index)
    tensors = dict(zip(("norm1.weight", "norm1.bias"), _layer_norm(arrays, f"{key}LayerNorm_0")))
    tensors.update(
        {f"attn.{name}": value for name, value in _attention(arrays, key + ATTENTION, num_heads, hidden_size).items()}
    )
    tensors.update(zip(("norm2.weight", "norm2.bias"), _layer_norm(arrays, f"{key}LayerNorm_2")))
    tensors.update(zip(("mlp.fc1.weight", "mlp.fc1.bias"), _dense(arrays, f"{key}MlpBlock_3/Dense_0")))
    tensors.update(zip(("mlp.fc2.weight", "mlp.fc2.bias"), _dense(arrays, f"{key}MlpBlock_3/Dense_1")))
    return {f"encoder.blocks.{index}.{name}": value for name, value in tensors.items()}


def _block_indices(arrays) -> list[int]:
    found = {int(m.group(1)) for key in arrays if (m := re.match(r"Transformer/encoderblock_(\d+)/", key))}
    return sorted(found)


def npz_to_state_dict(arrays: dict[str, np.ndarray], model: VisionTransformer) -> dict[str, torch.Tensor]:
    """Google's arrays as a vitlab state dict, in the file's own sizes (grid, classes) for `apply_state_dict`.

    `model` only fixes how the attention kernels split into heads, which their flattened shape
    cannot show. A key this reader does not know stays in the result under its own name, so
    `apply_state_dict` reports it as unexpected instead of dropping it silently.
    """
    required = ("embedding/kernel", "Transformer/posembed_input/pos_embedding")
    for key in required:
        if key not in arrays:
            raise CheckpointError(f"checkpoint has no {key!r}: not a Google ViT .npz (keys: {_preview(arrays)})")
    used = set()

    def take(key: str, ndim: int) -> torch.Tensor:
        used.add(key)
        return _tensor(arrays, key, ndim)

    state = {
        # HWIO (P, P, C, D) -> PyTorch's OIHW (D, C, P, P)
        "patch_embed.proj.weight": take("embedding/kernel", 4).permute(3, 2, 0, 1),
        "patch_embed.proj.bias": take("embedding/bias", 1),
        "pos_embed": take("Transformer/posembed_input/pos_embedding", 3),  # (1, prefix + N, D)
    }
    if "cls" in arrays:  # Google's "gap" models have no class token
        state["cls_token"] = take("cls", 3)  # (1, 1, D)
    state.update(_backbone(arrays, model, take))
    for index in _block_indices(arrays):
        state.update(_block(arrays, index, model.encoder.blocks[0].attn.num_heads, model.cfg.hidden_size))
        used.update(key for key in arrays if key.startswith(BLOCK.format(index)))
    for torch_name, key, reader in (
        ("encoder.norm", "Transformer/encoder_norm", _layer_norm),
        ("pre_logits.0", "pre_logits", _dense),
        ("head", "head", _dense),
    ):
        suffixes = ("scale", "bias") if reader is _layer_norm else ("kernel", "bias")
        if all(f"{key}/{s}" in arrays for s in suffixes):
            state[f"{torch_name}.weight"], state[f"{torch_name}.bias"] = reader(arrays, key)
            used.update(f"{key}/{s}" for s in suffixes)
    for key in arrays.keys() - used:
        state[key] = torch.from_numpy(np.asarray(arrays[key]))
    return state


def _backbone(arrays, model: VisionTransformer, take) -> dict[str, torch.Tensor]:
    """The hybrid's ResNet: HWIO kernels as PyTorch's OIHW, GroupNorm scales as weights."""
    if not model.cfg.resnet_layers:
        if "conv_root/kernel" in arrays:
            raise CheckpointError(
                "checkpoint is a hybrid (a ResNet stem, 'conv_root/kernel') but the model embeds pixel patches: "
                "build it with the R50-ViT-B_16 preset (resnet_layers=(3, 4, 9))"
            )
        return {}
    state = {}
    for key, ours in google_backbone_names(model.patch_embed.backbone).items():
        if key in arrays:  # a missing one is reported by apply_state_dict under its Google name
            value = take(key, arrays[key].ndim)
            state[ours] = value.permute(3, 2, 0, 1) if value.ndim == 4 else value
    return state


def _preview(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


# --- stage 2: vitlab state dict -> model ---------------------------------------------------------
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
            f"checkpoint {source} has keys the model does not: {_preview(key_names.get(k, k) for k in unexpected)} "
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


# --- the public entry points ---------------------------------------------------------------------
def _google_names(model: VisionTransformer) -> dict[str, str]:
    """vitlab key -> the Google key it comes from (for error messages)."""
    return {key: name for name, key in _export_names(model).items()}


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
        from vitlab.download import fetch_if_missing

        fetch_if_missing(path)
    if path.suffix.lower() in (".pth", ".pt", ".bin", ".safetensors"):
        from vitlab.state_dicts import read_for_model

        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist: {_what_to_do(path)}")
        state, key_names, layout = read_for_model(path, model)
    else:
        layout = None
        arrays = read_npz(path)
        try:
            state = npz_to_state_dict(arrays, model)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from None
        key_names = _google_names(model)
    report = apply_state_dict(model, state, source=str(path), key_names=key_names)
    if layout is not None:  # only after a successful load: a failed one leaves the model as it was
        from vitlab.state_dicts import adopt_input_normalization

        report.notes += adopt_input_normalization(model, layout)
    if verbose:
        print(report.summary())
    return report


def _export_names(model: VisionTransformer) -> dict[str, str]:
    """Google key -> vitlab key for the tensors that map one to one."""
    names = {
        "embedding/bias": "patch_embed.proj.bias",
        "embedding/kernel": "patch_embed.proj.weight",
        "Transformer/posembed_input/pos_embedding": "pos_embed",
        "Transformer/encoder_norm/scale": "encoder.norm.weight",
        "Transformer/encoder_norm/bias": "encoder.norm.bias",
        "pre_logits/kernel": "pre_logits.0.weight",
        "pre_logits/bias": "pre_logits.0.bias",
        "head/kernel": "head.weight",
        "head/bias": "head.bias",
        "cls": "cls_token",
    }
    for i in range(len(model.encoder.blocks)):
        block, torch_block = BLOCK.format(i), f"encoder.blocks.{i}."
        for google, ours in (
            ("LayerNorm_0/scale", "norm1.weight"),
            ("LayerNorm_0/bias", "norm1.bias"),
            ("LayerNorm_2/scale", "norm2.weight"),
            ("LayerNorm_2/bias", "norm2.bias"),
            (ATTENTION + "out/kernel", "attn.to_out.weight"),
            (ATTENTION + "out/bias", "attn.to_out.bias"),
            ("MlpBlock_3/Dense_0/kernel", "mlp.fc1.weight"),
            ("MlpBlock_3/Dense_0/bias", "mlp.fc1.bias"),
            ("MlpBlock_3/Dense_1/kernel", "mlp.fc2.weight"),
            ("MlpBlock_3/Dense_1/bias", "mlp.fc2.bias"),
            (ATTENTION + "query|key|value/kernel", "attn.to_qkv.weight"),
            (ATTENTION + "query|key|value/bias", "attn.to_qkv.bias"),
        ):
            names[block + google] = torch_block + ours
    if model.cfg.resnet_layers:
        names.update(google_backbone_names(model.patch_embed.backbone))
    return names


def state_dict_to_npz(model: VisionTransformer) -> dict[str, np.ndarray]:
    """The model's weights as Google's arrays (float32, flax names and layouts)."""
    if model.cfg.fc_norm:
        raise ValueError("Google's .npz layout has no fc_norm (MAE-style pooled norm): the model cannot be exported")
    state = {key: value.detach().float().cpu() for key, value in model.state_dict().items()}
    heads = model.encoder.blocks[0].attn.num_heads
    arrays = {
        "embedding/kernel": state["patch_embed.proj.weight"].permute(2, 3, 1, 0),  # (D, C, P, P) -> HWIO
        "embedding/bias": state["patch_embed.proj.bias"],
        "Transformer/posembed_input/pos_embedding": state["pos_embed"],
        "Transformer/encoder_norm/scale": state["encoder.norm.weight"],
        "Transformer/encoder_norm/bias": state["encoder.norm.bias"],
    }
    if "cls_token" in state:
        arrays["cls"] = state["cls_token"]
    for prefix, key in (("pre_logits.0", "pre_logits"), ("head", "head")):
        if f"{prefix}.weight" in state:
            arrays[f"{key}/kernel"] = state[f"{prefix}.weight"].T  # (out, in) -> (in, out)
            arrays[f"{key}/bias"] = state[f"{prefix}.bias"]
    for i in range(len(model.encoder.blocks)):
        arrays.update(_export_block(state, i, heads))
    if model.cfg.resnet_layers:
        for key, ours in google_backbone_names(model.patch_embed.backbone).items():
            value = state[ours]
            arrays[key] = value.permute(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO
    return {key: np.ascontiguousarray(value.numpy(), dtype=np.float32) for key, value in arrays.items()}


def _export_block(state: dict[str, torch.Tensor], index: int, heads: int) -> dict[str, torch.Tensor]:
    ours, google = f"encoder.blocks.{index}.", BLOCK.format(index)
    hidden = state[ours + "norm1.weight"].shape[0]
    arrays = {
        "LayerNorm_0/scale": state[ours + "norm1.weight"],
        "LayerNorm_0/bias": state[ours + "norm1.bias"],
        "LayerNorm_2/scale": state[ours + "norm2.weight"],
        "LayerNorm_2/bias": state[ours + "norm2.bias"],
        "MlpBlock_3/Dense_0/kernel": state[ours + "mlp.fc1.weight"].T,
        "MlpBlock_3/Dense_0/bias": state[ours + "mlp.fc1.bias"],
        "MlpBlock_3/Dense_1/kernel": state[ours + "mlp.fc2.weight"].T,
        "MlpBlock_3/Dense_1/bias": state[ours + "mlp.fc2.bias"],
        ATTENTION + "out/kernel": state[ours + "attn.to_out.weight"].T.reshape(heads, -1, hidden),  # (h, d, D)
        ATTENTION + "out/bias": state[ours + "attn.to_out.bias"],
    }
    weights = state[ours + "attn.to_qkv.weight"].chunk(3)  # q, k, v: each (D, D) as (out, in)
    biases = state[ours + "attn.to_qkv.bias"].chunk(3)
    for name, weight, bias in zip(("query", "key", "value"), weights, biases):
        arrays[f"{ATTENTION}{name}/kernel"] = weight.T.reshape(hidden, heads, -1)  # (D, heads, head_dim)
        arrays[f"{ATTENTION}{name}/bias"] = bias.reshape(heads, -1)  # (heads, head_dim)
    return {google + key: value for key, value in arrays.items()}


def save_npz(model: VisionTransformer, path: str | os.PathLike) -> Path:
    """Write the model in Google's `.npz` layout, atomically (temporary file, then rename)."""
    path = Path(path)
    arrays = state_dict_to_npz(model)
    with atomic_write(path) as f:  # a file object, so numpy does not append ".npz" to the name
        np.savez(f, **arrays)
    return path
