"""vitlab: the Vision Transformer, readable and exact, for notebooks, experiments and the command line."""

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
]
