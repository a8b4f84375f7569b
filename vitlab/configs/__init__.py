"""Configs: what a model is (`ModelConfig`, the named presets) and what a run does (`VITConfig`, the experiments).

The ImageNet presets are the paper's Table 1 (Ti and S from DeiT / AugReg); the CIFAR presets are
small patch-4 models meant to be trained from scratch on 32 x 32 images. `VITConfig` holds every
setting of a training run; the experiments (`get_experiment`) are named starting points, YAML and JSON
files hold others (`load_config`, `export_config`), and `resume_config` says what a resumed run may change.

One module per concern; every public name is importable from `vitlab.configs` as well:

    checks.py       the type and range check every config makes when it is built (ConfigError)
    models.py       ModelConfig, the presets and their aliases (get_model_config, list_models)
    run.py          VITConfig: every setting of a training run
    files.py        YAML and JSON config files (load_config, export_config)
    resume.py       what a resumed run may change (resume_config, CHANGEABLE_ON_RESUME)
    experiments.py  the ready-made experiments (get_experiment) and the saved runs (find_runs)

They import nothing of vitlab's but `vitlab.files` (to write config.json whole) and `vitlab.model`, whose
`ModelConfig` holds the ViT's own fields (model.py imports torch and einops only).
"""

from vitlab.configs.checks import ConfigError, check_types
from vitlab.configs.experiments import EXPERIMENTS, TRANSFER, find_runs, get_experiment, scaled_warmup
from vitlab.configs.files import CONFIG_SUFFIXES, export_config, field_comments, load_config
from vitlab.configs.models import (
    ALIASES,
    ARCHITECTURES,
    CLASSIFIERS,
    GELU_APPROXIMATIONS,
    GOOGLE_MEAN,
    GOOGLE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    UNSUPPORTED,
    ModelConfig,
    get_model_config,
    list_models,
    model_config_from,
    presets_of_shape,
    resolve_model_name,
)
from vitlab.configs.resume import CHANGEABLE_ON_RESUME, IDENTITY_FIELDS, resume_config
from vitlab.configs.run import (
    AUGMENTATIONS,
    DATASET_NAMES,
    DECAY_TYPES,
    OPTIMIZERS,
    PRECISIONS,
    VITConfig,
    check_model_overrides,
    check_run_name,
)

__all__ = [
    "ALIASES",
    "ARCHITECTURES",
    "AUGMENTATIONS",
    "CHANGEABLE_ON_RESUME",
    "CLASSIFIERS",
    "CONFIG_SUFFIXES",
    "DATASET_NAMES",
    "DECAY_TYPES",
    "EXPERIMENTS",
    "GELU_APPROXIMATIONS",
    "GOOGLE_MEAN",
    "GOOGLE_STD",
    "IDENTITY_FIELDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRESETS",
    "TRANSFER",
    "UNSUPPORTED",
    "ConfigError",
    "ModelConfig",
    "VITConfig",
    "check_model_overrides",
    "check_run_name",
    "check_types",
    "export_config",
    "field_comments",
    "find_runs",
    "get_experiment",
    "get_model_config",
    "list_models",
    "load_config",
    "model_config_from",
    "presets_of_shape",
    "resolve_model_name",
    "resume_config",
    "scaled_warmup",
]
