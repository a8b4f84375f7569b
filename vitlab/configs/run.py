"""What a run does: `VITConfig`, every setting of a training run, checked when it is made."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from vitlab.configs.checks import ConfigError, check_choice, check_range, check_types, type_error, unknown_names
from vitlab.configs.models import ModelConfig
from vitlab.errors import IsAFolder, MissingFile

DATASET_NAMES = ("cifar10", "cifar100", "synthetic", "folder")
DECAY_TYPES = ("cosine", "linear")
OPTIMIZERS = ("sgd", "nesterov", "adamw")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
INITS = ("pretrained", "random")  # where a run's weights start: pretrained_dir's, or random ones (the control)
# The augmentation recipes: each name and the steps of its training transform, in order. vitlab.data builds
# the steps with torchvision on PIL images (PIL_STEPS); vitlab.augment does the recipes it has a version of on
# the device (DEVICE_VERSIONS, keyed by these steps). Evaluation only resizes, whatever the recipe.
AUGMENTATIONS = {
    "finetune": ("inception_crop", "flip"),  # Google's fine-tuning: crop area 5-100%, flip
    "strong": ("pad_crop", "flip", "trivial_augment"),  # CIFAR from scratch: padded crop, flip, TrivialAugmentWide
    "basic": ("pad_crop", "flip"),  # the standard CIFAR augmentation: crop shifted by up to 1/8, flip
    "none": (),  # resize only
    "randaugment": ("imagenet_crop", "flip", "randaugment"),  # ImageNet from scratch (DeiT, AugReg): RandAugment(2, 9)
}


def _timestamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d_%H%M%S")


def _records_fields_set(cls):
    """Class decorator: each instance remembers the fields its constructor was given (`fields_set`)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        check_fields(kwargs)  # a mistyped keyword: the closest field, not only Python's "unexpected keyword"
        init(self, *args, **kwargs)
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        self.__dict__["_fields_set"] = frozenset(names[: len(args)]) | frozenset(kwargs)

    cls.__init__ = __init__
    return cls


@_records_fields_set
@dataclass
class VITConfig:
    """One training run: data, model, optimiser, schedule, precision, logging and checkpoints."""

    log_dir: str = "./TB_log/"  # TensorBoard root; each run writes to log_dir/<run name>/
    dataset: str = "cifar10"  # "cifar10", "cifar100", "synthetic" (offline coloured shapes) or "folder" (data_dir)
    model_type: str = "ViT-B_16"  # a preset or alias of vitlab.list_models()
    pretrained_dir: str | None = None  # Google .npz checkpoint to start from; None trains from scratch
    init: str = "pretrained"  # "pretrained": start from pretrained_dir; "random": the same model from random weights
    save_dir: str = "./Model/"  # checkpoints go to save_dir/<run name>/{best,last}.pt
    name: str | None = None  # the run's folder in save_dir and log_dir; None: experiment, model, data, time
    record_algo: str = "vit"  # the experiment ("finetune", "scratch", ...): first part of the automatic run name
    test_cycles: str = field(default_factory=_timestamp)  # timestamp that makes the automatic run name unique
    decay_type: str = "cosine"  # learning-rate decay after warmup: "cosine" or "linear"
    device: str = "auto"  # "auto" (cuda when available), "cuda", "cuda:1", "cpu"
    TB_log: bool = True  # write TensorBoard events
    img_size: int = 224  # training and evaluation resolution; position embeddings are resized to it
    train_batch_size: int = 512  # images per optimiser step over all processes and accumulation steps
    eval_batch_size: int = 64  # images per forward pass when evaluating
    eval_every: int = 100  # evaluate on the validation split every so many optimiser steps
    learning_rate: float = 3e-2  # peak learning rate, reached at the end of warmup
    head_learning_rate: float | None = None  # the head's peak rate; None: learning_rate (transfer: 100x)
    freeze_backbone: bool = False  # train the head only: a linear probe (features computed once when not augmented)
    weight_decay: float = 0.0  # 0 for the fine-tuning protocol; AdamW runs decay weights but not biases/norms
    num_steps: int = 10000  # optimiser steps in total (steps, not epochs, as in the paper's fine-tuning)
    warmup_steps: int = 500  # linear warmup from 0 to learning_rate
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    local_rank: int = -1  # GPU index under torchrun (also read from LOCAL_RANK); -1 = not distributed
    ddp_timeout: float = 600.0  # seconds a torchrun process waits for the others before the job fails (torch: 1800)
    seed: int = 42  # seeds model init, data order and augmentation
    gradient_accumulation_steps: int = 1  # split each optimiser step into this many forward/backward passes
    optimizer: str = "sgd"  # "sgd" (fine-tuning protocol), "nesterov" (SGD, Nesterov momentum) or "adamw" (scratch)
    momentum: float = 0.9  # SGD momentum; AdamW uses it as beta1
    precision: str = "auto"  # "auto": bf16 where the device has it natively, else fp16 (GPU) or fp32; or one of these
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0.1 helps small ViTs trained from scratch)
    augment: str = "finetune"  # "finetune" (inception crop + flip), "strong" (crop + flip + TrivialAugment), ...
    val_split: float = 0.02  # fraction of the training set held out for model selection (Google's 2%)
    train_fraction: float = 1.0  # train on this seeded, class-balanced share; the held-out images stay the same
    num_workers: int = 2  # DataLoader worker processes; 0 loads in the main process
    data_dir: str = "./data"  # where CIFAR is found or downloaded to; for "folder": class folders, or train/ + val/
    crop_pct: float = 1.0  # "folder" evaluation: shorter side to img_size / crop_pct, centre crop (ImageNet: 0.875)
    mixup_alpha: float = 0.0  # Mixup on training batches, Beta(alpha, alpha) mixing weights; 0 = off (DeiT: 0.8)
    cutmix_alpha: float = 0.0  # CutMix on training batches; with Mixup too, each batch gets one of the two (DeiT: 1.0)
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields changed from the preset
    compile: bool = False  # wrap the model in torch.compile (faster on GPU after a slow first step)
    device_augment: bool = False  # CIFAR as uint8 on the device, augmented there in batches (no PIL workers)
    resume: str | None = None  # checkpoint to continue from, or "last" for save_dir/<run name>/last.pt
    log_every: int = 50  # log training scalars every so many steps (the only steps that sync with the GPU)
    progress: bool = True  # show a tqdm progress bar; without one, a line at least every minute

    def __post_init__(self):
        check_types(self)
        for name in ("img_size", "train_batch_size", "eval_batch_size", "eval_every", "num_steps",
                     "gradient_accumulation_steps", "log_every"):  # fmt: skip
            check_range(self, name, low=1)
        for name in ("warmup_steps", "num_workers", "learning_rate", "weight_decay", "max_grad_norm", "mixup_alpha",
                     "cutmix_alpha"):  # fmt: skip
            check_range(self, name, low=0)
        if self.head_learning_rate is not None:
            check_range(self, "head_learning_rate", low=0)
        for name in ("label_smoothing", "momentum", "val_split"):
            check_range(self, name, low=0, high=1)
        check_range(self, "local_rank", low=-1)
        check_range(self, "ddp_timeout", low=1)
        for name in ("crop_pct", "train_fraction"):  # shares of an image or of the training images
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"VITConfig.{name} must be in (0, 1], got {getattr(self, name)!r}")
        for name, valid in (("decay_type", DECAY_TYPES), ("optimizer", OPTIMIZERS), ("precision", PRECISIONS),
                            ("augment", AUGMENTATIONS), ("dataset", DATASET_NAMES), ("init", INITS)):  # fmt: skip
            check_choice(self, name, valid)
        check_model_overrides(self.model_overrides, self.img_size)
        check_run_name(self.run_name)

    @property
    def run_name(self) -> str:
        """The folder name of this run under log_dir and save_dir: `name`, or what the run is and when it started.

        E.g. "scratch_ViT-CIFAR-3M_cifar10_20261121_080312"; notebooks find runs by their saved config.json
        (`find_runs`), never by this name.
        """
        if self.name:
            return self.name
        parts = (self.record_algo.strip("_"), self.model_type, self.dataset, self.test_cycles)
        return "_".join(part for part in parts if part).replace("/", "-")

    @property
    def weights_file(self) -> str | None:  # the checkpoint the model starts from: None with init="random"
        return self.pretrained_dir if self.init == "pretrained" and self.pretrained_dir else None

    @property
    def fields_set(self) -> frozenset[str]:
        """The fields the user set, not a recipe's nor derived ones (`derive`): what a resumed run compares."""
        return self.__dict__["_fields_set"]

    def derive(self, **values) -> VITConfig:
        """A copy with values vitlab worked out (a recipe's, a scaled warm-up), not counted as set by the user."""
        new = self.replace(**values)
        new.__dict__["_fields_set"] = self.fields_set
        return new

    def replace(self, **overrides) -> VITConfig:
        """A copy with some fields changed (added to `fields_set`); unknown field names are an error that lists
        the valid ones."""
        check_fields(overrides)
        new = dataclasses.replace(self, **overrides)
        new.__dict__["_fields_set"] = self.fields_set | frozenset(overrides)
        return new

    def to_dict(self) -> dict:
        """The fields as a plain dict (JSON-friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> VITConfig:
        """Build from a dict of fields; unknown names are an error that lists the valid ones."""
        if not isinstance(values, dict):
            raise ConfigError(f"a VITConfig is a dict of fields, got {type(values).__name__}")
        check_fields(values)
        return cls(**values)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The config as JSON text; with `path`, also written there atomically."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            from vitlab.files import atomic_write

            with atomic_write(path, "w") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> VITConfig:
        """Load a config saved by `to_json` (a file path or the JSON text itself)."""
        text, source = str(path_or_text), "config JSON"
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if path.is_dir():
                raise IsAFolder(f"config file {path} is a directory: give a config.json file")
            if not path.is_file():
                raise MissingFile(f"config file {path} does not exist")
            text, source = path.read_bytes(), f"config file {path}"
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{source} is not valid JSON ({error})") from None
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


def check_run_name(name: str) -> None:
    """A run name is one folder under save_dir and log_dir: no path separators, not "." or ".."."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise ConfigError(
            f"run name {name!r} is not a plain folder name: use letters, digits, '-', '_' or '.', without '/' "
            "(the run is saved under save_dir/<name>/ and log_dir/<name>/)"
        )


def check_model_overrides(overrides: dict, img_size: int | None = None) -> None:
    """`overrides` names ModelConfig fields with values of their types; img_size is VITConfig's to set."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(unknown_names("ModelConfig field", unknown, fields, " in model_overrides"))
    for name, value in overrides.items():
        expected = type_error(str(fields[name].type), value)
        if expected:
            raise ConfigError(f"model_overrides.{name} must be {expected}, got {value!r} ({type(value).__name__})")
    if img_size is not None and overrides.get("img_size", img_size) != img_size:
        raise ConfigError(
            f"model_overrides.img_size {overrides['img_size']} differs from img_size {img_size}: "
            "set the resolution with img_size (--img_size) only"
        )


def check_fields(values: dict) -> None:
    """Every name in `values` is a VITConfig field; an unknown one is an error naming the closest (`unknown_names`)."""
    valid = {f.name for f in dataclasses.fields(VITConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(unknown_names("VITConfig field", unknown, valid))
