"""`PatchGrid`: the image size and patch grid that the patch and the hybrid embeddings share.

It sits below both `vitlab.model.PatchEmbedding` (pixel patches) and `vitlab.hybrid.HybridEmbedding`
(ResNet features), so the model can build either without the two modules importing each other.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchGrid(nn.Module):
    """What every patch embedding shares: the image size it accepts and the grid of patches it makes."""

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int):
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(
                f"img_size {img_size} is not divisible by patch_size {patch_size}: choose an image "
                f"size that is a multiple of {patch_size} (e.g. {img_size // patch_size * patch_size})"
            )
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2

    def check_input(self, x: torch.Tensor) -> None:
        """A clear error, before any computation, for images the model was not built for."""
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, {self.img_size}, {self.img_size}), got "
                f"{tuple(x.shape)}: resize the input, or build the model with img_size={x.shape[-1]} "
                f"/ in_chans={x.shape[1] if x.ndim == 4 else '?'} (position embeddings are resized "
                "when a checkpoint is loaded)"
            )
