"""vitlab: the Vision Transformer, readable and exact, for notebooks, experiments and the command line.

A map of the package, in the order of the paper and of an experiment:

    configs     ModelConfig and the presets (ViT-B_16, ...), VITConfig, the experiments (finetune, scratch,
                imagenet, smoke) and YAML/JSON config files
    model       the ViT top to bottom: PatchEmbedding -> Attention -> MLP -> EncoderBlock -> VisionTransformer
    hybrid      the ResNet-50 stem of R50+ViT-B_16
    factory     create_model, list_models          (python -m vitlab.factory: the table of presets)
    data        CIFAR-10/100 and image folders (ImageNet's layout too), the transforms, Mixup/CutMix
    synthetic   synthetic CIFAR-format data for offline runs
    augment     augmentation in batches on the device
    files       files written whole or not at all, a full disk said as such
    commands    what every command shares: one `error:` line and its exit status
    installed   torch and torchvision as installed: a pair that does not fit said in one line
    train       train(cfg) and the trainer          (python -m vitlab.train)
    evaluate    evaluate(): top-1, top-5 and loss   (python -m vitlab.evaluate)
    predict     predict(): classes of image files   (python -m vitlab.predict)
    visualize   patches, position embeddings, attention rollout and distance, curves of runs
    download    download(): checkpoints into Pretrained/  (python -m vitlab.download --list)
    weights/    weight files: Google's .npz in (load_pretrained) and out (save_npz), PyTorch state dicts,
                run checkpoints, downloads
    training/   the trainer's parts: devices, what a run builds, the batch stream, run state, logs, flags
    bench       images/s of vitlab against timm    (python -m vitlab.bench)

Start with:

    import vitlab
    from vitlab.train import train
    model = vitlab.create_model("ViT-B_16", num_classes=10, img_size=224)
    result = train(vitlab.get_experiment("smoke"))    # seconds on a CPU, synthetic data

`train`, `evaluate`, `predict` and `download` are modules, each the command of its name and the home of
the function of its name: `from vitlab.train import train`, `vitlab.predict.load_image`. Called, a module
calls that function: `vitlab.train(cfg)` is `vitlab.train.train(cfg)`.
"""

import importlib
from typing import TYPE_CHECKING

from vitlab.installed import watch_torchvision

__version__ = "0.1.0"

watch_torchvision()  # a torchvision that does not fit the installed torch fails its first import with one line

# Public name -> the module that defines it. Names and submodules are imported on first use (PEP 562), so
# `import vitlab` and `python -m vitlab.download --list` do not pay for torchvision, TensorBoard
# or matplotlib until something needs them.
_SOURCES = {
    "EXPERIMENTS": "vitlab.configs",
    "ModelConfig": "vitlab.configs",
    "VITConfig": "vitlab.configs",
    "get_experiment": "vitlab.configs",
    "get_model_config": "vitlab.configs",
    "create_model": "vitlab.factory",
    "list_models": "vitlab.factory",
    "show_support_list": "vitlab.factory",
    "MLP": "vitlab.model",
    "Attention": "vitlab.model",
    "Encoder": "vitlab.model",
    "EncoderBlock": "vitlab.model",
    "PatchEmbedding": "vitlab.model",
    "VisionTransformer": "vitlab.model",
    "resize_pos_embed": "vitlab.model",
    "load_pretrained": "vitlab.weights.load",
    "save_npz": "vitlab.weights.npz",
}

__all__ = [
    "MLP",
    "EXPERIMENTS",
    "Attention",
    "Encoder",
    "EncoderBlock",
    "ModelConfig",
    "PatchEmbedding",
    "VITConfig",
    "VisionTransformer",
    "create_model",
    "get_experiment",
    "get_model_config",
    "list_models",
    "load_pretrained",
    "resize_pos_embed",
    "save_npz",
    "show_support_list",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names come from __getattr__
    from vitlab.configs import EXPERIMENTS, ModelConfig, VITConfig, get_experiment, get_model_config
    from vitlab.factory import create_model, list_models, show_support_list
    from vitlab.model import MLP, Attention, Encoder, EncoderBlock, PatchEmbedding, VisionTransformer, resize_pos_embed
    from vitlab.weights.load import load_pretrained
    from vitlab.weights.npz import save_npz


def __getattr__(name: str):
    if name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
        globals()[name] = value  # later look-ups find it directly
        return value
    if not name.startswith("__"):
        try:  # a submodule: `vitlab.predict.load_image` after a bare `import vitlab`
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'vitlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
