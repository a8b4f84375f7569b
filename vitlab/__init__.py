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

import warnings

# `python -m vitlab.train` runs a module that `import vitlab` has already loaded (so that
# `vitlab.train` is the function, not the module); runpy's warning about that is expected.
warnings.filterwarnings("ignore", message=r".*'vitlab\.\w+' found in sys\.modules", category=RuntimeWarning)

from vitlab.configs import EXPERIMENTS, ModelConfig, VITConfig, get_experiment, get_model_config
from vitlab.download import download  # the function; `python -m vitlab.download` is the command
from vitlab.evaluate import evaluate
from vitlab.factory import create_model, list_models, show_support_list
from vitlab.model import (
    MLP,
    Attention,
    Encoder,
    EncoderBlock,
    PatchEmbedding,
    VisionTransformer,
    resize_pos_embed,
)
from vitlab.predict import predict
from vitlab.train import train
from vitlab.weights.load import load_pretrained
from vitlab.weights.npz import save_npz

__version__ = "0.1.0"

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
