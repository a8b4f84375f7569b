"""Train a ViT, fine-tuning or from scratch: `train(cfg)` and `python -m vitlab.train`.

Steps, not epochs: each optimiser step sees `train_batch_size` images, split over the processes
of a torchrun job and over `gradient_accumulation_steps` forward/backward passes. The data order
and every sample's augmentation follow from (seed, position in the stream), so a resumed run and
a multi-process run see exactly the images a single uninterrupted run would.

    python -m vitlab.train --config finetune
    python -m vitlab.train --config scratch
    python -m vitlab.train --config smoke --dataset synthetic
    torchrun --nproc_per_node 4 -m vitlab.train --config finetune --gradient_accumulation_steps 2

This file is the run itself: set-up in order (config, resume, model, data, optimiser), the loop, the
checks on the validation split, the test at the end. The parts it calls live in `vitlab/training/`:
`devices` (processes, precision, seeds), `build` (config check, model, data, optimiser, schedule),
`batches` (the seeded stream of micro-batches), `checkpoints`, `logs` (TensorBoard) and `cli` (the flags).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from vitlab import cli
from vitlab.configs import VITConfig, export_config, resume_config
from vitlab.evaluate import autocast_context, evaluate
from vitlab.training.batches import build_device_batches, build_train_loader, check_data, prepare_batch
from vitlab.training.build import (
    DEVICE_AUGMENT_OFF,
    augment_where_possible,
    backbone_features,
    build_data,
    build_model,
    build_optimizer,
    build_scheduler,
    check_config,
    class_names_of,
    features_once,
    follow_model_normalization,
    freeze_backbone,
)
from vitlab.training.checkpoints import (
    check_same_classes,
    checkpoint_state,
    reconcile_best,
    restore,
    resume_path,
    set_aside,
)
from vitlab.training.cli import parse_command_line
from vitlab.training.devices import (
    Distributed,
    data_workers,
    main_process_first,
    resolve_precision,
    seed_everything,
    setup_distributed,
)
from vitlab.training.inputs import check_inputs
from vitlab.training.logs import log_hparams, log_samples, open_writer, run_hparams
from vitlab.training.run_folder import claim, sweep_temporaries
from vitlab.training.stops import (
    NonFiniteLossError,
    StopRequests,
    TrainingInterrupted,
    non_finite_message,
    resume_command,
)
from vitlab.weights.checkpoint import load_checkpoint, model_from_state, save_checkpoint
from vitlab.weights.files import DiskFullError, disk_full_error


# --- one optimiser step ---------------------------------------------------------------------------
def train_step(model, batches, optimizer, scaler, cfg: VITConfig, precision: str, device, mix=None) -> tuple:
    """Accumulate gradients over the micro-batches of one step, clip, update; returns (loss, grad_norm) tensors.

    `mix` (`vitlab.data.build_batch_mix`) turns each micro-batch into Mixup/CutMix images with soft labels.
    """
    accumulation = cfg.gradient_accumulation_steps
    loss_sum = torch.zeros((), device=device)
    for accumulation_pass in range(accumulation):
        images, labels = prepare_batch(next(batches), device)
        if mix is not None:
            images, labels = mix(images, labels)  # labels (B, num_classes): the mixing weights
        last = accumulation_pass == accumulation - 1
        # DDP averages gradients across processes only on the last pass: one all-reduce per step.
        no_sync = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
        with no_sync:
            with autocast_context(device, precision):
                logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing) / accumulation
            scaler.scale(loss).backward()
        loss_sum += loss.detach()
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm


PLAIN_PROGRESS_SECONDS = 60  # without a progress bar, a line about training at most this often


def interactive_output() -> bool:
    """Whether a progress bar can redraw itself: a terminal, or a notebook (tqdm.auto's widget)."""
    if any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__):
        return True
    return sys.stderr.isatty()


def on_synthetic_data(cfg: VITConfig) -> bool:
    """Whether the run trains on synthetic images (dataset "synthetic", or synthetic files in data_dir)."""
    from vitlab.data import SYNTHETIC_MARKER  # imported here: vitlab.data loads torchvision

    return cfg.dataset == "synthetic" or (Path(cfg.data_dir) / "cifar-10-batches-py" / SYNTHETIC_MARKER).is_file()


# --- the run --------------------------------------------------------------------------------------
def train(
    cfg: VITConfig,
    train_set=None,
    val_set=None,
    test_set=None,
    model=None,
    *,
    given_fields: set | None = None,
    notes: list[str] | None = None,
) -> dict:
    """Train `model` (default: built from cfg) on cfg.dataset or the given datasets; returns the results.

    Given datasets are any map-style datasets of (image tensor, int label); without `val_set` the
    last weights count as the best. The result holds best_val_accuracy, test_accuracy, test_top5,
    steps, wall_time, run_dir (TensorBoard), checkpoint_dir, history (the logged steps) and `model`
    with the best weights, those the test accuracy belongs to.

    With `cfg.resume` the run continues with its saved config; fields of `cfg` that differ from it
    may change only when safe (`vitlab.configs.CHANGEABLE_ON_RESUME`), others are an error.
    `given_fields` names the fields the caller set (the command line passes them); without it a field
    counts as set when it differs from VITConfig's default. `notes` are lines printed under the run's
    first lines, with its own (the command line's: a warm-up scaled to the run). Ctrl-C or SIGTERM saves
    last.pt at the end of the step and raises `TrainingInterrupted` (a KeyboardInterrupt); a NaN or
    infinite loss raises `NonFiniteLossError` (a ValueError) and keeps the last checkpoint.
    """
    env = setup_distributed(cfg)
    try:
        return _Run(cfg, env, train_set, val_set, test_set, model, given_fields, notes).run()
    finally:
        if env.started_here:
            dist.destroy_process_group()


class _Run:
    """The state of one training run; `run()` is the loop."""

    def __init__(
        self, cfg: VITConfig, env: Distributed, train_set, val_set, test_set, model, given_fields=None, notes=None
    ):
        from vitlab.data import build_batch_mix, held_out_record, num_classes  # imported here: loads torchvision

        self.env, self.device = env, env.device
        # Printed under the run's first lines: what was adjusted, and why.
        self.resume_state, self.notes, self.model_given = None, list(notes or []), model is not None
        self.damaged_best = None  # an unreadable best.pt of the resumed run, set aside once the folder is claimed
        if cfg.resume:
            self.resume_state, cfg = self.load_resume_state(cfg, given_fields)
        if augment_where_possible(cfg) is not cfg:
            cfg = augment_where_possible(cfg)
            self.notes.append(DEVICE_AUGMENT_OFF)
        self.micro = check_config(cfg, env.world_size)
        # Every missing input named at once, before anything is written (offline: the checkpoint and CIFAR-10).
        check_inputs(cfg, checkpoint=model is None and self.resume_state is None, data=train_set is None)
        self.cfg = cfg
        self.run_dir = Path(cfg.save_dir) / cfg.run_name
        self.tb_dir = Path(cfg.log_dir) / cfg.run_name
        if self.resume_state is None and (self.run_dir / "last.pt").exists():
            raise FileExistsError(
                f"run folder {self.run_dir} already holds a run's checkpoints: pass --resume to continue it, "
                "or choose another --name (nothing was overwritten)"
            )
        seed_everything(cfg.seed)
        with main_process_first(env):  # one process downloads the checkpoint and CIFAR, the others wait
            if model is None and self.resume_state is not None:
                # A resumed run continues the model its checkpoint holds (architecture, GELU, normalisation),
                # not a fresh one from the preset and the pre-trained file.
                model = model_from_state(self.resume_state, resume_path(cfg)).train()
            elif model is None:
                classes = num_classes(cfg) if train_set is None else len(class_names_of(cfg, train_set))
                model = build_model(cfg, classes)
            head = getattr(getattr(model, "cfg", None), "num_classes", None)
            if head == 0:
                raise ValueError(
                    "the model has no classification head (num_classes=0, it returns features): give it one, "
                    "e.g. vitlab.create_model(name, num_classes=10), to train a classifier"
                )
            # The model decides how its inputs are normalised (its preset, the overrides, a given model,
            # or the weights loaded into it); the data are then built once, for those inputs.
            followed = follow_model_normalization(cfg, model)
            if followed is not cfg:
                mean, std = followed.model_overrides["image_mean"], followed.model_overrides["image_std"]
                self.notes.append(f"inputs normalised as the model expects: mean {mean}, std {std}")
            self.cfg = cfg = followed
            self.train_set, self.val_set, self.test_set, self.class_names = build_data(
                cfg, train_set, val_set, test_set, model
            )
            # A folder run's validation images come out of its training folder: the checkpoints say which
            # folder, so that `evaluate` on it scores those images, not the ones the model trained on.
            self.held_out = held_out_record(cfg, self.train_set) if train_set is None else None
        if self.resume_state is not None:
            check_same_classes(self.resume_state, self.class_names, cfg)
        data = (self.train_set, self.val_set, self.test_set, self.class_names)
        check_data(cfg, *data, model, given=train_set is not None)  # before anything is written
        if cfg.freeze_backbone:
            freeze_backbone(model)
        self.model = model.to(self.device)
        # What the steps train and read: the model on images, or in a linear probe on features computed once
        # (`features_once`) its head on those features (set in `train_and_test`).
        self.trained, self.train_inputs, self.val_inputs = self.model, self.train_set, self.val_set
        self.precision = resolve_precision(cfg.precision, self.device)
        self.optimizer = build_optimizer(cfg, self.model, self.device)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.mix = build_batch_mix(cfg.mixup_alpha, cfg.cutmix_alpha, len(self.class_names))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step, self.best_accuracy, self.best_step, self.history = 0, -1.0, None, []
        if self.resume_state is not None:
            restore(self.resume_state, self.model, self.optimizer, self.scheduler, self.scaler)
            self.step, self.best_accuracy = self.resume_state["step"], self.resume_state["best_accuracy"]
            self.best_step = self.resume_state.get("best_step")
        self.stops = StopRequests()

    def load_resume_state(self, cfg: VITConfig, given_fields) -> tuple[dict, VITConfig]:
        """The checkpoint to continue from and the run's own config (with the safe changes asked for)."""
        path = resume_path(cfg)
        state = load_checkpoint(path)
        missing = {"model", "optimizer", "scheduler", "scaler", "rng", "step"} - set(state)
        if missing:
            raise ValueError(f"cannot resume from {path}: it lacks {sorted(missing)}, it is not a run's last.pt")
        if state.get("config"):
            cfg, changes = resume_config(state["config"], cfg, given_fields)
            if changes:
                listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
                self.notes.append(f"resuming with changed settings: {listed}")
        if path.name == "last.pt" and path.parent == Path(cfg.save_dir) / cfg.run_name:
            state, note, self.damaged_best = reconcile_best(path.parent, state)
            if note:
                self.notes.append(note)
        if state["step"] >= cfg.num_steps:
            run_dir = Path(cfg.save_dir) / cfg.run_name
            raise ValueError(
                f"run {cfg.run_name} is already finished: {state['step']} of {cfg.num_steps} steps. To train it "
                f"further, resume with a larger --num_steps; to test it: python -m vitlab.evaluate --checkpoint "
                f"{run_dir / 'best.pt'}"
            )
        return state, cfg

    def wrapped_model(self) -> torch.nn.Module:
        model = self.trained
        if self.env.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        return torch.compile(model) if self.cfg.compile else model

    def run(self) -> dict:
        """Claim the run folder (main process), then train, test and release it."""
        if not self.env.is_main:
            return self.train_and_test()
        with claim(self.run_dir):
            if self.resume_state is None and (self.run_dir / "last.pt").exists():  # it came while we set up
                raise FileExistsError(f"run folder {self.run_dir} got another run's checkpoints: choose another --name")
            sweep_temporaries(self.run_dir)
            if self.damaged_best is not None:
                set_aside(self.damaged_best)
            self.write_config()
            return self.train_and_test()

    def write_config(self) -> None:
        """config.json: the run's config; a resume that changed it keeps the previous one beside it."""
        path, cfg = self.run_dir / "config.json", self.cfg.replace(resume=None)  # how the run is, not how it began
        if path.is_file() and self.resume_state is not None:
            try:
                before = VITConfig.from_json(path)
            except ValueError:
                before = None
            if before is not None and before.to_dict() != cfg.to_dict():
                before.to_json(self.run_dir / f"config.before_step_{self.step}.json")
        cfg.to_json(path)

    def train_and_test(self) -> dict:
        cfg, env = self.cfg, self.env
        self.writer, self.bar = open_writer(cfg, env, self.step), None
        if self.writer is not None:
            log_hparams(self.writer, run_hparams(cfg, self.precision), cfg.run_name)
        if self.writer is not None and self.step == 0:
            from vitlab.data import image_normalization

            mean, std = image_normalization(cfg)
            log_samples(self.writer, self.train_set, cfg.seed, mean=mean, std=std)
        if env.is_main:
            self.say_where()
        start_time, start_step = time.perf_counter(), self.step
        if features_once(cfg):
            self.say(f"linear probe: the frozen backbone's features of {len(self.train_set)} training images, once")
            self.trained = self.model.head
            self.train_inputs = backbone_features(self.model, self.train_set, cfg, self.device, self.precision)
            if self.val_set is not None:
                self.val_inputs = backbone_features(self.model, self.val_set, cfg, self.device, self.precision)
        try:
            with self.stops.installed():
                self.loop()
        except BaseException:
            self.close_bar()
            if self.writer is not None:
                self.writer.close()  # what was logged so far stays readable
            raise
        result = self.finish()
        result["wall_time"] = time.perf_counter() - start_time
        result["start_step"] = start_step  # 0, or the step a resumed run continued from
        return result

    def say_where(self) -> None:
        """Before the first step: what runs, where, and where its results go; then what was adjusted (notes)."""
        cfg, model = self.cfg, self.model
        count = f" ({model.get_num_params():,} parameters)" if hasattr(model, "get_num_params") else ""
        data = "synthetic data" if on_synthetic_data(cfg) else cfg.dataset
        data = f"the image folders in {cfg.data_dir}" if cfg.dataset == "folder" else data
        steps = f"{cfg.num_steps} step{'s' * (cfg.num_steps != 1)} of {cfg.train_batch_size} images"
        if self.step:
            steps += f", resuming after step {self.step}"
        start = ""  # where the weights start from, when this run built the model
        if not self.model_given and self.resume_state is None:
            start = f" from {Path(cfg.pretrained_dir).name}" if cfg.pretrained_dir else " from random weights"
        where = f"{self.device.type}, {self.precision}"
        print(f"run {cfg.run_name}: {cfg.model_type}{count}{start} on {data}, {steps}, {where}")
        if self.writer is not None:
            print(f"  TensorBoard: {self.tb_dir}  (tensorboard --logdir {cfg.log_dir})")
        print(f"  checkpoints: {self.run_dir}/best.pt, last.pt; {self.evaluation_plan()}")
        workers = data_workers(cfg.num_workers)
        if not cfg.device_augment and workers < cfg.num_workers:
            self.notes.append(
                f"{workers} data-loading worker{'s' * (workers != 1)} instead of num_workers {cfg.num_workers}: "
                "no more than this machine's cores"
            )
        for note in self.notes:
            print(f"  note: {note}")
        sys.stdout.flush()

    def evaluation_plan(self) -> str:
        """When the run validates and saves: "validation every 100 steps", or only at its last step."""
        cfg = self.cfg
        what = "validation" if self.val_set is not None else "saved"
        next_multiple = (self.step // cfg.eval_every + 1) * cfg.eval_every
        if next_multiple >= cfg.num_steps:
            return f"{what} at the end (step {cfg.num_steps})"
        plan = f"{what} every {cfg.eval_every} steps"
        return plan + (f" and at step {cfg.num_steps}" if cfg.num_steps % cfg.eval_every else "")

    def say(self, line: str) -> None:
        """Print a line on the main process without breaking the progress bar."""
        if self.env.is_main:
            (tqdm.write if self.bar is not None else print)(line)
            sys.stdout.flush()

    def loop(self) -> None:
        cfg, env = self.cfg, self.env
        model = self.wrapped_model().train()
        classes = len(self.class_names)  # labels are checked as they are read
        if self.trained is not self.model:  # features in memory: no augmentation, no workers
            batches = iter(
                build_train_loader(cfg.replace(num_workers=0), self.train_inputs, self.micro, env, self.step, classes)
            )
        else:
            build_batches = build_device_batches if cfg.device_augment else build_train_loader
            batches = iter(build_batches(cfg, self.train_set, self.micro, env, self.step, classes))
        # A bar on a terminal or in a notebook; piped to a file, plain lines instead (a bar there is a line per update).
        self.bar = None
        if env.is_main and cfg.progress and interactive_output():
            self.bar = tqdm(total=cfg.num_steps, initial=self.step, desc="train", dynamic_ncols=True)
        window_loss, window_start, window_steps = torch.zeros((), device=self.device), time.perf_counter(), 0
        first_step, last_line = self.step + 1, time.perf_counter()
        self.saved_step = self.step
        while self.step < cfg.num_steps:
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
            loss, grad_norm = train_step(
                model, batches, self.optimizer, self.scaler, cfg, self.precision, self.device, self.mix
            )
            self.scheduler.step()
            self.step += 1
            window_loss += loss
            window_steps += 1
            if self.bar is not None and self.step == first_step:  # one sync, so the bar shows a loss at once
                self.bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            evaluating = self.step % cfg.eval_every == 0 or self.step == cfg.num_steps
            logging = self.step % cfg.log_every == 0 or evaluating  # evaluation waits for the GPU anyway
            if logging:
                images_per_sec = self.log_train(window_loss / window_steps, lr, grad_norm, window_steps, window_start)
                train_loss = self.history[-1]["loss"]
                if self.bar is not None:
                    self.bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_sec:.0f}")
                elif cfg.progress and not evaluating and time.perf_counter() - last_line > PLAIN_PROGRESS_SECONDS:
                    self.say(f"step {self.step}/{cfg.num_steps}: train loss {train_loss:.4f}, lr {lr:.2e}, "
                             f"{images_per_sec:.0f} images/s")  # fmt: skip
                    last_line = time.perf_counter()
                window_loss, window_start, window_steps = torch.zeros((), device=self.device), time.perf_counter(), 0
            if evaluating:
                self.check_finite()  # nothing non-finite may reach a checkpoint (log_train checked the loss)
                eval_start = time.perf_counter()
                self.validate()
                last_line = time.perf_counter()
                window_start += last_line - eval_start  # images/s counts training time only
            if self.bar is not None:
                self.bar.update(1)
            if self.stop_requested(logging):
                self.close_bar()
                self.interrupt()
        self.close_bar()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def stop_requested(self, logging: bool) -> bool:
        """Ctrl-C / SIGTERM seen: at once alone; in a torchrun job all processes agree at a logging step."""
        if self.env.world_size == 1:
            return self.stops.signal_name is not None
        if not logging:
            return False
        flag = torch.tensor(float(self.stops.signal_name is not None), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.stops.signal_name is None:
            self.stops.signal_name = "SIGTERM"  # another process was told to stop
        return bool(flag.item())

    def interrupt(self):
        """Save last.pt at this step boundary and stop with the command that resumes."""
        kept = "nothing saved"
        if self.step > self.saved_step:
            # No log has looked at the loss since then: every process checks its (identical) weights, so all stop.
            self.check_finite()
            if self.env.is_main:
                self.save("last.pt")
        if self.env.is_main:
            kept = f"saved {self.run_dir / 'last.pt'} (step {self.step})"
        if self.env.world_size > 1:
            dist.barrier()
        raise TrainingInterrupted(
            f"{self.stops.signal_name} at step {self.step} of {self.cfg.num_steps}: {kept}; continue with: "
            f"{resume_command(self.cfg)}"
        )

    def check_finite(self) -> None:
        """Before a checkpoint is written: every weight is a finite number."""
        finite = torch.stack([p.isfinite().all() for p in self.model.parameters()])
        if not bool(finite.all()):  # one sync, at an evaluation or a stop, which sync anyway
            self.stop_non_finite(None, self.saved_step + 1)

    def stop_non_finite(self, value: float | None, first_step: int) -> None:
        """Stop with the loss `value` that is not a number (None: the weights are not), keeping the checkpoints."""
        kept = (
            f"the checkpoints of step {self.saved_step} in {self.run_dir} were kept"
            if self.saved_step
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(non_finite_message(value, self.step, first_step, self.cfg, kept))

    def log_train(self, loss, lr, grad_norm, steps, since) -> float:
        """The only place the loop waits for the GPU: turn the window's loss and norm into numbers."""
        if self.env.world_size > 1:
            dist.all_reduce(loss)
            loss = loss / self.env.world_size
        loss, grad_norm = loss.item(), grad_norm.item()
        if not math.isfinite(loss):
            self.stop_non_finite(loss, self.step - steps + 1)
        images_per_sec = steps * self.cfg.train_batch_size / max(time.perf_counter() - since, 1e-9)
        self.history.append({"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm})
        if self.writer is not None:
            scalars = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "images_per_sec": images_per_sec}
            for tag, value in scalars.items():
                self.writer.add_scalar(f"train/{tag}", value, self.step)
        return images_per_sec

    def validate(self) -> None:
        """Evaluate on the validation split (every process, whole split); the main process saves."""
        cfg = self.cfg
        metrics = None
        if self.val_set is not None:
            metrics = evaluate(self.trained, self.val_inputs, cfg.eval_batch_size, self.device, self.precision)
            if self.history:
                self.history[-1].update(val_accuracy=metrics["top1"], val_loss=metrics["loss"])
        # Without a validation split the latest weights count as the best ones.
        improved = metrics is None or metrics["top1"] > self.best_accuracy
        if improved:
            self.best_accuracy = metrics["top1"] if metrics is not None else self.best_accuracy
            self.best_step = self.step
        if self.writer is not None:
            if metrics is not None:
                self.writer.add_scalar("val/loss", metrics["loss"], self.step)
                self.writer.add_scalar("val/accuracy", metrics["top1"], self.step)
                self.writer.add_scalar("val/best_accuracy", self.best_accuracy, self.step)
            if getattr(self.model, "pos_embed", None) is not None:
                # "weights/" sorts after "train/" and "val/": TensorBoard's Time Series opens the first two groups.
                self.writer.add_histogram("weights/pos_embed", self.model.pos_embed.detach().float().cpu(), self.step)
            self.writer.flush()
        self.say(self.evaluation_line(metrics))
        if self.env.is_main:
            # best.pt first: last.pt records which step best.pt holds, so it must never run ahead of it.
            if improved:
                self.save("best.pt")
            self.save("last.pt")
        self.saved_step = self.step

    def evaluation_line(self, metrics: dict | None) -> str:
        """One evaluation as a line: "step 100/500: val loss 1.2345, val accuracy 56.78% (best ... at step 100)"."""
        line = f"step {self.step}/{self.cfg.num_steps}: "
        if metrics is None:
            line += "no validation split, the latest weights count as the best"
        else:
            line += (f"val loss {metrics['loss']:.4f}, val accuracy {100 * metrics['top1']:.2f}% "
                     f"(best {100 * self.best_accuracy:.2f}% at step {self.best_step})")  # fmt: skip
        if self.history:
            line += f", train loss {self.history[-1]['loss']:.4f}"
        return line

    def save(self, filename: str) -> Path:
        state = checkpoint_state(
            self.cfg, self.model, self.optimizer, self.scheduler, self.scaler, self.step,
            (self.best_accuracy, self.best_step), self.class_names,
        )  # fmt: skip
        if self.held_out is not None:
            state["held_out"] = self.held_out
        try:
            return save_checkpoint(self.run_dir / filename, state)
        except DiskFullError:
            fix = "no checkpoint had been written yet: free some space there and run the command again"
            if self.saved_step:
                fix = (f"the checkpoints of step {self.saved_step} are kept: free some space there and continue with: "
                       f"{resume_command(self.cfg)}")  # fmt: skip
            raise disk_full_error(self.run_dir / filename, "the checkpoint", fix) from None

    def finish(self) -> dict:
        """Test the best checkpoint (main process), close the writer."""
        cfg, env = self.cfg, self.env
        best_path = self.run_dir / "best.pt"
        result = {
            "best_val_accuracy": self.best_accuracy if self.val_set is not None else None,
            "best_step": self.best_step,
            "steps": self.step,
            "run_dir": str(self.tb_dir),
            "checkpoint_dir": str(self.run_dir),
            "best_checkpoint": str(best_path),
            "history": self.history,
            "class_names": self.class_names,
            "precision": self.precision,
            "world_size": env.world_size,
            "synthetic_data": on_synthetic_data(cfg),
        }
        if env.is_main:
            if best_path.is_file():
                best = load_checkpoint(best_path, map_location=self.device)
                self.model.load_state_dict(best["model"])
                # best.pt is the record of truth: the accuracy and step reported are those of the weights tested.
                result["best_step"] = best.get("step")
                if self.val_set is not None:
                    result["best_val_accuracy"] = best.get("best_accuracy")
            if self.test_set is not None:
                test = evaluate(self.model, self.test_set, cfg.eval_batch_size, self.device, self.precision)
                result.update(test_accuracy=test["top1"], test_top5=test["top5"], test_loss=test["loss"])
                if self.writer is not None:  # two single points at the last step, side by side in their own group
                    for tag in ("top1", "top5"):
                        self.writer.add_scalar(f"test/{tag}", test[tag], self.step)
            if self.writer is not None:
                self.writer.close()
        if env.world_size > 1:
            dist.barrier()  # the other processes wait while the main one tests and saves
        result["model"] = self.model.eval()
        return result


# --- command line ---------------------------------------------------------------------------------
def summary_lines(cfg: VITConfig, result: dict) -> list[str]:
    """The lines a finished run ends with: accuracies, on what data, where everything is."""
    lines = []
    if result["best_val_accuracy"] is not None:
        lines.append(f"best validation accuracy: {100 * result['best_val_accuracy']:.2f}% (step {result['best_step']})")
    if "test_accuracy" in result:
        top1, top5 = 100 * result["test_accuracy"], 100 * result["test_top5"]
        lines.append(f"test accuracy: top-1 {top1:.2f}%  top-5 {top5:.2f}%")
    if result.get("synthetic_data") and lines:
        lines.append("these accuracies are on synthetic data (coloured shapes in CIFAR-10's format), not real images")
    if cfg.TB_log:
        lines.append(f"TensorBoard run: {result['run_dir']}  (tensorboard --logdir {cfg.log_dir})")
    lines.append(f"checkpoints: {result['checkpoint_dir']}/best.pt, last.pt")
    start = result.get("start_step", 0)
    steps = f"steps {start + 1}-{result['steps']}" if start else f"{result['steps']} steps"
    lines.append(f"{steps} in {result['wall_time']:.1f} s")
    return lines


def main(argv: list[str] | None = None) -> dict:
    """Command line entry point: parse, train, print where the run landed and its accuracies."""
    cfg, print_format, given, notes = parse_command_line(argv)
    if print_format is not None:
        for note in notes:  # on stderr: stdout is the config file
            print(f"note: {note}", file=sys.stderr)
        print(export_config(cfg, print_format), end="")
        return {"config": cfg}
    result = train(cfg, given_fields=given, notes=notes)
    if int(os.environ.get("RANK", "0")) == 0:
        print("\n".join(summary_lines(cfg, result)))
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main))
