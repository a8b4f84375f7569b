"""PyTorch checkpoints of vitlab runs: written atomically, read with `weights_only=True`.

A trainer checkpoint is a dict with `"model"` (the state dict), `"model_config"` (the
`ModelConfig` fields), `"config"` (the `VITConfig` fields), `"class_names"`, `"step"`,
`"best_accuracy"`, `"best_step"` and the optimiser, scheduler, scaler and RNG states needed to resume.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from vitlab.configs import model_config_from, resolve_model_name
from vitlab.errors import BadValue, FileError, IsAFolder, MissingFile
from vitlab.factory import model_of
from vitlab.files import atomic_write
from vitlab.model import VisionTransformer
from vitlab.weights.errors import CheckpointError, unreadable_torch_file


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write `state` with torch.save to a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(state, f)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`; a missing or damaged file is a clear error."""
    path = Path(path)
    if path.is_dir():
        inside = " or ".join(str(path / n) for n in ("best.pt", "last.pt") if (path / n).is_file())
        raise IsAFolder(
            f"checkpoint {path} is a folder: give a checkpoint file{' such as ' + inside if inside else ''}"
        )
    if not path.is_file():
        raise MissingFile(f"checkpoint {path} does not exist: check the path (runs save to <save_dir>/<name>/)")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty: the run that wrote it was interrupted; use another checkpoint"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise unreadable_torch_file(path, error, "copy it again or use another one") from None
    except OSError as error:
        if error.filename is not None:  # the file itself cannot be opened (permissions): the system says why
            raise FileError(error.errno, error.strerror, str(path)) from None
        # torch's zip reader says "[Errno 22] Invalid argument" for some truncated files
        raise unreadable_torch_file(path, error, "copy it again or use another one") from None
    if not isinstance(state, dict):
        raise BadValue(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def model_from_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[VisionTransformer, list[str] | None]:
    """Rebuild the model saved by the trainer: returns (model in eval mode, class names or None)."""
    state = load_checkpoint(path, map_location=map_location)
    return model_from_state(state, path), state.get("class_names")


def check_model_type(state: dict, path: str | os.PathLike, model_type: str | None) -> None:
    """Refuse a command's `--model_type` that disagrees with the model a run's checkpoint records.

    The checkpoint decides the architecture (`model_from_state`); a flag naming another one would be
    silently ignored, so the command stops and names both instead.
    """
    recorded = (state.get("config") or {}).get("model_type")
    if model_type and recorded and resolve_model_name(model_type) != resolve_model_name(recorded):
        raise BadValue(
            f"--model_type {model_type} disagrees with {path}, the checkpoint of a {recorded} run: leave "
            "--model_type out (a run's checkpoint records its model) or give a checkpoint of that model"
        )


def model_from_state(state: dict, path: str | os.PathLike = "the checkpoint") -> VisionTransformer:
    """The model (in eval mode) of a checkpoint already read with `load_checkpoint`, as its `model_config` says."""
    if "model" not in state or "model_config" not in state:
        raise BadValue(
            f"checkpoint {path} has keys {sorted(state)}, not a vitlab run checkpoint ('model' and "
            "'model_config' expected); for Google's .npz files use vitlab.load_pretrained"
        )
    try:
        model_cfg = model_config_from(state["model_config"])
    except (TypeError, ValueError) as error:  # a field this vitlab does not know, or a value it refuses
        raise CheckpointError(f"checkpoint {path}: its model_config does not describe a model: {error}") from None
    model = model_of(model_cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:  # missing / unexpected keys, or shapes that differ
        details = " ".join(str(error).split())
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit its own model_config ({details[:300]}): the file was "
            "edited or written by something else; use the checkpoint as the trainer saved it"
        ) from None
    return model.eval()
