"""Train a ViT, fine-tuning or from scratch: `train(cfg)` and `python -m vitlab.train`.

Steps, not epochs: each optimiser step sees `train_batch_size` images, split over the processes
of a torchrun job and over `gradient_accumulation_steps` forward/backward passes. The data order
and every sample's augmentation follow from (seed, position in the stream), so a resumed run and
a multi-process run see exactly the images a single uninterrupted run would.

    python -m vitlab.train --config finetune
    python -m vitlab.train --config scratch
    python -m vitlab.train --config smoke --dataset synthetic
    torchrun --nproc_per_node 4 -m vitlab.train --config finetune --gradient_accumulation_steps 2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from vitlab.configs import (
    AUGMENTATIONS,
    DATASET_NAMES,
    DECAY_TYPES,
    EXPERIMENTS,
    OPTIMIZERS,
    PRECISIONS,
    VITConfig,
    get_experiment,
    resolve_model_name,
)
from vitlab.data import build_datasets, image_normalization, num_classes
from vitlab.evaluate import autocast_context, evaluate


# --- configuration checks -------------------------------------------------------------------------
def check_config(cfg: VITConfig, world_size: int = 1) -> int:
    """Validate the fields a run depends on; returns the per-process micro-batch size."""
    choices = {
        "decay_type": DECAY_TYPES,
        "optimizer": OPTIMIZERS,
        "precision": PRECISIONS,
        "augment": AUGMENTATIONS,
        "dataset": DATASET_NAMES,
    }
    for field_name, valid in choices.items():
        if getattr(cfg, field_name) not in valid:
            raise ValueError(f"unknown {field_name} {getattr(cfg, field_name)!r}; valid names: {', '.join(valid)}")
    resolve_model_name(cfg.model_type)
    for field_name in ("train_batch_size", "eval_batch_size", "eval_every", "num_steps", "log_every"):
        if getattr(cfg, field_name) < 1:
            raise ValueError(f"{field_name} must be at least 1, got {getattr(cfg, field_name)}")
    if cfg.gradient_accumulation_steps < 1 or cfg.warmup_steps < 0:
        raise ValueError("gradient_accumulation_steps must be >= 1 and warmup_steps >= 0")
    if cfg.warmup_steps >= cfg.num_steps:
        warnings.warn(
            f"warmup_steps {cfg.warmup_steps} >= num_steps {cfg.num_steps}: the learning rate only rises and "
            "never decays; set --warmup_steps below --num_steps (Google's recipe: 500 of 10,000)",
            stacklevel=2,
        )
    if cfg.device_augment and cfg.augment not in ("finetune", "none"):
        raise ValueError(
            f"device_augment does the 'finetune' augmentation (crop area 0.05-1, flip) or 'none' (resize), "
            f"not {cfg.augment!r}: set augment='finetune' or device_augment=False"
        )
    split = cfg.gradient_accumulation_steps * world_size
    if cfg.train_batch_size % split:
        raise ValueError(
            f"train_batch_size {cfg.train_batch_size} is not divisible by gradient_accumulation_steps "
            f"{cfg.gradient_accumulation_steps} x {world_size} process(es) = {split}; choose a batch size "
            "that is a multiple of it (it is the global batch of one optimiser step)"
        )
    return cfg.train_batch_size // split


# --- devices, processes, precision ----------------------------------------------------------------
@dataclass
class Distributed:
    """Where this process runs and its place in a torchrun job (world_size 1 without one)."""

    rank: int
    world_size: int
    device: torch.device
    started_here: bool  # this call created the process group, so it also destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = -1) -> torch.device:
    """ "auto" -> the GPU of this process (cuda:local_rank) when there is one, else the CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} requested but CUDA is not available; use device='cpu'")
        if device.index is None:
            device = torch.device("cuda", max(local_rank, 0))
    return device


def setup_distributed(cfg: VITConfig) -> Distributed:
    """Join the torchrun job described by the environment (nccl on GPUs, gloo on CPUs), if any."""
    env_rank = os.environ.get("LOCAL_RANK")
    local_rank = cfg.local_rank if cfg.local_rank != -1 else int(env_rank) if env_rank is not None else -1
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.device, local_rank)
    started_here = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        started_here = True
    if dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), device, started_here)
    return Distributed(0, 1, device, False)


@contextlib.contextmanager
def main_process_first(env: Distributed):
    """Rank 0 runs the block first (downloads, extraction); the other processes wait, then read its files."""
    if env.world_size > 1 and not env.is_main:
        dist.barrier()
    yield
    if env.world_size > 1 and env.is_main:
        dist.barrier()


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> bf16 on GPUs that have it, fp16 on older GPUs, fp32 on the CPU."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    # bf16 needs Ampere (compute capability 8) or newer; older GPUs such as Colab's T4 only emulate it.
    return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (model initialisation and dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


# --- data order -----------------------------------------------------------------------------------
class StepSampler(Sampler):
    """An endless stream of (position, index) keys: epoch e is randperm(N) seeded by (seed, e).

    Global batch s covers stream positions [s * G, (s + 1) * G); accumulation pass a of process r
    takes its slice [(a * world + r) * micro, ...). The stream starts at `start_step`, so resuming
    and sharding give the same images as one uninterrupted process.
    """

    def __init__(self, num_samples: int, micro_batch: int, accumulation: int, rank: int, world_size: int, seed: int,
                 start_step: int = 0):  # fmt: skip
        if num_samples == 0:
            raise ValueError("the training set is empty")
        self.num_samples, self.micro, self.accumulation = num_samples, micro_batch, accumulation
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step
        self.global_batch = micro_batch * accumulation * world_size

    def permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def positions(self, first: int, count: int):
        """(position, dataset index) for stream positions first .. first + count - 1."""
        epoch, perm = -1, None
        for position in range(first, first + count):
            if position // self.num_samples != epoch:
                epoch = position // self.num_samples
                perm = self.permutation(epoch)
            yield position, perm[position % self.num_samples]

    def __iter__(self):
        step = self.start_step
        while True:
            batch = list(self.positions(step * self.global_batch, self.global_batch))
            for accumulation_pass in range(self.accumulation):
                start = (accumulation_pass * self.world_size + self.rank) * self.micro
                yield from batch[start : start + self.micro]
            step += 1


class SeededSamples(Dataset):
    """Reads key (position, index) with the torch RNG seeded by (seed, position): reproducible augmentation."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        position, index = key
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG (dropout) untouched
            torch.manual_seed((self.seed * 1_000_000_007 + position) % 2**63)
            image, label = self.dataset[index]
        return image, int(label)


def build_train_loader(cfg: VITConfig, dataset: Dataset, micro: int, env: Distributed, start_step: int):
    """Endless DataLoader of micro-batches for this process, starting at optimiser step `start_step`."""
    sampler = StepSampler(
        len(dataset), micro, cfg.gradient_accumulation_steps, env.rank, env.world_size, cfg.seed, start_step
    )
    return DataLoader(
        SeededSamples(dataset, cfg.seed),
        batch_size=micro,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=env.device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),  # worker seeds must not draw from the global RNG
    )


def build_device_batches(cfg: VITConfig, dataset: Dataset, micro: int, env: Distributed, start_step: int):
    """`cfg.device_augment`: the same stream of samples, augmented on the device from a uint8 copy of CIFAR."""
    from vitlab.augment import DeviceAugment, DeviceBatches, DeviceEvalTransform, uint8_cifar

    images, labels = uint8_cifar(dataset)
    sampler = StepSampler(
        len(labels), micro, cfg.gradient_accumulation_steps, env.rank, env.world_size, cfg.seed, start_step
    )
    mean, std = image_normalization(cfg)  # the model's input normalisation, as for the PIL transforms
    transform = DeviceAugment if cfg.augment == "finetune" else DeviceEvalTransform
    augment = transform(cfg.img_size, mean=mean, std=std)
    return DeviceBatches(images, labels, sampler, micro, augment, cfg.seed, env.device)


def prepare_batch(batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on the device (a no-op for `build_device_batches`, whose batches are there already)."""
    images, labels = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def class_names_of(cfg: VITConfig, train_set: Dataset, model=None) -> list[str]:
    """The class names of a caller's training set: its `classes`, else numbers for the classes that
    the model's head, `cfg.model_overrides["num_classes"]` or, last, the labels themselves show."""
    names = getattr(train_set, "classes", None)
    if not names and model is not None and isinstance(getattr(model, "head", None), torch.nn.Linear):
        names = [str(i) for i in range(model.head.out_features)]
    if not names and "num_classes" in cfg.model_overrides:
        names = [str(i) for i in range(cfg.model_overrides["num_classes"])]
    if not names:  # last resort: look at every label once
        labels = getattr(train_set, "targets", None)
        if labels is None:
            labels = [int(train_set[i][1]) for i in range(len(train_set))]
        names = [str(i) for i in range(int(max(labels)) + 1)]
    return list(names)


def build_data(cfg: VITConfig, train_set, val_set, test_set, model) -> tuple:
    """(train, val, test, class names): cfg.dataset's, built once for the inputs `cfg` describes, or the caller's."""
    if train_set is None:
        return build_datasets(cfg)
    return train_set, val_set, test_set, class_names_of(cfg, train_set, model)


# --- model, optimiser, schedule -------------------------------------------------------------------
def build_model(cfg: VITConfig, num_classes: int) -> torch.nn.Module:
    """`create_model(cfg.model_type, ...)` with `cfg.model_overrides`, then `cfg.pretrained_dir` when set."""
    from vitlab.factory import create_model
    from vitlab.weights.download import known_checkpoint

    overrides = {k: v for k, v in cfg.model_overrides.items() if k not in ("num_classes", "img_size")}
    model = create_model(cfg.model_type, num_classes=num_classes, img_size=cfg.img_size, **overrides)
    if cfg.pretrained_dir:
        path = Path(cfg.pretrained_dir)
        if not path.is_file() and known_checkpoint(path.name) is None:
            raise FileNotFoundError(
                f"pretrained checkpoint {path} does not exist: download Google's file (e.g. "
                f"https://storage.googleapis.com/vit_models/imagenet21k/{resolve_model_name(cfg.model_type)}.npz, "
                "`python -m vitlab.download --list` shows them all) to that path, "
                "fix --pretrained_dir, or pass --pretrained_dir '' to train from scratch"
            )
        from vitlab.weights.load import load_pretrained

        load_pretrained(model, path)  # fetches a missing file first when it has a known name
    return model


def follow_model_normalization(cfg: VITConfig, model: torch.nn.Module) -> VITConfig:
    """`cfg` with the model's `image_mean/std` in `model_overrides` when they differ from what `cfg` gives.

    A given model, or torchvision weights that `load_pretrained` marks as ImageNet-normalised, decides
    how inputs are normalised; the data, device augmentation and saved config then all agree with it.
    """
    model_cfg = getattr(model, "cfg", None)
    if not hasattr(model_cfg, "image_mean"):
        return cfg
    wanted = (tuple(model_cfg.image_mean), tuple(model_cfg.image_std))
    if image_normalization(cfg) == wanted:
        return cfg
    print(f"inputs normalised as the model expects: mean {wanted[0]}, std {wanted[1]}")
    return cfg.replace(model_overrides={**cfg.model_overrides, "image_mean": wanted[0], "image_std": wanted[1]})


def build_optimizer(cfg: VITConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """SGD with momentum (fine-tuning) or AdamW without decay on biases, norms and embeddings (scratch)."""
    fused = {"fused": True} if device.type == "cuda" else {}
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused
        )
    no_decay_names = ("pos_embed", "cls_token")  # embeddings are not weights to shrink (as in timm)
    decay = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and p.ndim >= 2 and not any(name in n for name in no_decay_names)
    ]
    decay_ids = {id(p) for p in decay}
    no_decay = [p for p in params if id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.momentum, 0.999), **fused)


def warmup_decay(warmup_steps: int, num_steps: int, decay_type: str = "cosine"):
    """Learning-rate factor of optimiser step s: s / warmup, then cosine or linear decay to 0 at num_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, num_steps - warmup_steps))  # stays at 0 after the end
        if decay_type == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


def build_scheduler(cfg: VITConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then cosine or linear decay, stepped once per optimiser step.

    The factor is a plain function, which `LambdaLR.state_dict` does not store: a resumed run
    follows the schedule of its current config (e.g. a longer `num_steps`), at the saved step.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(cfg.warmup_steps, cfg.num_steps, cfg.decay_type))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DistributedDataParallel and torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


# --- one optimiser step ---------------------------------------------------------------------------
def train_step(model, batches, optimizer, scaler, cfg: VITConfig, precision: str, device) -> tuple:
    """Accumulate gradients over the micro-batches of one step, clip, update; returns (loss, grad_norm) tensors."""
    accumulation = cfg.gradient_accumulation_steps
    loss_sum = torch.zeros((), device=device)
    for accumulation_pass in range(accumulation):
        images, labels = prepare_batch(next(batches), device)
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


# --- checkpoints ----------------------------------------------------------------------------------
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
            raise FileNotFoundError(
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


# --- TensorBoard ----------------------------------------------------------------------------------
def open_writer(cfg: VITConfig, env: Distributed, start_step: int):
    """The run's SummaryWriter on the main process (None elsewhere or with TB_log off)."""
    if not (env.is_main and cfg.TB_log):
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(Path(cfg.log_dir) / cfg.run_name), purge_step=start_step or None)
    text = json.dumps(cfg.to_dict(), indent=2)
    writer.add_text("config", "    " + text.replace("\n", "\n    "), start_step)  # indented = code block
    return writer


def log_samples(
    writer, dataset: Dataset, seed: int, count: int = 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
) -> None:
    """A few training inputs as the model sees them (augmented), un-normalised to [0, 1] with `mean`, `std`."""
    samples = SeededSamples(dataset, seed)
    images = torch.stack([samples[(i, i % len(dataset))][0] for i in range(min(count, len(dataset)))])
    shape = (1, -1, 1, 1)  # per channel
    pixels = images * torch.tensor(std).reshape(shape) + torch.tensor(mean).reshape(shape)  # (B, C, H, W)
    writer.add_images("train/samples", pixels.clamp(0, 1), 0)


def log_hparams(writer, cfg: VITConfig, metrics: dict) -> None:
    """The run's hyperparameters and final metrics for TensorBoard's HParams tab."""
    from torch.utils.tensorboard.summary import hparams

    values = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in cfg.to_dict().items()}
    metrics = {f"hparam/{k}": float(v) for k, v in metrics.items()}
    for summary in hparams(values, metrics):
        writer.file_writer.add_summary(summary)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, cfg.num_steps)


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
        self.env, self.device = env, env.device
        self.micro = check_config(cfg, env.world_size)
        self.resume_state = None
        if cfg.resume:
            from vitlab.weights.checkpoint import load_checkpoint

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
        self.writer = open_writer(cfg, env, self.step)
        if self.writer is not None and self.step == 0:
            mean, std = image_normalization(cfg)
            log_samples(self.writer, self.train_set, cfg.seed, mean=mean, std=std)
        start_time = time.perf_counter()
        self.loop()
        result = self.finish()
        result["wall_time"] = time.perf_counter() - start_time
        return result

    def loop(self) -> None:
        cfg, env = self.cfg, self.env
        model = self.wrapped_model().train()
        build_batches = build_device_batches if cfg.device_augment else build_train_loader
        batches = iter(build_batches(cfg, self.train_set, self.micro, env, self.step))
        bar = tqdm(total=cfg.num_steps, initial=self.step, disable=not (env.is_main and cfg.progress), desc="train")
        window_loss, window_start, window_steps = torch.zeros((), device=self.device), time.perf_counter(), 0
        while self.step < cfg.num_steps:
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
            loss, grad_norm = train_step(model, batches, self.optimizer, self.scaler, cfg, self.precision, self.device)
            self.scheduler.step()
            self.step += 1
            window_loss += loss
            window_steps += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.num_steps:
                images_per_sec = self.log_train(window_loss / window_steps, lr, grad_norm, window_steps, window_start)
                bar.set_postfix(loss=f"{self.history[-1]['loss']:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_sec:.0f}")
                window_loss, window_start, window_steps = torch.zeros((), device=self.device), time.perf_counter(), 0
            if self.step % cfg.eval_every == 0 or self.step == cfg.num_steps:
                eval_start = time.perf_counter()
                self.validate()
                window_start += time.perf_counter() - eval_start  # images/s counts training time only
            bar.update(1)
        bar.close()

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
        if self.writer is not None:
            if metrics is not None:
                self.writer.add_scalar("val/loss", metrics["loss"], self.step)
                self.writer.add_scalar("val/accuracy", metrics["top1"], self.step)
            if getattr(self.model, "pos_embed", None) is not None:
                self.writer.add_histogram("model/pos_embed", self.model.pos_embed.detach().float().cpu(), self.step)
            self.writer.flush()
        # Without a validation split the latest weights count as the best ones.
        improved = metrics is None or metrics["top1"] > self.best_accuracy
        if improved:
            self.best_accuracy = metrics["top1"] if metrics is not None else self.best_accuracy
            self.best_step = self.step
        if self.env.is_main:
            self.save("last.pt")
            if improved:
                self.save("best.pt")

    def save(self, filename: str) -> Path:
        from vitlab.weights.checkpoint import save_checkpoint

        state = checkpoint_state(
            self.cfg, self.model, self.optimizer, self.scheduler, self.scaler, self.step,
            (self.best_accuracy, self.best_step), self.class_names,
        )  # fmt: skip
        return save_checkpoint(self.run_dir / filename, state)

    def finish(self) -> dict:
        """Test the best checkpoint (main process), log the hyperparameters, close the writer."""
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
        }
        if env.is_main:
            if best_path.is_file():
                from vitlab.weights.checkpoint import load_checkpoint

                self.model.load_state_dict(load_checkpoint(best_path, map_location=self.device)["model"])
            if self.test_set is not None:
                test = evaluate(self.model, self.test_set, cfg.eval_batch_size, self.device, self.precision)
                result.update(test_accuracy=test["top1"], test_top5=test["top5"], test_loss=test["loss"])
                if self.writer is not None:
                    self.writer.add_scalar("test/accuracy", test["top1"], self.step)
                    self.writer.add_scalar("test/top5", test["top5"], self.step)
            if self.writer is not None:
                final = {k: result[k] for k in ("best_val_accuracy", "test_accuracy") if result.get(k) is not None}
                log_hparams(self.writer, cfg, final)
                self.writer.close()
        if env.world_size > 1:
            dist.barrier()  # the other processes wait while the main one tests and saves
        result["model"] = self.model.eval()
        return result


# --- command line ---------------------------------------------------------------------------------
SEED_FLAGS = {  # the flags of the original ViT-pytorch train.py -> VITConfig fields
    "name": "name",
    "dataset": "dataset",
    "model_type": "model_type",
    "pretrained_dir": "pretrained_dir",
    "output_dir": "save_dir",
    "img_size": "img_size",
    "train_batch_size": "train_batch_size",
    "eval_batch_size": "eval_batch_size",
    "eval_every": "eval_every",
    "learning_rate": "learning_rate",
    "weight_decay": "weight_decay",
    "num_steps": "num_steps",
    "decay_type": "decay_type",
    "warmup_steps": "warmup_steps",
    "max_grad_norm": "max_grad_norm",
    "local_rank": "local_rank",
    "seed": "seed",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
}


def parse_value(field: dataclasses.Field, text: str):
    """A command-line string as the type of VITConfig field `field`."""
    kind = str(field.type)
    if "dict" in kind:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--{field.name} expects JSON such as '{{\"num_layers\": 2}}', got {text!r}") from error
        if not isinstance(value, dict):
            raise ValueError(f"--{field.name} expects a JSON object, got {text!r}")
        return value
    if "None" in kind and text.lower() in ("", "none", "null"):
        return None
    if kind == "bool":
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"--{field.name} expects true or false, got {text!r}")
        return text.lower() in ("1", "true", "yes")
    for name, convert in (("int", int), ("float", float)):
        if kind.startswith(name):
            return convert(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    """The flags of the original train.py, `--config`, `--set`, and one flag per other VITConfig field."""
    parser = argparse.ArgumentParser(
        prog="python -m vitlab.train",
        description="Train a Vision Transformer on CIFAR-10/100 (fine-tuning or from scratch).",
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override the config
    )
    parser.add_argument("--config", help=f"an experiment ({', '.join(EXPERIMENTS)}) or a saved config.json")
    fields = {f.name: f for f in dataclasses.fields(VITConfig)}
    for flag, field_name in SEED_FLAGS.items():
        aliases = {"local_rank": ["--local-rank"], "output_dir": ["--save_dir"]}.get(flag, [])
        names = [f"--{flag}", *aliases]
        parser.add_argument(*names, dest=field_name, metavar=flag.upper(), help=f"VITConfig.{field_name}")
    for name, field in fields.items():
        if name not in SEED_FLAGS.values() and name != "resume":
            parser.add_argument(f"--{name}", dest=name, metavar="VALUE", help=f"VITConfig.{name} ({field.type})")
    parser.add_argument("--resume", nargs="?", const="last", help="continue from last.pt of --name, or from PATH")
    parser.add_argument("--fp16", action="store_true", help="mixed precision: same as --precision fp16")
    parser.add_argument("--fp16_opt_level", help="accepted for compatibility and ignored: native AMP replaces apex")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any VITConfig field")
    return parser


def config_from_args(argv: list[str] | None = None) -> VITConfig:
    """The VITConfig that a command line describes: --config first, then the flags, then --set."""
    args = vars(build_parser().parse_args(argv))
    source = args.pop("config", None)
    if source is None:
        cfg = VITConfig()
    elif source in EXPERIMENTS:
        cfg = get_experiment(source)
    elif Path(source).is_file():
        cfg = VITConfig.from_json(source)
    else:
        raise SystemExit(f"--config {source!r} is neither an experiment ({', '.join(EXPERIMENTS)}) nor a file")
    if args.pop("fp16", False):
        args["precision"] = "fp16"
    if args.pop("fp16_opt_level", None) is not None:
        print("note: --fp16_opt_level is ignored (apex levels); vitlab uses torch.autocast (see --precision)")
    for item in args.pop("set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE, got {item!r}")
        args[key.strip()] = value
    fields = {f.name: f for f in dataclasses.fields(VITConfig)}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise SystemExit(f"unknown VITConfig field(s) {unknown}; valid fields: {', '.join(sorted(fields))}")
    try:
        overrides = {k: parse_value(fields[k], v) if isinstance(v, str) else v for k, v in args.items()}
    except ValueError as error:
        raise SystemExit(str(error)) from error
    return cfg.replace(**overrides)


def main(argv: list[str] | None = None) -> dict:
    """Command line entry point: parse, train, print where the run landed and its accuracies."""
    cfg = config_from_args(argv)
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return result
    print(f"TensorBoard run: {result['run_dir']}  (tensorboard --logdir {cfg.log_dir})")
    print(f"checkpoints: {result['checkpoint_dir']}/best.pt, last.pt")
    if result["best_val_accuracy"] is not None:
        print(f"best validation accuracy: {100 * result['best_val_accuracy']:.2f}% (step {result['best_step']})")
    if "test_accuracy" in result:
        print(f"test accuracy: top-1 {100 * result['test_accuracy']:.2f}%  top-5 {100 * result['test_top5']:.2f}%")
    print(f"{result['steps']} steps in {result['wall_time']:.1f} s")
    return result


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, FileExistsError, ConnectionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)  # bad input: the message says what is wrong and what to do
        sys.exit(1)
