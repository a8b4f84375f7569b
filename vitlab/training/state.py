"""What a run's checkpoint holds, and how a run continues from one (written by `vitlab.weights.checkpoint`)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch

from vitlab.configs import VITConfig
from vitlab.errors import BadValue, MissingFile, preview_names


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DistributedDataParallel and torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def rng_state() -> dict:
    """Every RNG state a resumed run needs, as tensors and lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def checkpoint_state(cfg, model, optimizer, scheduler, scaler, step, best, class_names) -> dict:
    """Everything needed to rebuild the model and to continue the run exactly."""
    plain = unwrap(model)
    return {
        "model": plain.state_dict(),
        "model_config": dataclasses.asdict(plain.cfg) if hasattr(plain, "cfg") else {},
        "config": cfg.to_dict(),
        "class_names": list(class_names),
        "step": step,
        "best_accuracy": best[0],
        "best_step": best[1],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
    }


def resume_path(cfg: VITConfig) -> Path:
    """The checkpoint named by `cfg.resume` ("last" means save_dir/<run name>/last.pt)."""
    if cfg.resume in ("last", "true", "True"):
        path = Path(cfg.save_dir) / cfg.run_name / "last.pt"
        if not path.is_file():
            raise MissingFile(
                f"cannot resume: {path} does not exist; give the run's --name (the folder under {cfg.save_dir}) "
                "or the checkpoint path with --resume PATH"
            )
        return path
    return Path(cfg.resume)


def restore(state: dict, model, optimizer, scheduler, scaler) -> None:
    """Load the model, optimiser, scheduler, scaler and RNG states saved by `checkpoint_state`."""
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


def check_resumed_classes(state: dict, class_names: list[str], cfg: VITConfig) -> None:
    """A resumed run goes on with the classes its checkpoint learned: other data are refused, naming both lists."""
    saved = state.get("class_names")
    if saved is None or list(saved) == list(class_names):
        return
    saved_dir = (state.get("config") or {}).get("data_dir")
    own = f" (its data_dir was {saved_dir})" if saved_dir and saved_dir != cfg.data_dir else ""
    raise BadValue(
        f"cannot resume run {cfg.run_name} on these data: its checkpoint learned {len(saved)} classes "
        f"[{preview_names(saved, 12)}], but the data have {len(class_names)} classes "
        f"[{preview_names(class_names, 12)}]. Resume with "
        f"the run's own data{own}, or start a new run with another --name"
    )


def aside_name(path: Path) -> Path:
    """Where `set_aside` puts a damaged file: `<name>.damaged` (`.damaged.1`, ... when taken)."""
    target, number = path.with_name(path.name + ".damaged"), 0
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.damaged.{number}")
    return target


def set_aside(path: Path) -> Path:
    """Rename a damaged file to `aside_name(path)`, so that nothing reads it again and nothing is lost."""
    target = aside_name(path)
    path.rename(target)
    return target


def reconcile_best(run_dir: Path, last: dict) -> tuple[dict, str | None, Path | None]:
    """Make last.pt's record of the best checkpoint agree with best.pt; returns (state to resume, note,
    a damaged best.pt to set aside or None).

    The trainer writes best.pt before last.pt, and last.pt records which step best.pt holds. A run
    killed between the two writes leaves a best.pt newer than last.pt: it holds the whole state, so the
    run continues from it. A best.pt other than the recorded one (older runs wrote last.pt first) makes
    the record follow the file: the weights best.pt holds are the ones a test will use. A best.pt that
    cannot be read (truncated by a full disk, a copy cut short) does not stop the run: it continues from
    last.pt, the damaged file is set aside, and the best is chosen anew.
    """
    from vitlab.weights.checkpoint import load_checkpoint

    path = run_dir / "best.pt"
    recorded = last.get("best_step")
    if not path.is_file():
        if recorded is None:
            return last, None, None
        repaired = {**last, "best_step": None, "best_accuracy": -1.0}
        return repaired, f"best.pt is missing (last.pt recorded step {recorded}): the best is chosen anew", None
    try:
        best = load_checkpoint(path)
    except ValueError:  # CheckpointError: truncated, empty or not a checkpoint
        repaired = {**last, "best_step": None, "best_accuracy": -1.0}
        return (
            repaired,
            (
                f"best.pt cannot be read ({path.stat().st_size:,} bytes, truncated or damaged): it is set aside as "
                f"{aside_name(path).name}, the run continues from last.pt (step {last.get('step')}), which is intact, "
                "and the best is chosen anew"
            ),
            path,
        )
    if best.get("step") == recorded:
        return last, None, None
    if best.get("step", -1) > last.get("step", -1) and "optimizer" in best:
        return (
            best,
            (
                f"best.pt (step {best['step']}) is newer than last.pt (step {last.get('step')}): the run was stopped "
                "between the two writes; it continues from best.pt"
            ),
            None,
        )
    repaired = {**last, "best_step": best.get("step"), "best_accuracy": best.get("best_accuracy", -1.0)}
    return (
        repaired,
        (
            f"last.pt recorded the best at step {recorded}, but best.pt holds step {best.get('step')} (a write was "
            "interrupted): the record now follows best.pt"
        ),
        None,
    )
