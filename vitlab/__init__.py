"""vitlab: the Vision Transformer, readable and exact, for notebooks, experiments and the command line."""

import warnings

# `python -m vitlab.train` runs a module that `import vitlab` has already loaded (so that
# `vitlab.train` is the function, not the module); runpy's warning about that is expected.
warnings.filterwarnings("ignore", message=r".*'vitlab\.\w+' found in sys\.modules", category=RuntimeWarning)

from vitlab.configs import EXPERIMENTS, ModelConfig, VITConfig, get_experiment, get_model_config
from vitlab.download import download
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
from vitlab.pretrained import load_pretrained, save_npz
from vitlab.train import train

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
