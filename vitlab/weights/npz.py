"""Google's original ViT `.npz` checkpoints: read into a vitlab state dict, and written back.

Reading turns the file into a state dict with vitlab's names and PyTorch layouts (`read_npz` +
`npz_to_state_dict`); `vitlab.weights.load.apply_state_dict` then fits it to the model.
Writing (`save_npz`) is the exact inverse, so a model makes the round trip unchanged.

Google's layout (flax names, JAX layouts): kernels are (in, out) where PyTorch stores (out, in);
the patch kernel is HWIO (P, P, C, D); attention kernels keep the heads apart, (D, heads, head_dim)
for query/key/value and (heads, head_dim, D) for the output; LayerNorm's weight is called `scale`.
The hybrid's ResNet follows Google's `models_resnet.py` names (`google_backbone_names`).

Key names come in two spellings, both read (`to_original_names`): the original flax API numbered a
block's submodules across classes in call order (`LayerNorm_0`, `MultiHeadDotProductAttention_1`,
`LayerNorm_2`, `MlpBlock_3`: Google's released files), Flax Linen numbers them per class
(`LayerNorm_0`, `MultiHeadDotProductAttention_0`, `LayerNorm_1`, `MlpBlock_0`: Google's newer
`vit_jax` code and big_vision). big_vision also keeps the position table at the top level
(`pos_embedding`, patches only: its CLS token gets no position), may stack all blocks into one
`Transformer/encoderblock/` with a leading depth axis (`scan`), and prefixes keys with `params/`.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from vitlab.errors import BadValue, MissingFile
from vitlab.files import atomic_write
from vitlab.model import VisionTransformer
from vitlab.weights.errors import CheckpointError, preview_keys
from vitlab.weights.fetch import how_to_get

__all__ = [
    "google_backbone_names",
    "google_names",
    "npz_to_state_dict",
    "read_npz",
    "save_npz",
    "state_dict_to_npz",
    "to_original_names",
]

BLOCK = "Transformer/encoderblock_{}/"
ATTENTION = "MultiHeadDotProductAttention_1/"
# Some exports wrap every key in the optimiser's or flax's tree (big_vision's image towers in "params/img/").
KEY_PREFIXES = ("opt/target/", "params/", "params/img/")
# A block's submodules under Flax Linen's per-class numbering -> the original names of Google's files.
LINEN_TO_ORIGINAL = {
    "LayerNorm_0": "LayerNorm_0",  # before attention
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",  # before the MLP
    "MlpBlock_0": "MlpBlock_3",
}
SCANNED_BLOCKS = "Transformer/encoderblock/"  # big_vision with scan=True: every block's arrays stacked on axis 0


# --- Google's file -> arrays -> vitlab state dict -------------------------------------------------
def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file (no pickles) under the original names of Google's released files.

    A missing, empty or damaged file is a clear error; Flax-Linen and big_vision names are renamed
    (`to_original_names`).
    """
    return to_original_names(read_arrays(path))[0]


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file as written (only an export's key prefix removed)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"checkpoint {path} does not exist: {how_to_get(path)}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes), an interrupted download: {how_to_get(path)}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith((b"PK", b"\x93NUMPY")):  # a zip archive (.npz) or a single .npy array
        what = "a pickle file" if magic.startswith(b"\x80") else f"not an .npz file (it starts with {magic!r})"
        raise CheckpointError(
            f"checkpoint {path} is {what}; only .npz archives of plain arrays load: {how_to_get(path)}"
        )
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy file: np.load returns the array itself
            raise CheckpointError(
                f"checkpoint {path} holds a single array, not an .npz archive of named arrays: {how_to_get(path)}"
            )
        with data:
            arrays = {key: data[key] for key in data.files}
    except CheckpointError:
        raise
    except ValueError as error:
        if "pickle" not in str(error) and "Object arrays" not in str(error):
            raise CheckpointError(f"checkpoint {path} cannot be read ({error}): {how_to_get(path)}") from error
        raise CheckpointError(
            f"checkpoint {path} contains pickled Python objects, which are not loaded because unpickling "
            "can run arbitrary code; Google's checkpoints hold plain arrays only: re-export the weights as "
            f"plain float arrays (vitlab.save_npz does), or {how_to_get(path)}"
        ) from error
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        size = path.stat().st_size
        raise CheckpointError(
            f"checkpoint {path} ({size:,} bytes) is truncated or not an .npz file ({type(error).__name__}: "
            f"{error}): delete it and {how_to_get(path)}"
        ) from error
    return _strip_prefix(arrays)


def _strip_prefix(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for prefix in KEY_PREFIXES:
        if "embedding/kernel" not in arrays and f"{prefix}embedding/kernel" in arrays:
            return {key.removeprefix(prefix): value for key, value in arrays.items()}
    return arrays


def to_original_names(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Flax-Linen / big_vision arrays under the names of Google's released files: (arrays, what was changed).

    Exact: the values are only renamed, unstacked, or (big_vision) given the zero CLS position
    that adding no position to the CLS token amounts to.
    """
    arrays, notes = dict(arrays), []
    if any(key.startswith("MAPHead_0/") for key in arrays):
        raise CheckpointError(
            "checkpoint pools tokens with an attention head ('MAPHead_0', big_vision's pool_type='map'), "
            "which vitlab's ViT does not have: use a checkpoint with a CLS token or global average pooling"
        )
    scanned = [key for key in arrays if key.startswith(SCANNED_BLOCKS)]
    for key in scanned:
        stacked = arrays.pop(key)  # (depth, ...)
        for index, value in enumerate(stacked):
            arrays[BLOCK.format(index) + key.removeprefix(SCANNED_BLOCKS)] = value
    if scanned:
        notes.append(f"blocks stacked in {SCANNED_BLOCKS!r} (big_vision's scan) read one by one")
    linen = re.compile(r"(Transformer/encoderblock_\d+/)(LayerNorm_[01]|MultiHeadDotProductAttention_0|MlpBlock_0)/")
    if any(re.match(r"Transformer/encoderblock_\d+/MultiHeadDotProductAttention_0/", key) for key in arrays):
        arrays = {linen.sub(lambda m: m[1] + LINEN_TO_ORIGINAL[m[2]] + "/", key): v for key, v in arrays.items()}
        notes.append("Flax-Linen block names (MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0) read")
    original = "Transformer/posembed_input/pos_embedding"
    for key in ("pos_embedding", "Transformer/pos_embedding"):  # big_vision's places, newer and older
        if original not in arrays and key in arrays:
            table = arrays.pop(key)  # (1, N, D) for the patches alone, or (1, 1 + N, D) in older files
            if "cls" in arrays and math.isqrt(table.shape[1]) ** 2 == table.shape[1]:
                table = np.concatenate([np.zeros_like(table[:, :1]), table], axis=1)
                notes.append(f"big_vision's {key!r} adds no position to the CLS token: a zero CLS position is used")
            arrays[original] = table
    return arrays, notes


def _tensor(arrays: dict[str, np.ndarray], key: str, ndim: int) -> torch.Tensor:
    if key not in arrays:
        raise CheckpointError(f"checkpoint has no {key!r} (keys: {preview_keys(arrays)})")
    value = arrays[key]
    if value.ndim != ndim:
        raise CheckpointError(f"checkpoint key {key!r} has shape {value.shape}, expected {ndim} dimensions")
    return torch.from_numpy(np.asarray(value, dtype=np.float32))


# --- one table: a block's tensors in Google's names and in vitlab's, and how each converts ----------------
# Google name in the block -> (vitlab name in encoder.blocks.i, conversion). "query|key|value" stands for
# three Google arrays that make one vitlab tensor (q, k, v stacked).
BLOCK_TENSORS = {
    "LayerNorm_0/scale": ("norm1.weight", "vector"),
    "LayerNorm_0/bias": ("norm1.bias", "vector"),
    ATTENTION + "query|key|value/kernel": ("attn.to_qkv.weight", "qkv_kernel"),
    ATTENTION + "query|key|value/bias": ("attn.to_qkv.bias", "qkv_bias"),
    ATTENTION + "out/kernel": ("attn.to_out.weight", "out_kernel"),
    ATTENTION + "out/bias": ("attn.to_out.bias", "vector"),
    "LayerNorm_2/scale": ("norm2.weight", "vector"),
    "LayerNorm_2/bias": ("norm2.bias", "vector"),
    "MlpBlock_3/Dense_0/kernel": ("mlp.fc1.weight", "dense_kernel"),
    "MlpBlock_3/Dense_0/bias": ("mlp.fc1.bias", "vector"),
    "MlpBlock_3/Dense_1/kernel": ("mlp.fc2.weight", "dense_kernel"),
    "MlpBlock_3/Dense_1/bias": ("mlp.fc2.bias", "vector"),
}
# The same for the tensors outside the blocks; the last four are read only when the file has them.
TOP_TENSORS = {
    "embedding/kernel": ("patch_embed.proj.weight", "conv_kernel"),
    "embedding/bias": ("patch_embed.proj.bias", "vector"),
    "Transformer/posembed_input/pos_embedding": ("pos_embed", "token"),  # (1, prefix + N, D)
    "cls": ("cls_token", "token"),  # (1, 1, D); Google's "gap" models have none
    "Transformer/encoder_norm/scale": ("encoder.norm.weight", "vector"),
    "Transformer/encoder_norm/bias": ("encoder.norm.bias", "vector"),
    "pre_logits/kernel": ("pre_logits.0.weight", "dense_kernel"),
    "pre_logits/bias": ("pre_logits.0.bias", "vector"),
    "head/kernel": ("head.weight", "dense_kernel"),
    "head/bias": ("head.bias", "vector"),
}
OPTIONAL_TOP = ("cls", "Transformer/encoder_norm/", "pre_logits/", "head/")
QKV = ("query", "key", "value")


def _to_torch(arrays, key: str, conversion: str, num_heads: int, hidden_size: int) -> torch.Tensor:
    """Google's array(s) at `key` in vitlab's layout."""
    if conversion == "vector":
        return _tensor(arrays, key, 1)
    if conversion == "token":
        return _tensor(arrays, key, 3)
    if conversion == "dense_kernel":  # flax Dense (in, out) -> PyTorch Linear (out, in)
        return _tensor(arrays, key, 2).T
    if conversion == "conv_kernel":  # HWIO (P, P, C, D) -> PyTorch's OIHW (D, C, P, P)
        return _tensor(arrays, key, 4).permute(3, 2, 0, 1)
    if conversion == "out_kernel":  # (heads, head_dim, D) -> (D, heads * head_dim)
        return _tensor(arrays, key, 3).flatten(0, 1).T
    parts = []
    for name in QKV:  # Google's separate q/k/v projections as one fused `to_qkv`, in the order q, k, v
        part_key = key.replace("query|key|value", name)
        if conversion == "qkv_bias":
            parts.append(_tensor(arrays, part_key, 2).flatten())  # (heads, head_dim) -> (heads * head_dim,)
            continue
        kernel = _tensor(arrays, part_key, 3)  # (D, heads, head_dim)
        # Checked only at equal width: a different width is reported with both shapes later.
        if kernel.shape[1] != num_heads and kernel.shape[0] == kernel.shape[1] * kernel.shape[2] == hidden_size:
            raise CheckpointError(
                f"checkpoint key {part_key} has shape {tuple(kernel.shape)}: {kernel.shape[1]} heads, but "
                f"the model has num_heads={num_heads}; build the model with num_heads={kernel.shape[1]}"
            )
        parts.append(kernel.flatten(1).T)  # (heads * head_dim, D): rows are the outputs, head by head
    return torch.cat(parts)  # (3D, D) or (3D,)


def _to_google(tensor: torch.Tensor, key: str, conversion: str, heads: int) -> dict[str, torch.Tensor]:
    """A vitlab tensor as Google's array(s): the exact inverse of `_to_torch`."""
    if conversion in ("vector", "token"):
        return {key: tensor}
    if conversion == "dense_kernel":
        return {key: tensor.T}
    if conversion == "conv_kernel":
        return {key: tensor.permute(2, 3, 1, 0)}  # (D, C, P, P) -> HWIO
    if conversion == "out_kernel":
        return {key: tensor.T.reshape(heads, -1, tensor.shape[0])}  # (heads, head_dim, D)
    hidden = tensor.shape[-1] if conversion == "qkv_kernel" else tensor.shape[0] // 3
    arrays = {}
    for name, part in zip(QKV, tensor.chunk(3)):  # each (D, D) as (out, in), or (D,)
        google = part.T.reshape(hidden, heads, -1) if conversion == "qkv_kernel" else part.reshape(heads, -1)
        arrays[key.replace("query|key|value", name)] = google  # (D, heads, head_dim) or (heads, head_dim)
    return arrays


def _block(arrays, index: int, num_heads: int, hidden_size: int) -> dict[str, torch.Tensor]:
    google = BLOCK.format(index)
    return {
        f"encoder.blocks.{index}.{ours}": _to_torch(arrays, google + name, conversion, num_heads, hidden_size)
        for name, (ours, conversion) in BLOCK_TENSORS.items()
    }


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
            raise CheckpointError(f"checkpoint has no {key!r}: not a Google ViT .npz (keys: {preview_keys(arrays)})")
    used = set()

    def take(key: str, ndim: int) -> torch.Tensor:
        used.add(key)
        return _tensor(arrays, key, ndim)

    heads, hidden = model.encoder.blocks[0].attn.num_heads, model.cfg.hidden_size
    state = {}
    for key, (ours, conversion) in TOP_TENSORS.items():
        if key.startswith(OPTIONAL_TOP):  # a pair (weight and bias, scale and bias) is read only when whole
            pair = [k for k in TOP_TENSORS if k.rsplit("/", 1)[0] == key.rsplit("/", 1)[0]]
            if not all(k in arrays for k in pair):
                continue
        state[ours] = _to_torch(arrays, key, conversion, heads, hidden)
        used.add(key)
    state.update(_backbone(arrays, model, take))
    for index in _block_indices(arrays):
        state.update(_block(arrays, index, heads, hidden))
        used.update(key for key in arrays if key.startswith(BLOCK.format(index)))
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


def google_names(model: VisionTransformer) -> dict[str, str]:
    """vitlab key -> the Google key it comes from (for error messages)."""
    return {key: name for name, key in _export_names(model).items()}


# --- Google's `.npz` names for the backbone (models_resnet.py / models_vit.py) ---------------------
def google_backbone_names(backbone: torch.nn.Module) -> dict[str, str]:
    """Google array name -> vitlab state-dict key for each tensor of a `vitlab.hybrid.ResNetBackbone`."""
    names = {
        "conv_root/kernel": "stem.conv.weight",
        "gn_root/scale": "stem.norm.weight",
        "gn_root/bias": "stem.norm.bias",
    }
    for i, stage in enumerate(backbone.stages):
        for j, unit in enumerate(stage.blocks):
            # Google counts blocks and units from 1; a unit's norms are gn1..3, its shortcut conv_proj / gn_proj.
            google, ours = f"block{i + 1}/unit{j + 1}/", f"stages.{i}.blocks.{j}."
            layers = [(f"conv{r}", f"gn{r}", f"conv{r}", f"norm{r}") for r in (1, 2, 3)]
            if unit.downsample is not None:
                layers.append(("conv_proj", "gn_proj", "downsample.conv", "downsample.norm"))
            for google_conv, google_norm, conv, norm in layers:
                names[f"{google}{google_conv}/kernel"] = f"{ours}{conv}.weight"
                names[f"{google}{google_norm}/scale"] = f"{ours}{norm}.weight"
                names[f"{google}{google_norm}/bias"] = f"{ours}{norm}.bias"
    return {google: f"patch_embed.backbone.{ours}" for google, ours in names.items()}


# --- vitlab model -> Google's arrays and file ---------------------------------------------------
def _export_names(model: VisionTransformer) -> dict[str, str]:
    """Google key -> vitlab key ("query|key|value" names the three arrays of `to_qkv`)."""
    names = {key: ours for key, (ours, _) in TOP_TENSORS.items()}
    for i in range(len(model.encoder.blocks)):
        names.update({BLOCK.format(i) + key: f"encoder.blocks.{i}.{ours}" for key, (ours, _) in BLOCK_TENSORS.items()})
    if model.cfg.resnet_layers:
        names.update(google_backbone_names(model.patch_embed.backbone))
    return names


def state_dict_to_npz(model: VisionTransformer) -> dict[str, np.ndarray]:
    """The model's weights as Google's arrays (float32, flax names and layouts)."""
    if model.cfg.fc_norm:
        raise BadValue("Google's .npz layout has no fc_norm (MAE-style pooled norm): the model cannot be exported")
    if model.cfg.layer_scale_init is not None or model.cfg.num_register_tokens:
        raise BadValue(
            "Google's .npz layout has no LayerScale or register tokens (DINOv2): save this model with "
            "torch.save(model.state_dict(), path) instead"
        )
    state = {key: value.detach().float().cpu() for key, value in model.state_dict().items()}
    heads = model.encoder.blocks[0].attn.num_heads
    arrays = {}
    for key, (ours, conversion) in TOP_TENSORS.items():
        if ours in state:  # a model may have no class token, pre-logits or head
            arrays.update(_to_google(state[ours], key, conversion, heads))
    for i in range(len(model.encoder.blocks)):
        for key, (ours, conversion) in BLOCK_TENSORS.items():
            arrays.update(_to_google(state[f"encoder.blocks.{i}.{ours}"], BLOCK.format(i) + key, conversion, heads))
    if model.cfg.resnet_layers:
        for key, ours in google_backbone_names(model.patch_embed.backbone).items():
            value = state[ours]
            arrays[key] = value.permute(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW -> HWIO
    return {key: np.ascontiguousarray(value.numpy(), dtype=np.float32) for key, value in arrays.items()}


def save_npz(model: VisionTransformer, path: str | os.PathLike) -> Path:
    """Write the model in Google's `.npz` layout, atomically (temporary file, then rename)."""
    path = Path(path)
    arrays = state_dict_to_npz(model)
    with atomic_write(path) as f:  # a file object, so numpy does not append ".npz" to the name
        np.savez(f, **arrays)
    return path
