"""Train a ViT, fine-tuning or from scratch: `train(cfg)` and `python -m vitlab.train`.

Steps, not epochs: each optimiser step sees `train_batch_size` images, split over the processes
of a torchrun job and over `gradient_accumulation_steps` forward/backward passes. The data order
and every sample's augmentation follow from (seed, position in the stream), so a resumed run and
a multi-process run see exactly the images a single uninterrupted run would.

    python -m vitlab.train --config finetune
    python -m vitlab.train --config scratch
    python -m vitlab.train --config smoke --dataset synthetic
    torchrun --nproc_per_node 4 -m vitlab.train --config finetune --gradient_accumulation_steps 2

This file is the run itself: `train` sets it up (`training/setup.py`: config, resume, model, data,
optimiser), claims the run folder, and `train_and_test` runs the loop top to bottom (steps, logging,
validation and checkpoints, stop requests) and tests the best weights. The parts live in `vitlab/training/`:
`devices` (processes, seeds; the precision: vitlab.precision), `build` (config check, model, data, optimiser, schedule),
`batches` (the seeded stream of micro-batches), `state` (checkpoints), `logs` (TensorBoard) and `flags`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from vitlab import commands
from vitlab.configs import VITConfig, export_config
from vitlab.errors import AlreadyExists
from vitlab.evaluate import evaluate
from vitlab.files import DiskFullError, disk_full_error
from vitlab.precision import autocast_context
from vitlab.synthetic import SYNTHETIC_MARKER
from vitlab.training.batches import build_device_batches, build_train_loader, prepare_batch
from vitlab.training.devices import (
    Distributed,
    data_workers,
    setup_distributed,
)
from vitlab.training.features import backbone_features, probe_on_fixed_features
from vitlab.training.flags import parse_command_line
from vitlab.training.logs import log_hparams, log_samples, open_writer, run_hparams
from vitlab.training.run_folder import claim, sweep_temporaries
from vitlab.training.setup import Best, Run, setup_run, write_config
from vitlab.training.state import (
    checkpoint_state,
    set_aside,
)
from vitlab.training.stops import (
    NonFiniteLossError,
    StopRequests,
    TrainingInterrupted,
    non_finite_message,
    resume_command,
)
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


PLAIN_PROGRESS_SECONDS = 60  # without a progress bar (--progress false, output to a file), a line this often


def progress_line(step: int, cfg: VITConfig, window_loss: torch.Tensor, lr: float, steps: int, since: float) -> str:
    """A line between logs: `step 37/150: train loss 1.2345, lr 3.00e-05, 21 images/s` (the steps since the last)."""
    images_per_sec = steps * cfg.train_batch_size / max(time.perf_counter() - since, 1e-9)
    loss = window_loss.item()  # this process's share in a torchrun job: no other process waits for it
    return f"step {step}/{cfg.num_steps}: train loss {loss:.4f}, lr {lr:.2e}, {images_per_sec:.0f} images/s"


def interactive_output() -> bool:
    """Whether a progress bar can redraw itself: a terminal, or a notebook (tqdm.auto's widget)."""
    if any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__):
        return True
    return sys.stderr.isatty()


def on_synthetic_data(cfg: VITConfig) -> bool:
    """Whether the run trains on synthetic images (dataset "synthetic", or synthetic files in data_dir)."""
    return cfg.dataset == "synthetic" or (Path(cfg.data_dir) / "cifar-10-batches-py" / SYNTHETIC_MARKER).is_file()


# --- the run --------------------------------------------------------------------------------------
def train(
    cfg: VITConfig,
    train_set=None,
    val_set=None,
    test_set=None,
    model=None,
    *,
    notes: list[str] | None = None,
) -> dict:
    """Train `model` (default: built from cfg) on cfg.dataset or the given datasets; returns the results.

    Given datasets are any map-style datasets of (image tensor, int label); without `val_set` the
    last weights count as the best. The result holds best_val_accuracy, test_accuracy, test_top5,
    steps, wall_time, tb_dir (the TensorBoard folder), checkpoint_dir, history (the logged steps) and `model`
    with the best weights, those the test accuracy belongs to.

    With `cfg.resume` the run continues with its saved config; fields of `cfg` that differ from it
    may change only when safe (`vitlab.configs.CHANGEABLE_ON_RESUME`), others are an error; the fields
    compared are those set explicitly (`cfg.fields_set`), not those left at their defaults. `notes` are
    lines printed under the run's first lines, with its own (the command line's: a warm-up scaled to the
    run). Ctrl-C or SIGTERM saves last.pt at the end of the step and raises `TrainingInterrupted` (a
    KeyboardInterrupt); a NaN or infinite loss raises `NonFiniteLossError` (a ValueError) and keeps the
    last checkpoint.
    """
    with process_state_kept():
        return _train(cfg, train_set, val_set, test_set, model, notes)


@contextlib.contextmanager
def process_state_kept():
    """Whatever training changes in the process (the thread excepthook TensorBoard's writer needs, the signal
    handlers of Ctrl-C and SIGTERM, torch's thread count and determinism, warning filters) is put back when
    `train` returns or raises: a notebook that trained once behaves as before."""
    hook, threads, deterministic = (
        threading.excepthook,
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
    )
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with warnings.catch_warnings():  # restores the filters on the way out
        try:
            yield
        finally:
            threading.excepthook = hook
            if threading.current_thread() is threading.main_thread():
                for number, handler in handlers.items():
                    signal.signal(number, handler)
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)


def _train(cfg: VITConfig, train_set, val_set, test_set, model, notes) -> dict:
    processes = setup_distributed(cfg)
    try:
        run = setup_run(cfg, processes, train_set, val_set, test_set, model, notes)
        if not processes.is_main:
            return train_and_test(run)
        with claim(run.run_dir):  # the main process holds the run folder while it trains
            if run.resume_state is None and (run.run_dir / "last.pt").exists():  # it came while we set up
                raise AlreadyExists(f"run folder {run.run_dir} got another run's checkpoints: choose another --name")
            sweep_temporaries(run.run_dir, run.tb_dir)
            if run.damaged_best is not None:
                set_aside(run.damaged_best)
            write_config(run)
            return train_and_test(run)
    finally:
        if processes.started_here:
            dist.destroy_process_group()


# --- the loop -------------------------------------------------------------------------------------
def train_and_test(run: Run) -> dict:
    """Train from run.start_step to cfg.num_steps, validating and saving on the way; then test the best weights."""
    cfg, processes, device = run.cfg, run.processes, run.device
    # Before the first step: TensorBoard, the lines saying what runs, and (linear probe) the features.
    writer, bar = open_writer(cfg, processes, run.start_step), None
    log_start(run, writer)
    start_time = time.perf_counter()
    trained, train_inputs, val_inputs = trained_module_and_inputs(run)
    step, best, history, saved_step = run.start_step, run.start_best, [], run.start_step
    try:
        with run.stops.installed():
            model = wrap_model(trained, processes, cfg.compile).train()
            batches = iter(batch_stream(run, train_inputs, trained is not run.model))
            if processes.is_main and cfg.progress and interactive_output():
                bar = tqdm(total=cfg.num_steps, initial=step, desc="train", dynamic_ncols=True)
            window_loss, window_start, window_steps = torch.zeros((), device=device), time.perf_counter(), 0
            last_line = time.perf_counter()
            while step < cfg.num_steps:
                # One optimiser step; the loss stays on the device until a logging step.
                # The rate this step uses (the backbone's, if the head has one).
                lr = run.optimizer.param_groups[0]["lr"]
                lr_head = run.optimizer.param_groups[-1]["lr"] if cfg.head_learning_rate is not None else None
                loss, grad_norm = train_step(
                    model, batches, run.optimizer, run.scaler, cfg, run.precision, device, run.mix
                )
                run.scheduler.step()
                step, window_loss, window_steps = step + 1, window_loss + loss, window_steps + 1
                if bar is not None and step == run.start_step + 1:  # one sync, so the bar shows a loss at once
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
                evaluating = step % cfg.eval_every == 0 or step == cfg.num_steps
                logging = step % cfg.log_every == 0 or evaluating  # evaluation waits for the GPU anyway
                if bar is None and not evaluating and time.perf_counter() - last_line > PLAIN_PROGRESS_SECONDS:
                    say(progress_line(step, cfg, window_loss / window_steps, lr, window_steps, window_start), processes)
                    last_line = time.perf_counter()
                # Logging: the only place the loop waits for the GPU.
                if logging:
                    train_loss, norm = synced_numbers(window_loss / window_steps, grad_norm, processes)
                    if not math.isfinite(train_loss):
                        raise non_finite(run, train_loss, step, step - window_steps + 1, saved_step)
                    images_per_sec = window_steps * cfg.train_batch_size / max(time.perf_counter() - window_start, 1e-9)
                    history.append({"step": step, "loss": train_loss, "lr": lr, "grad_norm": norm})
                    log_scalars(writer, "train", step, loss=train_loss, lr=lr, lr_head=lr_head, grad_norm=norm,
                                images_per_sec=images_per_sec)  # fmt: skip
                    if bar is not None:
                        bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_sec:.0f}")
                    window_loss, window_start, window_steps = torch.zeros((), device=device), time.perf_counter(), 0
                # Evaluation on the validation split (every process, the whole split); the main process saves.
                if evaluating:
                    check_finite(run, step, saved_step)  # nothing non-finite may reach a checkpoint
                    eval_start = time.perf_counter()
                    metrics = None
                    if run.val_set is not None:
                        metrics = evaluate(trained, val_inputs, cfg.eval_batch_size, device, run.precision)
                        if history:
                            history[-1].update(val_accuracy=metrics["top1"], val_loss=metrics["loss"])
                    improved = metrics is None or metrics["top1"] > best.accuracy  # no split: the latest is the best
                    best = Best(best.accuracy if metrics is None else metrics["top1"], step) if improved else best
                    log_validation(writer, run.model, metrics, best, step)
                    say(evaluation_line(step, cfg.num_steps, metrics, best, history), processes, bar)
                    if processes.is_main:  # best.pt first: last.pt records which step best.pt holds
                        for filename in ("best.pt", "last.pt") if improved else ("last.pt",):
                            save(run, filename, step, best, saved_step)
                    saved_step, last_line = step, time.perf_counter()
                    window_start += last_line - eval_start  # images/s counts training time only
                if bar is not None:
                    bar.update(1)
                # Ctrl-C or SIGTERM: save last.pt at this step boundary and stop with the command that resumes.
                if stop_requested(run.stops, processes, logging, device):
                    bar = close_bar(bar)
                    interrupt(run, step, best, saved_step)
            bar = close_bar(bar)
    except BaseException:
        close_bar(bar)
        if writer is not None:
            writer.close()  # what was logged so far stays readable
        raise
    # The test: the best weights, on the main process.
    result = finish(run, writer, step, best, history)
    result.update(wall_time=time.perf_counter() - start_time, start_step=run.start_step)
    if processes.is_main:  # the same closing lines from Python as from the command line
        print("\n".join(summary_lines(cfg, result)))
        sys.stdout.flush()
    return result


# --- what the loop calls --------------------------------------------------------------------------
def log_start(run: Run, writer) -> None:
    """The run's hyperparameters and (first start only) sample images in TensorBoard; its first lines printed."""
    cfg = run.cfg
    if writer is not None:
        log_hparams(writer, run_hparams(cfg, run.precision, image_counts(run)), cfg.run_name)
    if writer is not None and run.start_step == 0:
        from vitlab.data import image_normalization

        mean, std = image_normalization(cfg)
        log_samples(writer, run.train_set, cfg.seed, mean=mean, std=std)
    if run.processes.is_main:
        say_where(run, writer)


def trained_module_and_inputs(run: Run) -> tuple:
    """(module, training inputs, validation inputs): the model on images or, in a linear probe on features
    computed once (`probe_on_fixed_features`), its head on those features."""
    cfg = run.cfg
    if not probe_on_fixed_features(cfg):
        return run.model, run.train_set, run.val_set
    processes = run.processes
    say("linear probe: the frozen backbone's features, computed once", processes)

    def features(images, what: str):
        return backbone_features(run.model, images, cfg, run.device, run.precision, lambda x: say(x, processes), what)

    train_inputs = features(run.train_set, "training images")
    val_inputs = features(run.val_set, "validation images") if run.val_set is not None else None
    return run.model.head, train_inputs, val_inputs


def wrap_model(model: torch.nn.Module, processes: Distributed, compile_it: bool) -> torch.nn.Module:
    """DistributedDataParallel in a torchrun job, torch.compile when asked."""
    if processes.world_size > 1:
        device_ids = [processes.device.index] if processes.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return torch.compile(model) if compile_it else model


def batch_stream(run: Run, train_inputs, on_features: bool):
    """The seeded micro-batches from run.start_step on; labels are checked as they are read."""
    cfg, classes = run.cfg, len(run.class_names)
    if on_features:  # features in memory: no augmentation, no workers
        return build_train_loader(
            cfg.replace(num_workers=0), train_inputs, run.micro_batch, run.processes, run.start_step, classes
        )
    build_batches = build_device_batches if cfg.device_augment else build_train_loader
    return build_batches(cfg, run.train_set, run.micro_batch, run.processes, run.start_step, classes)


def say(line: str, processes: Distributed, bar=None) -> None:
    """Print a line on the main process without breaking the progress bar."""
    if processes.is_main:
        (tqdm.write if bar is not None else print)(line)
        sys.stdout.flush()


def close_bar(bar) -> None:
    if bar is not None:
        bar.close()


def synced_numbers(loss: torch.Tensor, grad_norm: torch.Tensor, processes: Distributed) -> tuple[float, float]:
    """The window's loss averaged over the processes and the step's gradient norm, as numbers."""
    if processes.world_size > 1:
        dist.all_reduce(loss)
        loss = loss / processes.world_size
    return loss.item(), grad_norm.item()


def log_scalars(writer, group: str, step: int, **scalars: float | None) -> None:
    """Each scalar as `group/name` at `step`; those that are None are not logged."""
    if writer is not None:
        for tag, value in scalars.items():
            if value is not None:
                writer.add_scalar(f"{group}/{tag}", value, step)


def log_validation(writer, model, metrics: dict | None, best: Best, step: int) -> None:
    if writer is None:
        return
    if metrics is not None:
        log_scalars(writer, "val", step, loss=metrics["loss"], accuracy=metrics["top1"], best_accuracy=best.accuracy)
    if getattr(model, "pos_embed", None) is not None:
        # "weights/" sorts after "train/" and "val/": TensorBoard's Time Series opens the first two groups.
        writer.add_histogram("weights/pos_embed", model.pos_embed.detach().float().cpu(), step)
    writer.flush()


def evaluation_line(step: int, num_steps: int, metrics: dict | None, best: Best, history: list) -> str:
    """One evaluation as a line: "step 100/500: val loss 1.2345, val accuracy 56.78% (best ... at step 100)"."""
    line = f"step {step}/{num_steps}: "
    if metrics is None:
        line += "no validation split, the latest weights count as the best"
    else:
        line += (f"val loss {metrics['loss']:.4f}, val accuracy {100 * metrics['top1']:.2f}% "
                 f"(best {100 * best.accuracy:.2f}% at step {best.step})")  # fmt: skip
    if history:
        line += f", train loss {history[-1]['loss']:.4f}"
    return line


def save(run: Run, filename: str, step: int, best: Best, saved_step: int) -> Path:
    """Write best.pt or last.pt; a full disk stops the run, naming the checkpoints of `saved_step` that are kept."""
    state = checkpoint_state(run.cfg, run.model, run.optimizer, run.scheduler, run.scaler, step, best, run.class_names)
    if run.held_out is not None:
        state["held_out"] = run.held_out
    try:
        return save_checkpoint(run.run_dir / filename, state)
    except DiskFullError:
        fix = "no checkpoint had been written yet: free some space there and run the command again"
        if saved_step:
            fix = (f"the checkpoints of step {saved_step} are kept: free some space there and continue with: "
                   f"{resume_command(run.cfg)}")  # fmt: skip
        raise disk_full_error(run.run_dir / filename, "the checkpoint", fix) from None


def non_finite(run: Run, value: float | None, step: int, first_step: int, saved_step: int) -> NonFiniteLossError:
    """The error for a loss `value` that is not a number (None: the weights are not); the checkpoints are kept."""
    kept = (
        f"the checkpoints of step {saved_step} in {run.run_dir} were kept"
        if saved_step
        else "no checkpoint had been written yet"
    )
    return NonFiniteLossError(non_finite_message(value, step, first_step, run.cfg, kept))


def check_finite(run: Run, step: int, saved_step: int) -> None:
    """Before a checkpoint is written: every weight is a finite number."""
    finite = torch.stack([p.isfinite().all() for p in run.model.parameters()])
    if not bool(finite.all()):  # one sync, at an evaluation or a stop, which sync anyway
        raise non_finite(run, None, step, saved_step + 1, saved_step)


def stop_requested(stops: StopRequests, processes: Distributed, logging: bool, device) -> bool:
    """Ctrl-C / SIGTERM seen: at once alone; in a torchrun job all processes agree at a logging step."""
    if processes.world_size == 1:
        return stops.signal_name is not None
    if not logging:
        return False
    flag = torch.tensor(float(stops.signal_name is not None), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and stops.signal_name is None:
        stops.signal_name = "SIGTERM"  # another process was told to stop
    return bool(flag.item())


def interrupt(run: Run, step: int, best: Best, saved_step: int):
    """Save last.pt at this step boundary and stop with the command that resumes."""
    kept = "nothing saved"
    if step > saved_step:
        # No log has looked at the loss since then: every process checks its (identical) weights, so all stop.
        check_finite(run, step, saved_step)
        if run.processes.is_main:
            save(run, "last.pt", step, best, saved_step)
    if run.processes.is_main:
        kept = f"saved {run.run_dir / 'last.pt'} (step {step})"
    if run.processes.world_size > 1:
        dist.barrier()
    raise TrainingInterrupted(
        f"{run.stops.signal_name} at step {step} of {run.cfg.num_steps}: {kept}; continue with: "
        f"{resume_command(run.cfg)}"
    )


def say_where(run: Run, writer) -> None:
    """Before the first step: what runs, where, and where its results go; then what was adjusted (notes)."""
    cfg, model = run.cfg, run.model
    count = f" ({model.get_num_params():,} parameters)" if hasattr(model, "get_num_params") else ""
    data = "synthetic data" if on_synthetic_data(cfg) else cfg.dataset
    data = f"the image folders in {cfg.data_dir}" if cfg.dataset == "folder" else data
    steps = f"{cfg.num_steps} step{'s' * (cfg.num_steps != 1)} of {cfg.train_batch_size} images"
    if run.start_step:
        steps += f", resuming after step {run.start_step}"
    start = ""  # where the weights start from, when this run built the model
    if not run.model_given and run.resume_state is None:
        start = f" from {Path(cfg.weights_file).name}" if cfg.weights_file else " from random weights"
    print(f"run {cfg.run_name}: {model_name(cfg)}{count}{start} on {data}, {steps}, {run.device.type}, {run.precision}")
    if writer is not None:
        print(f"  TensorBoard: {run.tb_dir}  (tensorboard --logdir {cfg.log_dir})")
    plan = evaluation_plan(cfg, run.start_step, run.val_set is not None)
    print(f"  checkpoints: {run.run_dir}/best.pt, last.pt; {plan}")
    if run.weights:
        print("  weights: " + run.weights.replace("\n", "\n  "))  # its own lines start with two spaces
    if cfg.init == "random" and cfg.pretrained_dir and not run.model_given:
        print(f"  init: random, the recipe's architecture without its weights ({Path(cfg.pretrained_dir).name} unused)")

    notes = list(run.notes)
    workers = data_workers(cfg.num_workers)
    if not cfg.device_augment and workers < cfg.num_workers:
        notes.append(
            f"{workers} data-loading worker{'s' * (workers != 1)} instead of num_workers {cfg.num_workers}: "
            "no more than this machine's cores"
        )
    for note in notes:
        print(f"  note: {note}")
    counts = image_counts(run)
    share = f" ({cfg.train_fraction:g} of the training part, class-balanced)" if cfg.train_fraction < 1 else ""
    held = f", {counts['val_images']:,} held out for validation" if "val_images" in counts else ""
    print(f"  images: {counts['train_images']:,} to train on{share}{held}")
    sys.stdout.flush()


SHAPE_FIELDS = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")  # a preset changed by these is
# another model than its name says: ViT-CIFAR-3M at width 128 and depth 4 has 0.55 M parameters, not 2.7 M


def model_name(cfg: VITConfig) -> str:
    """The preset's name, and the shape fields that model_overrides changed in it."""
    changed = [f"{k} {v}" for k, v in cfg.model_overrides.items() if k in SHAPE_FIELDS]
    return f"{cfg.model_type} with {', '.join(changed)}" if changed else cfg.model_type


def image_counts(run: Run) -> dict:
    """{"train_images": ..., "val_images": ...}: how many images the run trains on and validates on."""
    counts = {"train_images": len(run.train_set)}
    if run.val_set is not None:
        counts["val_images"] = len(run.val_set)
    return counts


def evaluation_plan(cfg: VITConfig, step: int, validates: bool) -> str:
    """When the run validates and saves: "validation every 100 steps", or only at its last step."""
    what = "validation" if validates else "saved"
    next_multiple = (step // cfg.eval_every + 1) * cfg.eval_every
    if next_multiple >= cfg.num_steps:
        return f"{what} at the end (step {cfg.num_steps})"
    plan = f"{what} every {cfg.eval_every} steps"
    return plan + (f" and at step {cfg.num_steps}" if cfg.num_steps % cfg.eval_every else "")


def finish(run: Run, writer, step: int, best: Best, history: list) -> dict:
    """Test the best checkpoint (main process), close the writer."""
    cfg, processes, model = run.cfg, run.processes, run.model
    best_path = run.run_dir / "best.pt"
    result = {
        "best_val_accuracy": best.accuracy if run.val_set is not None else None,
        "best_step": best.step,
        "steps": step,
        "tb_dir": str(run.tb_dir),
        "checkpoint_dir": str(run.run_dir),
        "best_checkpoint": str(best_path),
        "history": history,
        "class_names": run.class_names,
        "precision": run.precision,
        "world_size": processes.world_size,
        "synthetic_data": on_synthetic_data(cfg),
        **image_counts(run),
    }
    if processes.is_main:
        if best_path.is_file():
            saved = load_checkpoint(best_path, map_location=run.device)
            model.load_state_dict(saved["model"])
            # best.pt is the record of truth: the accuracy and step reported are those of the weights tested.
            result["best_step"] = saved.get("step")
            if run.val_set is not None:
                result["best_val_accuracy"] = saved.get("best_accuracy")
        if run.test_set is not None:
            test = evaluate(model, run.test_set, cfg.eval_batch_size, run.device, run.precision)
            result.update(test_accuracy=test["top1"], test_top5=test["top5"], test_loss=test["loss"])
            log_scalars(writer, "test", step, top1=test["top1"], top5=test["top5"])  # two points at the last step
        if writer is not None:
            writer.close()
    if processes.world_size > 1:
        dist.barrier()  # the other processes wait while the main one tests and saves
    result["model"] = model.eval()
    return result


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
        lines.append(f"TensorBoard run: {result['tb_dir']}  (tensorboard --logdir {cfg.log_dir})")
    lines.append(f"checkpoints: {result['checkpoint_dir']}/best.pt, last.pt")
    start = result.get("start_step", 0)
    steps = f"steps {start + 1}-{result['steps']}" if start else f"{result['steps']} steps"
    lines.append(f"{steps} in {result['wall_time']:.1f} s")
    return lines


# --- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    """Command line entry point: parse the flags and train."""
    cfg, print_format, notes = parse_command_line(argv)
    if print_format is not None:
        for note in notes:  # on stderr: stdout is the config file
            print(f"note: {note}", file=sys.stderr)
        print(export_config(cfg, print_format), end="")
        return {"config": cfg}
    return train(cfg, notes=notes)  # it ends with the run's accuracies and where they are saved


commands.callable_module(__name__, "train")  # vitlab.train(...) calls train(...)

if __name__ == "__main__":
    sys.exit(commands.run(main))
