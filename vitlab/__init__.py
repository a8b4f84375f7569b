"""vitlab: the Vision Transformer, readable and exact, for notebooks, experiments and the command line.

A map of the package, in the order of the paper and of an experiment:

    configs     ModelConfig and the presets (ViT-B_16, ...), VITConfig, the experiments (finetune, scratch,
                imagenet, smoke) and YAML/JSON config files
    model       the ViT top to bottom: PatchEmbedding -> Attention -> MLP -> EncoderBlock -> VisionTransformer
    hybrid      the ResNet-50 stem of R50+ViT-B_16
    factory     create_model, list_models          (python -m vitlab.factory: the table of presets)
    data        CIFAR-10/100 and image folders (ImageNet's layout too), the transforms, Mixup/CutMix,
                synthetic CIFAR-format data for offline runs
    augment     augmentation in batches on the device
    train       train(cfg) and the trainer          (python -m vitlab.train)
    evaluate    top-1, top-5 and loss of a model    (python -m vitlab.evaluate)
    predict     classes of image files and folders  (python -m vitlab.predict)
    visualize   patches, position embeddings, attention rollout and distance, curves of runs
    download    Google's checkpoints into Pretrained/  (python -m vitlab.download --list)
    weights/    weight files: Google's .npz in (load_pretrained) and out (save_npz), PyTorch state dicts,
                run checkpoints, downloads
    training/   the trainer's parts: devices, what a run builds, the batch stream, checkpoints, logs, flags
    bench       images/s of vitlab against timm    (python -m vitlab.bench)

Start with:

    import vitlab
    model = vitlab.create_model("ViT-B_16", num_classes=10, img_size=224)
    result = vitlab.train(vitlab.get_experiment("smoke"))    # seconds on a CPU, synthetic data
"""

import importlib
import sys
import types
import warnings
from typing import TYPE_CHECKING

# `python -m vitlab.train` runs a module that may already be in sys.modules (imported for
# `vitlab.train`, the function); runpy's warning about that is expected.
warnings.filterwarnings("ignore", message=r".*'vitlab\.\w+' found in sys\.modules", category=RuntimeWarning)

__version__ = "0.1.0"

# Public name -> the module that defines it. Modules are imported on first use (PEP 562), so
# `import vitlab` and `python -m vitlab.download --list` do not pay for torchvision, TensorBoard
# or matplotlib until something needs them.
_SOURCES = {
    "EXPERIMENTS": "vitlab.configs",
    "ModelConfig": "vitlab.configs",
    "VITConfig": "vitlab.configs",
    "get_experiment": "vitlab.configs",
    "get_model_config": "vitlab.configs",
    "download": "vitlab.download",
    "evaluate": "vitlab.evaluate",
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
    "predict": "vitlab.predict",
    "load_pretrained": "vitlab.weights.load",
    "save_npz": "vitlab.weights.npz",
    "train": "vitlab.train",
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
    "download",
    "evaluate",
    "get_experiment",
    "get_model_config",
    "list_models",
    "load_pretrained",
    "predict",
    "resize_pos_embed",
    "save_npz",
    "show_support_list",
    "train",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names come from __getattr__
    from vitlab.configs import EXPERIMENTS, ModelConfig, VITConfig, get_experiment, get_model_config
    from vitlab.download import download
    from vitlab.evaluate import evaluate
    from vitlab.factory import create_model, list_models, show_support_list
    from vitlab.model import MLP, Attention, Encoder, EncoderBlock, PatchEmbedding, VisionTransformer, resize_pos_embed
    from vitlab.predict import predict
    from vitlab.train import train
    from vitlab.weights.load import load_pretrained
    from vitlab.weights.npz import save_npz


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'vitlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value  # later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package module: `download`, `evaluate`, `predict` and `train` stay the functions of those names.

    Importing a submodule makes Python set the package attribute of the same name to the module
    (`import vitlab.train` sets `vitlab.train`); for these four the public name is the function.
    """

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _SOURCES.get(name) == f"{__name__}.{name}":
            return  # keep the function (or let __getattr__ find it)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
