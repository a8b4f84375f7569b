"""vitlab: the Vision Transformer, readable and exact, for notebooks, experiments and the command line.

The model, checkpoints and prediction import at once; training and evaluation (TensorBoard, data)
load on first use.
"""

import importlib
import warnings

# `python -m vitlab.train` runs a module that `import vitlab` has already loaded (so that
# `vitlab.train` is the function, not the module); runpy's warning about that is expected.
warnings.filterwarnings("ignore", message=r".*'vitlab\.\w+' found in sys\.modules", category=RuntimeWarning)

from vitlab.configs import ModelConfig, get_model_config
from vitlab.download import download
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

__version__ = "0.1.0"

# public name -> module that defines it, imported on first access
_LAZY = {
    "VITConfig": "vitlab.configs",
    "train": "vitlab.train",
    "evaluate": "vitlab.evaluate",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitlab' has no attribute {name!r}")


__all__ = [
    "MLP",
    "Attention",
    "Encoder",
    "EncoderBlock",
    "ModelConfig",
    "PatchEmbedding",
    "VisionTransformer",
    "create_model",
    "download",
    "get_model_config",
    "list_models",
    "load_pretrained",
    "predict",
    "resize_pos_embed",
    "save_npz",
    "show_support_list",
    *_LAZY,
]
