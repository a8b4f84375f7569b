"""What a run is made of, built once each: the checked config, the model, the data, the optimiser, the schedule."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vitlab.augment import DEVICE_VERSIONS
from vitlab.configs import AUGMENTATIONS, VITConfig, resolve_model_name
from vitlab.errors import BadValue, MissingFile
from vitlab.factory import create_model
from vitlab.weights.fetch import how_to_get, known_checkpoint
from vitlab.weights.load import load_pretrained

# What the run's header says when `folders_augment_in_workers` turned device augmentation off.
DEVICE_AUGMENT_OFF = "image folders are augmented in DataLoader workers (device_augment needs CIFAR's uint8 arrays)"


def folders_augment_in_workers(cfg: VITConfig) -> VITConfig:
    """`cfg`, with `device_augment` off for image folders (of any size: DataLoader workers augment them)."""
    if cfg.device_augment and cfg.dataset == "folder":
        return cfg.replace(device_augment=False)
    return cfg


def warn_caller(message: str) -> None:
    """A UserWarning that points at the first line outside vitlab (the user's call), not at vitlab's own code."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(0), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def checked_micro_batch_size(cfg: VITConfig, world_size: int = 1) -> int:
    """Check what a run needs beyond the fields' own checks (VITConfig's); returns the per-process micro-batch size."""
    resolve_model_name(cfg.model_type)
    if cfg.warmup_steps >= cfg.num_steps:
        warn_caller(
            f"warmup_steps {cfg.warmup_steps} >= num_steps {cfg.num_steps}: the learning rate only rises and "
            f"never decays; set warmup_steps below num_steps, e.g. {max(0, round(0.05 * cfg.num_steps))} "
            "(5% of the run, the fraction of Google's recipe: 500 of 10,000)"
        )
    if cfg.device_augment and AUGMENTATIONS[cfg.augment] not in DEVICE_VERSIONS:
        on_device = ", ".join(f"{name!r} ({', '.join(steps) or 'resize'})" for name, steps in AUGMENTATIONS.items()
                              if steps in DEVICE_VERSIONS)  # fmt: skip
        raise BadValue(
            f"device_augment does {on_device}, not {cfg.augment!r}: choose one of those or set device_augment=False"
        )
    split = cfg.gradient_accumulation_steps * world_size
    if cfg.train_batch_size % split:
        raise BadValue(
            f"train_batch_size {cfg.train_batch_size} is not divisible by gradient_accumulation_steps "
            f"{cfg.gradient_accumulation_steps} x {world_size} process(es) = {split}; choose a batch size "
            "that is a multiple of it (it is the global batch of one optimiser step)"
        )
    return cfg.train_batch_size // split


# --- model and data -------------------------------------------------------------------------------
def build_model(cfg: VITConfig, num_classes: int) -> tuple[torch.nn.Module, str | None]:
    """`create_model(cfg.model_type, ...)` with `cfg.model_overrides`, then `cfg.weights_file` when set:
    (model, what loading the weights did, or None)."""

    wanted = cfg.model_overrides.get("num_classes", num_classes)
    if wanted != num_classes:
        raise BadValue(
            f"model_overrides.num_classes is {wanted}, but the data have {num_classes} classes: remove it from "
            "model_overrides (the head is sized by the data)"
        )
    overrides = {k: v for k, v in cfg.model_overrides.items() if k not in ("num_classes", "img_size")}
    model = create_model(cfg.model_type, num_classes=num_classes, img_size=cfg.img_size, **overrides)
    if cfg.weights_file:  # not with init="random": the same architecture from random weights, the control
        path = Path(cfg.weights_file)
        if not path.is_file() and known_checkpoint(path.name) is None:
            raise MissingFile(
                f"pretrained checkpoint {path} does not exist: {how_to_get(path)}; "
                "or pass --pretrained_dir '' to train from scratch"
            )
        # Fetches a missing file first when it has a known name. The model then computes the GELU of the
        # weights' source (tanh for Google's .npz) unless model_overrides chose one.
        report = load_pretrained(model, path, match_gelu="gelu_approximate" not in cfg.model_overrides, verbose=False)
        return model, report.summary()
    return model, None


def follow_model_normalization(cfg: VITConfig, model: torch.nn.Module) -> VITConfig:
    """`cfg` with the model's `image_mean/std` in `model_overrides` when they differ from what `cfg` gives.

    A given model, or torchvision weights that `load_pretrained` marks as ImageNet-normalised, decides
    how inputs are normalised; the data, device augmentation and saved config then all agree with it.
    """
    model_cfg = getattr(model, "cfg", None)
    if not hasattr(model_cfg, "image_mean"):
        return cfg
    wanted = (tuple(model_cfg.image_mean), tuple(model_cfg.image_std))
    from vitlab.data import image_normalization  # imported here: vitlab.data loads torchvision

    if image_normalization(cfg) == wanted:
        return cfg
    return cfg.replace(model_overrides={**cfg.model_overrides, "image_mean": wanted[0], "image_std": wanted[1]})


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
        if len(labels) == 0:
            raise BadValue("the training set is empty (0 samples): give a training set with at least one sample")
        names = [str(i) for i in range(int(max(labels)) + 1)]
    return list(names)


def build_data(cfg: VITConfig, train_set, val_set, test_set, model) -> tuple:
    """(train, val, test, class names): cfg.dataset's, built once for the inputs `cfg` describes, or the caller's."""
    if train_set is None:
        from vitlab.data import build_datasets

        return build_datasets(cfg)
    if cfg.train_fraction < 1:
        raise BadValue(
            f"train_fraction {cfg.train_fraction:g} is for the datasets vitlab builds (dataset={cfg.dataset!r}): "
            "a train_set given to train() is used whole; pass the subset to train on, or leave train_fraction at 1"
        )
    return train_set, val_set, test_set, class_names_of(cfg, train_set, model)


# --- optimiser and schedule -----------------------------------------------------------------------
def freeze_backbone(model: torch.nn.Module) -> None:
    """A linear probe: only the head's parameters train."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("head."))


def build_optimizer(cfg: VITConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """SGD with momentum (fine-tuning; "nesterov": Nesterov's form, the CNN's) or AdamW without decay on biases,
    norms and embeddings (scratch).

    With `head_learning_rate` the head's parameters are groups of their own at that rate; the schedule
    scales every group alike.
    """
    fused = {"fused": True} if device.type == "cuda" else {}
    no_decay_names = ("pos_embed", "cls_token", "register_tokens")  # embeddings are not weights to shrink (timm)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    parts = [(trained, cfg.learning_rate)]  # one rate for all, unless the head has its own
    if cfg.head_learning_rate is not None:
        parts = [([(n, p) for n, p in trained if not n.startswith("head.")], cfg.learning_rate),
                 ([(n, p) for n, p in trained if n.startswith("head.")], cfg.head_learning_rate)]  # fmt: skip
    groups = []
    for named, rate in parts:
        if cfg.optimizer in ("sgd", "nesterov"):
            groups.append({"params": [p for _, p in named], "lr": rate, "weight_decay": cfg.weight_decay})
            continue
        decays = [p.ndim >= 2 and not any(name in n for name in no_decay_names) for n, p in named]
        decay, no_decay = [p for (_, p), d in zip(named, decays) if d], [p for (_, p), d in zip(named, decays) if not d]
        groups += [{"params": decay, "lr": rate, "weight_decay": cfg.weight_decay},
                   {"params": no_decay, "lr": rate, "weight_decay": 0.0}]  # fmt: skip
    groups = [group for group in groups if group["params"]]
    if cfg.optimizer in ("sgd", "nesterov"):
        nesterov = cfg.optimizer == "nesterov"
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=nesterov, **fused)
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
