"""What a run is made of, set up once and in order: config, resume state, model, data, optimiser (`setup_run`).

Nothing here writes to the run folder; `vitlab.train` claims it, writes config.json (`write_config`) and runs
the loop over what `setup_run` built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from vitlab.configs import VITConfig, resume_config
from vitlab.errors import AlreadyExists, BadValue
from vitlab.precision import model_width, resolve_precision
from vitlab.training.batches import check_data
from vitlab.training.build import (
    DEVICE_AUGMENT_OFF,
    build_data,
    build_model,
    build_optimizer,
    build_scheduler,
    checked_micro_batch_size,
    class_names_of,
    folders_augment_in_workers,
    follow_model_normalization,
    freeze_backbone,
)
from vitlab.training.devices import Distributed, main_process_first, seed_everything
from vitlab.training.inputs import check_inputs, weights_at_hand
from vitlab.training.state import check_resumed_classes, reconcile_best, restore, resume_path
from vitlab.training.stops import StopRequests
from vitlab.weights.checkpoint import load_checkpoint, model_from_state


class Best(NamedTuple):
    """The best validation accuracy so far and the step it was reached at (None: no evaluation yet)."""

    accuracy: float
    step: int | None


@dataclass
class Run:
    """What one run is made of, built once by `setup_run`; what changes as it trains lives in `train_and_test`."""

    cfg: VITConfig
    processes: Distributed
    model: torch.nn.Module
    train_set: Dataset
    val_set: Dataset | None
    test_set: Dataset | None
    class_names: list[str]
    held_out: dict | None  # which images of a folder run's training folder were held out for validation
    micro_batch: int  # images per forward/backward pass on this process
    precision: str
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    mix: object  # Mixup/CutMix of a micro-batch, or None
    stops: StopRequests
    start_step: int  # 0, or the step a resumed run continues after
    start_best: Best
    resume_state: dict | None
    damaged_best: Path | None  # an unreadable best.pt of the resumed run, set aside once the folder is claimed
    model_given: bool
    weights: str | None  # what loading the pre-trained weights did (load_pretrained's report), or None
    notes: list[str]  # printed under the run's first lines: what was adjusted, and why

    @property
    def device(self) -> torch.device:
        return self.processes.device

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.save_dir) / self.cfg.run_name

    @property
    def tb_dir(self) -> Path:
        return Path(self.cfg.log_dir) / self.cfg.run_name


def setup_run(cfg: VITConfig, processes: Distributed, train_set, val_set, test_set, model, notes) -> Run:
    """Everything a run needs, in order: config, resume state, model, data, optimiser; nothing is written yet."""
    from vitlab.data import build_batch_mix, held_out_record, num_classes  # imported here: loads torchvision

    notes, model_given, resume_state, damaged_best = list(notes or []), model is not None, None, None
    weights = None
    if cfg.resume:
        resume_state, cfg, damaged_best = load_resume_state(cfg, notes)
    if folders_augment_in_workers(cfg) is not cfg:
        cfg = folders_augment_in_workers(cfg)
        notes.append(DEVICE_AUGMENT_OFF)
    micro_batch = checked_micro_batch_size(cfg, processes.world_size)
    if model is None and resume_state is None:
        cfg = weights_at_hand(cfg, notes)  # the recipe's DINOv2 file in another layout, when that one is here
    # Every missing input named at once, before anything is written (offline: the checkpoint and CIFAR-10).
    check_inputs(cfg, checkpoint=model is None and resume_state is None, data=train_set is None)
    run_dir = Path(cfg.save_dir) / cfg.run_name
    if resume_state is None and (run_dir / "last.pt").exists():
        raise AlreadyExists(
            f"run folder {run_dir} already holds a run's checkpoints: pass --resume to continue it, "
            "or choose another --name (nothing was overwritten)"
        )
    seed_everything(cfg.seed)
    with main_process_first(processes):  # one process downloads the checkpoint and CIFAR, the others wait
        if model is None and resume_state is not None:
            # A resumed run continues the model its checkpoint holds (architecture, GELU, normalisation),
            # not a fresh one from the preset and the pre-trained file.
            model = model_from_state(resume_state, resume_path(cfg)).train()
        elif model is None:
            classes = num_classes(cfg) if train_set is None else len(class_names_of(cfg, train_set))
            model, weights = build_model(cfg, classes)
        check_has_head(model)
        # The model decides how its inputs are normalised (its preset, the overrides, a given model,
        # or the weights loaded into it); the data are then built once, for those inputs.
        followed = follow_model_normalization(cfg, model)
        if followed is not cfg:
            mean, std = followed.model_overrides["image_mean"], followed.model_overrides["image_std"]
            notes.append(f"inputs normalised as the model expects: mean {mean}, std {std}")
        cfg = followed
        given_train_set = train_set
        train_set, val_set, test_set, class_names = build_data(cfg, train_set, val_set, test_set, model)
        # A folder run's validation images come out of its training folder: the checkpoints say which
        # folder, so that `evaluate` on it scores those images, not the ones the model trained on.
        held_out = held_out_record(cfg, train_set) if given_train_set is None else None
    if resume_state is not None:
        check_resumed_classes(resume_state, class_names, cfg)
    check_data(cfg, train_set, val_set, test_set, class_names, model, given=given_train_set is not None)
    if cfg.freeze_backbone:
        freeze_backbone(model)
    model = model.to(processes.device)
    precision, why = resolve_precision(cfg.precision, processes.device, model_width(model))
    if cfg.precision == "auto" and precision != "fp32":
        notes.append(f"{precision} autocast: {why}")
    optimizer = build_optimizer(cfg, model, processes.device)
    scheduler = build_scheduler(cfg, optimizer)
    mix = build_batch_mix(cfg.mixup_alpha, cfg.cutmix_alpha, len(class_names))
    scaler = torch.amp.GradScaler(processes.device.type, enabled=precision == "fp16")
    start_step, start_best = 0, Best(-1.0, None)
    if resume_state is not None:
        restore(resume_state, model, optimizer, scheduler, scaler)
        start_step = resume_state["step"]
        start_best = Best(resume_state["best_accuracy"], resume_state.get("best_step"))
    return Run(
        cfg=cfg, processes=processes, model=model, train_set=train_set, val_set=val_set, test_set=test_set,
        class_names=class_names, held_out=held_out, micro_batch=micro_batch, precision=precision,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, mix=mix, stops=StopRequests(),
        start_step=start_step, start_best=start_best, resume_state=resume_state, damaged_best=damaged_best,
        model_given=model_given, weights=weights, notes=notes,
    )  # fmt: skip


def check_has_head(model) -> None:
    if getattr(getattr(model, "cfg", None), "num_classes", None) == 0:
        raise BadValue(
            "the model has no classification head (num_classes=0, it returns features): give it one, "
            "e.g. vitlab.create_model(name, num_classes=10), to train a classifier"
        )


def load_resume_state(cfg: VITConfig, notes: list[str]) -> tuple[dict, VITConfig, Path | None]:
    """The checkpoint to continue from, the run's own config (with the safe changes asked for) and a damaged
    best.pt to set aside (or None); what changed is added to `notes`."""
    path = resume_path(cfg)
    state = load_checkpoint(path)
    missing = {"model", "optimizer", "scheduler", "scaler", "rng", "step"} - set(state)
    if missing:
        raise BadValue(f"cannot resume from {path}: it lacks {sorted(missing)}, it is not a run's last.pt")
    if state.get("config"):
        cfg, changes = resume_config(state["config"], cfg)
        if changes:
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
            notes.append(f"resuming with changed settings: {listed}")
    damaged_best = None
    if path.name == "last.pt" and path.parent == Path(cfg.save_dir) / cfg.run_name:
        state, note, damaged_best = reconcile_best(path.parent, state)
        if note:
            notes.append(note)
    if state["step"] >= cfg.num_steps:
        run_dir = Path(cfg.save_dir) / cfg.run_name
        raise BadValue(
            f"run {cfg.run_name} is already finished: {state['step']} of {cfg.num_steps} steps. To train it "
            f"further, resume with a larger --num_steps; to test it: python -m vitlab.evaluate --checkpoint "
            f"{run_dir / 'best.pt'}"
        )
    return state, cfg, damaged_best


def write_config(run: Run) -> None:
    """config.json: the run's config; a resume that changed it keeps the previous one beside it."""
    path, cfg = run.run_dir / "config.json", run.cfg.replace(resume=None)  # how the run is, not how it began
    if path.is_file() and run.resume_state is not None:
        try:
            before = VITConfig.from_json(path)
        except ValueError:
            before = None
        if before is not None and before.to_dict() != cfg.to_dict():
            before.to_json(run.run_dir / f"config.before_step_{run.start_step}.json")
    cfg.to_json(path)
