"""Configs: what a model is (`ModelConfig`, the named presets) and what a run does (`VITConfig`, the experiments).

The ImageNet presets are the paper's Table 1 (Ti and S from DeiT / AugReg); the CIFAR presets are
small patch-4 models meant to be trained from scratch on 32 x 32 images. `VITConfig` holds every
setting of a training run; the experiments (`get_experiment`) are named starting points, YAML and JSON
files hold others (`load_config`, `export_config`), and `resume_config` says what a resumed run may change.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

CLASSIFIERS = ("token", "gap")
GELU_APPROXIMATIONS = ("none", "tanh")  # torch.nn.GELU(approximate=...): exact erf, or Google's tanh form
# ImageNet's per-channel pixel statistics (RGB, pixels in [0, 1]): the input normalisation of
# torchvision's and MAE's weights; Google's checkpoints use (0.5, 0.5, 0.5) instead, i.e. [-1, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """Everything that fixes a ViT's shape; a preset is one of these with a name."""

    img_size: int = 224  # input height = width in pixels; must be a multiple of patch_size
    patch_size: int = 16  # P: each P x P patch becomes one token (16 -> "ViT-B_16")
    in_chans: int = 3  # input channels (RGB)
    hidden_size: int = 768  # D: token width throughout the encoder
    num_layers: int = 12  # L: number of encoder blocks
    num_heads: int = 12  # attention heads; hidden_size must divide evenly among them
    mlp_dim: int = 3072  # MLP hidden width, 4 * D in the paper's models
    num_classes: int = 1000  # output classes; 0 removes the head and the model returns features
    classifier: str = "token"  # "token": classify the CLS token; "gap": mean of the patch tokens
    class_token: bool = True  # prepend a learned CLS token (Google's "gap" models have none)
    fc_norm: bool = False  # MAE style: final LayerNorm on the pooled vector instead of on every token
    representation_size: int | None = None  # width of the pre-logits layer (Linear + tanh); None = none
    dropout_rate: float = 0.0  # dropout after position embeddings, attention output and MLP layers
    attention_dropout_rate: float = 0.0  # dropout on the attention probabilities
    drop_path_rate: float = 0.0  # stochastic depth at the last block (linearly less before it)
    gelu_approximate: str = "none"  # MLP GELU: "none" = exact erf (timm, torchvision, MAE), "tanh" = Google's JAX ViT
    resnet_layers: tuple[int, ...] | None = None  # hybrid: ResNet units per stage feeding 1x1 patches; None = pixels
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # inputs the weights expect: (pixel/255 - mean) / std
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)  # (0.5, 0.5, 0.5) for both = Google's [-1, 1]
    layer_scale_init: float | None = None  # LayerScale (DINOv2): per-channel gammas on each residual branch, from this
    num_register_tokens: int = 0  # DINOv2's "_reg" models: 4 learned tokens after CLS, without positions

    def __post_init__(self):
        check_types(self)
        if self.resnet_layers is not None:
            self.resnet_layers = tuple(self.resnet_layers)  # JSON gives a list
        for name in ("img_size", "patch_size", "in_chans", "hidden_size", "num_layers", "num_heads", "mlp_dim"):
            _check_range(self, name, low=1)
        _check_range(self, "num_classes", low=0)
        _check_range(self, "num_register_tokens", low=0)
        if self.representation_size is not None:
            _check_range(self, "representation_size", low=1)
        for name in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
            _check_range(self, name, low=0, high=1)
        # JSON round trips give lists; tuples of floats compare equal to the presets' values.
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be a sequence of per-channel numbers, got {value!r}") from None
            setattr(self, name, value)
        if not self.image_std or min(self.image_std) <= 0:
            raise ValueError(f"image_std must hold positive numbers, got {self.image_std}")
        if self.gelu_approximate not in GELU_APPROXIMATIONS:
            raise ValueError(
                f"unknown gelu_approximate {self.gelu_approximate!r}: choose one of {', '.join(GELU_APPROXIMATIONS)}"
            )

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def replace(self, **overrides) -> ModelConfig:
        """A copy with some fields changed; unknown field names are an error that lists the valid ones."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"unknown ModelConfig field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")
        return dataclasses.replace(self, **overrides)


def check_types(config) -> None:
    """Every field of dataclass `config` holds a value of its annotated type (ints may stand for floats).

    A config read from JSON or a command line can carry "abc" for a number or 1 for a flag; this
    catches it when the config is made, naming the field, instead of deep inside a run.
    """
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        expected = _type_error(str(item.type), value)
        if expected:
            raise ConfigError(
                f"{type(config).__name__}.{item.name} must be {expected}, got {value!r} ({type(value).__name__})"
            )
        if str(item.type).startswith("float") and isinstance(value, int):
            setattr(config, item.name, float(value))


def _type_error(annotation: str, value) -> str | None:
    """What `value` should have been to match `annotation` (e.g. "int | None"), or None when it matches."""
    if value is None and "None" in annotation:
        return None
    base = annotation.split("|")[0].split("[")[0].strip()
    checks = {
        "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
        "bool": ("true or false", lambda v: isinstance(v, bool)),
        "str": ("a string", lambda v: isinstance(v, str)),
        "dict": ("a dict (JSON object)", lambda v: isinstance(v, dict)),
        "tuple": ("a sequence of values", lambda v: isinstance(v, (list, tuple))),
    }
    if base not in checks:
        return None
    description, matches = checks[base]
    if matches(value):
        return None
    return description + (" or None" if "None" in annotation else "")


class ConfigError(TypeError, ValueError):
    """A config field with a value of the wrong type or out of range (both a TypeError and a ValueError)."""


def _check_range(config, name: str, low: float | None = None, high: float | None = None) -> None:
    """low <= value (< high when given), and finite: NaN compares false with everything."""
    value = getattr(config, name)
    bad = not math.isfinite(value) or (low is not None and value < low) or (high is not None and value >= high)
    if bad:
        bounds = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ConfigError(f"{type(config).__name__}.{name} must be {bounds}, got {value!r}")


def _check_choice(config, name: str, valid: tuple[str, ...]) -> None:
    if getattr(config, name) not in valid:
        raise ConfigError(f"unknown {name} {getattr(config, name)!r}; valid names: {', '.join(valid)}")


def _imagenet(patch: int, width: int, depth: int, heads: int, mlp: int, **extra) -> ModelConfig:
    # Google's models compute the tanh GELU; loading timm / torchvision / MAE weights switches to the exact one.
    extra = {"gelu_approximate": "tanh", **extra}
    return ModelConfig(
        img_size=224, patch_size=patch, hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=mlp, **extra
    )


def _dinov2(width: int, depth: int, heads: int, registers: int) -> ModelConfig:
    return ModelConfig(
        img_size=518, patch_size=14, hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=4 * width,
        num_classes=0, layer_scale_init=1e-5, num_register_tokens=registers, image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )  # fmt: skip


def _cifar(width: int, depth: int, heads: int, mlp: int) -> ModelConfig:
    return ModelConfig(
        img_size=32, patch_size=4, hidden_size=width, num_layers=depth, num_heads=heads, mlp_dim=mlp, num_classes=10
    )


PRESETS: dict[str, ModelConfig] = {
    # The paper's models (Table 1); Ti and S as in DeiT and Google's AugReg release.
    "ViT-Ti_16": _imagenet(16, 192, 12, 3, 768),
    "ViT-S_16": _imagenet(16, 384, 12, 6, 1536),
    "ViT-S_32": _imagenet(32, 384, 12, 6, 1536),
    "ViT-B_16": _imagenet(16, 768, 12, 12, 3072),
    "ViT-B_32": _imagenet(32, 768, 12, 12, 3072),
    "ViT-L_16": _imagenet(16, 1024, 24, 16, 4096),
    "ViT-L_32": _imagenet(32, 1024, 24, 16, 4096),
    "ViT-H_14": _imagenet(14, 1280, 32, 16, 5120),
    # MAE-pre-trained ViT-B/16 fine-tuned on ImageNet-1k: global average pooling of the patch
    # tokens (the CLS token is kept but unused) and the final LayerNorm on the pooled vector.
    # MAE trained and fine-tuned on ImageNet-normalised inputs, not Google's [-1, 1], with the exact GELU.
    "ViT-B_16-MAE": _imagenet(
        16,
        768,
        12,
        12,
        3072,
        classifier="gap",
        fc_norm=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        gelu_approximate="none",
    ),
    # The hybrid: a ResNet-50 stem (its first three stages, the third with 9 units) makes a 14 x 14
    # feature map of 224px images; each position is a token (patch_size = the ResNet's stride 16).
    "R50-ViT-B_16": _imagenet(16, 768, 12, 12, 3072, resnet_layers=(3, 4, 9)),
    # From scratch on CIFAR (32 x 32, patch 4 -> 64 tokens).
    # 2.7 M parameters: the ViT of Lee et al., "Vision Transformer for Small-Size Datasets".
    "ViT-CIFAR-3M": _cifar(192, 9, 12, 384),
    # 6.3 M parameters: the width and depth of omihub777/ViT-CIFAR, whose 90.9% (200 epochs) used patch 8
    # (16 tokens) and was read off the test set it also validated on; patch 4 here (64 tokens, ~4x the compute).
    "ViT-CIFAR-6M": _cifar(384, 7, 12, 384),
    # DINOv2 (Oquab et al., 2023), self-supervised on 142 M images: patch 14, LayerScale, exact GELU,
    # ImageNet mean/std inputs, positions learned on a 37 x 37 grid at 518 px (resized when loaded for
    # another size). No head: the published weights are backbones. The "_reg" models add 4 registers.
    **{
        f"dinov2_vit{size}14{reg}": _dinov2(width, depth, heads, registers=4 if reg else 0)
        for size, width, depth, heads in (("s", 384, 12, 6), ("b", 768, 12, 12), ("l", 1024, 24, 16))
        for reg in ("", "_reg")
    },
    # A few thousand parameters: for tests and the notebooks' smoke mode.
    "ViT-Test": ModelConfig(
        img_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=10
    ),
}

ALIASES: dict[str, str] = {
    # MindCV's ImageNet-1k names
    "vit_b_32_224": "ViT-B_32",
    "vit_l_16_224": "ViT-L_16",
    "vit_l_32_224": "ViT-L_32",
    # MindFormers' MAE-fine-tuned ViT-B/16
    "vit_base_p16": "ViT-B_16-MAE",
    # Google's file name of the hybrid (imagenet21k/R50+ViT-B_16.npz)
    "R50+ViT-B_16": "R50-ViT-B_16",
    # torchvision's names
    "vit_b_16": "ViT-B_16",
    "vit_b_32": "ViT-B_32",
    "vit_l_16": "ViT-L_16",
    "vit_l_32": "ViT-L_32",
    "vit_h_14": "ViT-H_14",
    # timm's names of the DINOv2 backbones
    **{
        f"vit_{timm_size}_patch14{'_reg4' if reg else ''}_dinov2": f"dinov2_vit{size}14{reg}"
        for size, timm_size in (("s", "small"), ("b", "base"), ("l", "large"))
        for reg in ("", "_reg")
    },
}

# Published models that vitlab's ViT cannot compute, and why (named instead of "unknown model").
UNSUPPORTED = {
    name: "DINOv2's ViT-g/14 has a SwiGLU MLP (three matrices, not fc1/fc2), which vitlab's model does not "
    "implement: use dinov2_vitl14 (or timm's vit_giant_patch14_dinov2)"
    for name in ("dinov2_vitg14", "dinov2_vitg14_reg", "vit_giant_patch14_dinov2", "vit_giant_patch14_reg4_dinov2")
}


def resolve_model_name(name: str) -> str:
    """The preset name behind `name` (an alias or a preset); an unknown name lists the valid ones."""
    if name in PRESETS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    if name in UNSUPPORTED:
        raise ValueError(f"model {name!r} is not supported: {UNSUPPORTED[name]}")
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def list_models() -> list[str]:
    """Every preset name, then every alias."""
    return list(PRESETS) + list(ALIASES)


def get_model_config(name: str, **overrides) -> ModelConfig:
    """A fresh copy of preset `name` with `overrides` applied."""
    return PRESETS[resolve_model_name(name)].replace(**overrides)


# --- Experiments: the `VITConfig` dataclass and the ready-made runs ------------------------------

DATASET_NAMES = ("cifar10", "cifar100", "synthetic", "folder")
DECAY_TYPES = ("cosine", "linear")
OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
AUGMENTATIONS = ("finetune", "strong", "basic", "none", "randaugment")


def _timestamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d_%H%M%S")


@dataclass
class VITConfig:
    """One training run: data, model, optimiser, schedule, precision, logging and checkpoints."""

    log_dir: str = "./TB_log/"  # TensorBoard root; each run writes to log_dir/<run name>/
    dataset: str = "cifar10"  # "cifar10", "cifar100", "synthetic" (offline coloured shapes) or "folder" (data_dir)
    model_type: str = "ViT-B_16"  # a preset or alias of vitlab.list_models()
    pretrained_dir: str | None = None  # Google .npz checkpoint to start from; None trains from scratch
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
    optimizer: str = "sgd"  # "sgd" (fine-tuning protocol) or "adamw" (training from scratch)
    momentum: float = 0.9  # SGD momentum; AdamW uses it as beta1
    precision: str = "auto"  # "bf16", "fp16" (with a gradient scaler), "fp32"; "auto": bf16/fp16 on GPU, fp32 on CPU
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0.1 helps small ViTs trained from scratch)
    augment: str = "finetune"  # "finetune" (inception crop + flip), "strong" (crop + flip + TrivialAugment), ...
    val_split: float = 0.02  # fraction of the training set held out for model selection (Google's 2%)
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
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self):
        check_types(self)
        for name in ("img_size", "train_batch_size", "eval_batch_size", "eval_every", "num_steps",
                     "gradient_accumulation_steps", "log_every"):  # fmt: skip
            _check_range(self, name, low=1)
        for name in ("warmup_steps", "num_workers", "learning_rate", "weight_decay", "max_grad_norm"):
            _check_range(self, name, low=0)
        if self.head_learning_rate is not None:
            _check_range(self, "head_learning_rate", low=0)
        for name in ("label_smoothing", "momentum", "val_split"):
            _check_range(self, name, low=0, high=1)
        _check_range(self, "local_rank", low=-1)
        _check_range(self, "ddp_timeout", low=1)
        for name in ("mixup_alpha", "cutmix_alpha"):  # 0 turns it off
            _check_range(self, name, low=0)
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"VITConfig.crop_pct must be in (0, 1], got {self.crop_pct!r}")
        for name, valid in (("decay_type", DECAY_TYPES), ("optimizer", OPTIMIZERS), ("precision", PRECISIONS),
                            ("augment", AUGMENTATIONS), ("dataset", DATASET_NAMES)):  # fmt: skip
            _check_choice(self, name, valid)
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

    def replace(self, **overrides) -> VITConfig:
        """A copy with some fields changed; unknown field names are an error that lists the valid ones."""
        _check_fields(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        """The fields as a plain dict (JSON-friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> VITConfig:
        """Build from a dict of fields; unknown names are an error that lists the valid ones."""
        if not isinstance(values, dict):
            raise ConfigError(f"a VITConfig is a dict of fields, got {type(values).__name__}")
        _check_fields(values)
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
                raise IsADirectoryError(f"config file {path} is a directory: give a config.json file")
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
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
        raise ConfigError(
            f"unknown ModelConfig field(s) {unknown} in model_overrides; valid fields: {', '.join(sorted(fields))}"
        )
    for name, value in overrides.items():
        expected = _type_error(str(fields[name].type), value)
        if expected:
            raise ConfigError(f"model_overrides.{name} must be {expected}, got {value!r} ({type(value).__name__})")
    if img_size is not None and overrides.get("img_size", img_size) != img_size:
        raise ConfigError(
            f"model_overrides.img_size {overrides['img_size']} differs from img_size {img_size}: "
            "set the resolution with img_size (--img_size) only"
        )


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
# Written fresh for every run, so an exported experiment leaves it out: each run from the file gets its own name.
_NOT_EXPORTED = ("test_cycles",)


def field_comments() -> dict[str, str]:
    """The comment beside each `VITConfig` field in this file, for exported YAML and help texts."""
    import inspect
    import re

    try:
        source = inspect.getsource(VITConfig)
    except (OSError, TypeError):  # no source files (a frozen install): no comments
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^    (\w+): [^#\n]*#\s*(.*)$", source, re.M)}


def load_config(path: str | os.PathLike) -> VITConfig:
    """A `VITConfig` from a YAML (`.yaml`, `.yml`) or JSON (`.json`) file, through `VITConfig.from_dict`.

    MindCV, MindFormers and timm keep their experiments in YAML; `export_config` writes one to start from.
    YAML 1.1 reads `1e-3` as a string, so strings in number fields are read as numbers.
    """
    path = Path(path)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ValueError(f"config file {path} must end in {', '.join(CONFIG_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text: save it as UTF-8 (YAML or JSON)") from None
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {path} is not valid JSON: {error}") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of VITConfig fields, got {type(values).__name__}")
    numbers = {f.name for f in dataclasses.fields(VITConfig) if f.type in ("float", "int")}
    for name in numbers & set(values):
        if isinstance(values[name], str):
            try:
                values[name] = (
                    float(values[name]) if "." in values[name] or "e" in values[name].lower() else int(values[name])
                )
            except ValueError:
                pass  # left for from_dict to report
    return VITConfig.from_dict(values)


def export_config(cfg: VITConfig, fmt: str = "yaml", title: str | None = None) -> str:
    """`cfg` as the text of a config file ("yaml", each field with its comment, or "json") to edit and pass to
    `--config`; `test_cycles` is left out so each run from the file gets a fresh name."""
    values = json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in _NOT_EXPORTED}))
    if fmt == "json":
        return json.dumps(values, indent=2) + "\n"
    if fmt != "yaml":
        raise ValueError(f"unknown config format {fmt!r}; choose yaml or json")
    import yaml

    comments = field_comments()
    lines = [f"# {title}"] if title else []
    lines.append("# vitlab experiment: python -m vitlab.train --config this.yaml (flags after it override fields)")
    for name, value in values.items():
        # Flow style keeps each field on one line; a bare scalar document ends with "...", which is dropped.
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()
        lines.append(f"{name}: {text}" + (f"  # {comments[name]}" if name in comments else ""))
    return "\n".join(lines) + "\n"


def _check_fields(values: dict) -> None:
    valid = {f.name for f in dataclasses.fields(VITConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"unknown VITConfig field(s) {unknown}; valid fields: {', '.join(sorted(valid))}")


# What a resumed run may change: how long it runs, how often it evaluates and logs, and where and how it
# computes (none of these alters the numbers of the steps already taken). Every other field is the run's.
CHANGEABLE_ON_RESUME = (
    "num_steps", "eval_every", "log_every", "eval_batch_size", "num_workers", "progress", "TB_log", "device",
    "compile", "data_dir", "pretrained_dir", "save_dir", "log_dir", "local_rank", "ddp_timeout", "resume",
)  # fmt: skip
IDENTITY_FIELDS = ("name", "record_algo", "test_cycles")  # they name the run's folders


def resume_config(saved: dict, given: VITConfig, requested: set[str] | None = None) -> tuple[VITConfig, dict]:
    """The config a resumed run continues with: `saved` (the run's own), with the changes that are safe.

    `requested` names the fields the user set (the command line knows); without it, a field counts as
    set when `given` differs from both the saved value and VITConfig's default. Returns (config,
    {field: (saved value, new value)} for each change). Changing any other field is an error naming it.
    """
    saved_cfg = VITConfig.from_dict({k: v for k, v in saved.items() if k != "resume"})
    defaults = VITConfig().to_dict()
    new = given.to_dict()
    if requested is None:
        requested = {k for k, v in new.items() if v != defaults[k]}
    if new["model_overrides"].items() <= saved_cfg.model_overrides.items():
        new["model_overrides"] = saved_cfg.model_overrides  # the run added the model's normalisation to them
    changes = {
        k: (saved[k] if k in saved else defaults[k], new[k])
        for k in sorted(requested - {*IDENTITY_FIELDS, "resume"})
        if new[k] != saved_cfg.to_dict()[k]
    }
    refused = {k: v for k, v in changes.items() if k not in CHANGEABLE_ON_RESUME}
    if refused:
        listed = "; ".join(f"{k}: the run has {old!r}, given {value!r}" for k, (old, value) in refused.items())
        raise ConfigError(
            f"a resumed run keeps its settings, and {', '.join(refused)} cannot change ({listed}). Resume without "
            f"those flags, or start a new run with another --name. Changeable: {', '.join(CHANGEABLE_ON_RESUME[:-1])}"
        )
    cfg = saved_cfg.replace(**{k: value for k, (_, value) in changes.items()}, resume=given.resume)
    return cfg, changes


# A pre-trained backbone adapted to a new labelled set on a CPU in minutes: DINOv2 ViT-S/14 (Meta's file;
# timm's, Hugging Face's or any other ViT's weights work too) at 112 px (8 x 8 patches of 14), AdamW with
# a small rate for the backbone and a 100x larger one for the new zero head, crop + flip, label smoothing.
# 150 steps of 64 are about two passes over 4,000 photos (docs/results.md).
TRANSFER = dict(
    dataset="folder",
    data_dir="./data/photos",
    model_type="dinov2_vits14",
    pretrained_dir="./Pretrained/dinov2_vits14_pretrain.pth",
    record_algo="transfer",
    img_size=112,
    train_batch_size=64,
    eval_batch_size=128,
    eval_every=50,
    optimizer="adamw",
    momentum=0.9,
    learning_rate=3e-5,
    head_learning_rate=3e-3,
    weight_decay=0.05,
    num_steps=150,
    warmup_steps=10,
    decay_type="cosine",
    max_grad_norm=1.0,
    label_smoothing=0.1,
    augment="basic",
    val_split=0.1,
    log_every=10,
    num_workers=2,
)


EXPERIMENTS: dict[str, dict] = {
    # Google's fine-tuning protocol (and the VITConfig class it grew from): ViT-B_16 from ImageNet-21k, 224 px,
    # SGD momentum 0.9, no weight decay, 500 warmup steps, cosine decay, clip 1, batch 512.
    # 8 accumulation steps of 64 images fit a 16 GB GPU; use fewer on bigger GPUs.
    "finetune": dict(
        dataset="cifar10",
        model_type="ViT-B_16",
        pretrained_dir="./Pretrained/imagenet21k_ViT-B_16.npz",
        record_algo="finetune",
        img_size=224,
        train_batch_size=512,
        gradient_accumulation_steps=8,
        eval_batch_size=64,
        eval_every=100,
        optimizer="sgd",
        momentum=0.9,
        learning_rate=3e-2,
        weight_decay=0.0,
        num_steps=10000,
        warmup_steps=500,
        decay_type="cosine",
        max_grad_norm=1.0,
        augment="finetune",
        # Crop, flip and the 32 -> 224 resize on the GPU in batches: a few CPU cores running PIL
        # cannot feed a GPU at 224 (docs/benchmarks.md); statistically the same augmentation.
        device_augment=True,
    ),
    # From scratch on 32 x 32 CIFAR-10 in about a GPU-hour: a 2.7 M-parameter patch-4 ViT (Lee et al.),
    # AdamW with warmup-cosine, strong augmentation and label smoothing; 20k steps of 512 are ~200 epochs.
    "scratch": dict(
        dataset="cifar10",
        model_type="ViT-CIFAR-3M",
        record_algo="scratch",
        img_size=32,
        train_batch_size=512,
        eval_batch_size=512,
        eval_every=500,
        optimizer="adamw",
        momentum=0.9,
        learning_rate=1e-3,
        weight_decay=0.05,
        num_steps=20000,
        warmup_steps=1000,
        decay_type="cosine",
        max_grad_norm=1.0,
        label_smoothing=0.1,
        augment="strong",
        # Crop, flip and TrivialAugmentWide per image, in batches on the device (vitlab.augment): the
        # same augmentation as the PIL transforms, which cap a GPU run at a few thousand images/s.
        device_augment=True,
        num_workers=8,  # for device_augment=False
    ),
    # ViT-B/32 from scratch on ImageNet-1k at 224 (train/ and val/ folders of class folders in data_dir), the
    # DeiT / AugReg-style recipe of MindCV's vit_b32_224_ascend.yaml, which reports 75.86% top-1 / 92.08% top-5
    # (torchvision documents 75.912 / 92.466 for its vit_b_32 with a similar recipe): AdamW at 1.6e-3 for a
    # global batch of 4096, weight decay 0.3, 30 warm-up epochs then cosine decay to epoch 300, label smoothing
    # 0.1, RandAugment(2, 9), Mixup 0.8 / CutMix 1.0, dropout 0.1, stochastic depth 0.1, evaluation at 224 of
    # the 256 px resize. One epoch is 1,281,167 / 4096 = 313 steps. 16 passes of 256 images make one step on one
    # GPU; with torchrun divide the accumulation by the number of GPUs (8 GPUs: 2, 16 GPUs on 2 nodes: 1).
    "imagenet": dict(
        dataset="folder",
        data_dir="./data/imagenet",
        model_type="ViT-B_32",
        record_algo="imagenet",
        img_size=224,
        crop_pct=0.875,
        train_batch_size=4096,
        gradient_accumulation_steps=16,
        eval_batch_size=256,
        eval_every=3130,  # every 10 epochs
        optimizer="adamw",
        momentum=0.9,
        learning_rate=1.6e-3,
        weight_decay=0.3,
        num_steps=93_836,  # 300 epochs
        warmup_steps=9_384,  # 30 epochs
        decay_type="cosine",
        max_grad_norm=1.0,
        label_smoothing=0.1,
        augment="randaugment",
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        val_split=0.0,  # ImageNet's val/ folder is the validation set
        model_overrides={"dropout_rate": 0.1, "drop_path_rate": 0.1},
        num_workers=8,
    ),
    # The linear probe: the same backbone frozen, only the new head trains, on features computed once (no
    # augmentation), so the steps cost next to nothing and 1,500 of them (about 23 passes) take seconds.
    "transfer": TRANSFER,
    "probe": dict(
        TRANSFER,
        record_algo="probe",
        freeze_backbone=True,
        augment="none",
        num_steps=1500,
        warmup_steps=50,
        eval_every=500,
        log_every=50,
        label_smoothing=0.1,
    ),  # fmt: skip
    # Seconds on a CPU: the tiny ViT-Test model on synthetic CIFAR-format data (tests, smoke mode).
    "smoke": dict(
        dataset="synthetic",
        model_type="ViT-Test",
        record_algo="smoke",
        img_size=32,
        train_batch_size=32,
        eval_batch_size=128,
        eval_every=10,
        optimizer="adamw",
        learning_rate=1e-3,
        weight_decay=0.0,
        num_steps=20,
        warmup_steps=5,
        augment="basic",
        precision="fp32",
        num_workers=0,
        log_every=5,
    ),
}


def get_experiment(experiment: str, /, **overrides) -> VITConfig:
    """The ready-made experiment (a name of `EXPERIMENTS`: "finetune", "scratch", "transfer", ...) with `overrides`.

    Another `num_steps` without a `warmup_steps` keeps the recipe's warm-up as the same fraction of the run
    (`scaled_warmup`), except for a resumed run, which keeps its own.
    """
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; valid names: {', '.join(EXPERIMENTS)}")
    recipe = VITConfig(**copy.deepcopy(EXPERIMENTS[experiment]))  # model_overrides: a copy
    steps = overrides.get("num_steps")
    if "warmup_steps" not in overrides and not overrides.get("resume") and type(steps) is int and steps >= 1:
        overrides = {**overrides, "warmup_steps": scaled_warmup(recipe, steps)}
    return recipe.replace(**overrides)


def scaled_warmup(recipe: VITConfig, num_steps: int) -> int:
    """The warm-up of `recipe` as the same fraction of a run of `num_steps`: finetune's 500 of 10,000 -> 25 of 500.

    A recipe's warm-up is sized for its own length; kept in a shorter run it would only ever raise the
    learning rate.
    """
    if num_steps == recipe.num_steps:
        return recipe.warmup_steps
    return max(0, min(round(recipe.warmup_steps * num_steps / recipe.num_steps), num_steps - 1))


def find_runs(save_dir: str | os.PathLike, where=None) -> list[tuple[Path, VITConfig]]:
    """(run folder, its VITConfig) of every run under `save_dir` with a config.json, newest first.

    `where(cfg)` keeps the runs it returns True for, e.g. real CIFAR-10 runs from scratch:
    `find_runs("Model", lambda cfg: cfg.dataset == "cifar10" and not cfg.pretrained_dir)`.
    A run's TensorBoard events are in `<log_dir>/<folder name>`.
    """
    found = []
    for path in Path(save_dir).glob("*/config.json"):
        try:
            cfg = VITConfig.from_json(path)
        except (ValueError, TypeError):  # not a vitlab run's config
            continue
        if where is None or where(cfg):
            found.append((path.stat().st_mtime, path.parent, cfg))
    return [(folder, cfg) for _, folder, cfg in sorted(found, key=lambda item: item[0], reverse=True)]
