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
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from vitlab.configs import VITConfig, export_config
from vitlab.evaluate import autocast_context, evaluate
from vitlab.training.batches import build_device_batches, build_train_loader, prepare_batch
from vitlab.training.build import (
    build_data,
    build_model,
    build_optimizer,
    build_scheduler,
    check_config,
    class_names_of,
    follow_model_normalization,
)
from vitlab.training.checkpoints import checkpoint_state, restore, resume_path
from vitlab.training.cli import parse_command_line
from vitlab.training.devices import (
    Distributed,
    main_process_first,
    resolve_precision,
    seed_everything,
    setup_distributed,
)
from vitlab.training.logs import log_hparams, log_samples, open_writer, run_hparams
from vitlab.weights.checkpoint import load_checkpoint, save_checkpoint


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
def train(cfg: VITConfig, train_set=None, val_set=None, test_set=None, model=None) -> dict:
    """Train `model` (default: built from cfg) on cfg.dataset or the given datasets; returns the results.

    Given datasets are any map-style datasets of (image tensor, int label); without `val_set` the
    last weights count as the best. The result holds best_val_accuracy, test_accuracy, test_top5,
    steps, wall_time, run_dir (TensorBoard), checkpoint_dir, history (the logged steps) and `model`
    with the best weights, those the test accuracy belongs to.
    """
    env = setup_distributed(cfg)
    try:
        return _Run(cfg, env, train_set, val_set, test_set, model).run()
    finally:
        if env.started_here:
            dist.destroy_process_group()


class _Run:
    """The state of one training run; `run()` is the loop."""

    def __init__(self, cfg: VITConfig, env: Distributed, train_set, val_set, test_set, model):
        from vitlab.data import build_batch_mix, num_classes  # imported here: vitlab.data loads torchvision

        self.env, self.device = env, env.device
        self.micro = check_config(cfg, env.world_size)
        self.resume_state = None
        if cfg.resume:
            self.resume_state = load_checkpoint(resume_path(cfg))
            saved = self.resume_state.get("config", {})  # keep writing to the interrupted run's folders
            cfg = cfg.replace(**{k: saved[k] for k in ("name", "record_algo", "test_cycles") if k in saved})
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
            if model is None:
                classes = num_classes(cfg) if train_set is None else len(class_names_of(cfg, train_set))
                model = build_model(cfg, classes)
            # The model decides how its inputs are normalised (its preset, the overrides, a given model,
            # or the weights loaded into it); the data are then built once, for those inputs.
            self.cfg = cfg = follow_model_normalization(cfg, model)
            self.train_set, self.val_set, self.test_set, self.class_names = build_data(
                cfg, train_set, val_set, test_set, model
            )
        self.model = model.to(self.device)
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

    def wrapped_model(self) -> torch.nn.Module:
        model = self.model
        if self.env.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        return torch.compile(model) if self.cfg.compile else model

    def run(self) -> dict:
        cfg, env = self.cfg, self.env
        if env.is_main:
            cfg.to_json(self.run_dir / "config.json")
        self.writer, self.bar = open_writer(cfg, env, self.step), None
        if self.writer is not None:
            log_hparams(self.writer, run_hparams(cfg, self.precision), cfg.run_name)
        if self.writer is not None and self.step == 0:
            from vitlab.data import image_normalization

            mean, std = image_normalization(cfg)
            log_samples(self.writer, self.train_set, cfg.seed, mean=mean, std=std)
        if env.is_main:
            self.say_where()
        start_time = time.perf_counter()
        self.loop()
        result = self.finish()
        result["wall_time"] = time.perf_counter() - start_time
        return result

    def say_where(self) -> None:
        """Before the first step: what runs, where, and where its results go."""
        cfg, model = self.cfg, self.model
        count = f" ({model.get_num_params():,} parameters)" if hasattr(model, "get_num_params") else ""
        data = "synthetic data" if on_synthetic_data(cfg) else cfg.dataset
        first = f"resuming at step {self.step} of {cfg.num_steps}" if self.step else f"{cfg.num_steps} steps"
        print(
            f"run {cfg.run_name}: {cfg.model_type}{count} on {data}, {first} of {cfg.train_batch_size} images, "
            f"{self.device.type}, {self.precision}"
        )
        if self.writer is not None:
            print(f"  TensorBoard: {self.tb_dir}  (tensorboard --logdir {cfg.log_dir})")
        print(f"  checkpoints: {self.run_dir}/best.pt, last.pt; validation every {cfg.eval_every} steps")
        sys.stdout.flush()

    def say(self, line: str) -> None:
        """Print a line on the main process without breaking the progress bar."""
        if self.env.is_main:
            (tqdm.write if self.bar is not None else print)(line)
            sys.stdout.flush()

    def loop(self) -> None:
        cfg, env = self.cfg, self.env
        model = self.wrapped_model().train()
        build_batches = build_device_batches if cfg.device_augment else build_train_loader
        batches = iter(build_batches(cfg, self.train_set, self.micro, env, self.step))
        # A bar on a terminal or in a notebook; piped to a file, plain lines instead (a bar there is a line per update).
        self.bar = None
        if env.is_main and cfg.progress and interactive_output():
            self.bar = tqdm(total=cfg.num_steps, initial=self.step, desc="train", dynamic_ncols=True)
        window_loss, window_start, window_steps = torch.zeros((), device=self.device), time.perf_counter(), 0
        first_step, last_line = self.step + 1, time.perf_counter()
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
            if self.step % cfg.log_every == 0 or evaluating:  # evaluation waits for the GPU anyway
                images_per_sec = self.log_train(window_loss / window_steps, lr, grad_norm, window_steps, window_start)
                train_loss = self.history[-1]["loss"]
                if self.bar is not None:
                    self.bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_sec:.0f}")
                elif cfg.progress and time.perf_counter() - last_line > PLAIN_PROGRESS_SECONDS:
                    self.say(f"step {self.step}/{cfg.num_steps}: train loss {train_loss:.4f}, lr {lr:.2e}, "
                             f"{images_per_sec:.0f} images/s")  # fmt: skip
                    last_line = time.perf_counter()
                window_loss, window_start, window_steps = torch.zeros((), device=self.device), time.perf_counter(), 0
            if evaluating:
                eval_start = time.perf_counter()
                self.validate()
                last_line = time.perf_counter()
                window_start += last_line - eval_start  # images/s counts training time only
            if self.bar is not None:
                self.bar.update(1)
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def log_train(self, loss, lr, grad_norm, steps, since) -> float:
        """The only place the loop waits for the GPU: turn the window's loss and norm into numbers."""
        if self.env.world_size > 1:
            dist.all_reduce(loss)
            loss = loss / self.env.world_size
        loss, grad_norm = loss.item(), grad_norm.item()
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
            metrics = evaluate(self.model, self.val_set, cfg.eval_batch_size, self.device, self.precision)
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
            self.save("last.pt")
            if improved:
                self.save("best.pt")

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
        return save_checkpoint(self.run_dir / filename, state)

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
                self.model.load_state_dict(load_checkpoint(best_path, map_location=self.device)["model"])
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
    lines.append(f"{result['steps']} steps in {result['wall_time']:.1f} s")
    return lines


def main(argv: list[str] | None = None) -> dict:
    """Command line entry point: parse, train, print where the run landed and its accuracies."""
    cfg, print_format = parse_command_line(argv)
    if print_format is not None:
        print(export_config(cfg, print_format), end="")
        return {"config": cfg}
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print("\n".join(summary_lines(cfg, result)))
    return result


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, FileExistsError, ConnectionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)  # bad input: the message says what is wrong and what to do
        sys.exit(1)
