"""Image files as RGB pixels: read whole or refused with the file's name, 16-bit images scaled to 8 bits.

The image-folder datasets (`vitlab.data`) and `vitlab.predict` read every file through `read_image`,
so a damaged file is named the same way everywhere, and a 16-bit PNG (a scan, a microscope image)
reaches the model as the picture it is, not clipped to white.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from vitlab.errors import BadValue, IsAFolder, MissingFile

# Pillow's modes of 16-bit grey images (PNG, TIFF); "I" is its 32-bit mode, which older versions used for them.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UnreadableImageError(BadValue):
    """An image file that cannot be decoded (empty, truncated, not an image); the message names the file."""


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB; 16-bit grey values (0-65535) are scaled by 255 / 65535, not clipped at 255."""
    if image.mode in SIXTEEN_BIT_MODES:
        pixels = np.asarray(image).astype(np.float64)
        if image.mode != "I" or pixels.max(initial=0) > 255:  # mode "I" holding 8-bit values needs no scaling
            pixels = np.clip(pixels, 0, 65535) / 257.0  # 65535 / 257 = 255
        image = Image.fromarray(np.rint(np.clip(pixels, 0, 255)).astype(np.uint8))  # (H, W) uint8: mode L
    return image.convert("RGB")


def _reason(path: Path, error: Exception) -> str:
    """Why Pillow could not read `path`, in words that name no Python object."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
    except OSError:
        pass
    text = " ".join(str(error).split())
    if "cannot identify image file" in text:  # Pillow's message names the file object, not the path
        return "not an image format Pillow reads"
    return text or type(error).__name__


READ_FIX = "give a PNG, JPEG or another format Pillow reads"


def read_image(path: str | os.PathLike, fix: str = READ_FIX) -> Image.Image:
    """The RGB pixels of the image file at `path`, decoded completely (a truncated file fails here).

    A file that is not a whole image is an `UnreadableImageError` naming the path and ending in `fix`.
    """
    path = Path(path)
    if path.is_dir():
        raise IsAFolder(f"image {path} is a directory: give image files (e.g. {path}/*.jpg)")
    if not path.is_file():
        raise MissingFile(f"image {path} does not exist")
    try:
        with Image.open(path) as opened:
            return to_rgb(opened)  # decodes every pixel
    except Image.DecompressionBombError as error:  # Pillow refuses images far beyond any photo's size
        raise UnreadableImageError(f"image {path} is refused: {error}; {fix}") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's errors for files that are not images it reads
        raise UnreadableImageError(f"image {path} cannot be read ({_reason(path, error)}): {fix}") from None
