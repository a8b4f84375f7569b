"""vitlab: the Vision Transformer, readable and exact, for notebooks, experiments and the command line.

The model and the presets import at once; the heavier parts (training, TensorBoard, data) load on
first use, so `import vitlab` stays quick.
"""

import importlib

from vitlab.configs import ModelConfig, get_model_config
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

__version__ = "0.1.0"

# public name -> module that defines it, imported on first access
_LAZY = {
    "VITConfig": "vitlab.configs",
    "load_pretrained": "vitlab.pretrained",
    "save_npz": "vitlab.pretrained",
    "download": "vitlab.download",
    "predict": "vitlab.predict",
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
    "get_model_config",
    "list_models",
    "resize_pos_embed",
    "show_support_list",
    *_LAZY,
]
