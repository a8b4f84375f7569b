"""Batched augmentation on the device: random resized crop, flip, resize and normalise in a few ops.

With PIL in DataLoader workers, upscaling every 32 x 32 CIFAR image to 224 costs about a
millisecond of CPU per image, so on a 2-core machine the data pipeline and not the GPU sets the
pace. Here the whole training set stays on the device as one uint8 tensor and each batch is
augmented there:

    uint8 (B, 3, H, W) --crop boxes--> two resampling matrices per image --> (B, 3, S, S) floats

A crop followed by a resize is a linear map that acts on rows and columns separately, so
`out = Wy @ image @ Wx^T` with `Wy` (S, H) and `Wx` (S, W) built from each image's crop box.
The matrices hold the weights of PIL's bilinear filter (the triangle filter, widened by the
scale factor when shrinking, i.e. antialiased), so the result equals PIL's
`img.resize(size, BILINEAR, box=crop)` up to PIL's 8-bit rounding; when a crop is enlarged (always
the case for CIFAR: crops are at most 32 pixels) the filter is plain bilinear interpolation with
half-pixel centres and clamped edges, which is also what `torch.nn.functional.interpolate`
(`align_corners=False`) and `torchvision.transforms.v2.functional.resize` compute.
The crop boxes follow torchvision's `RandomResizedCrop.get_params` exactly: area uniform in
`scale` x image area, log-uniform aspect ratio, up to 10 tries, then a central crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "DeviceAugment",
    "DeviceBatches",
    "DeviceEvalTransform",
    "normalize",
    "resample_matrices",
    "resized_crop",
    "sample_crop_boxes",
    "uint8_cifar",
]

ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before the central-crop fallback


def sample_crop_boxes(
    batch_size: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random crop boxes (B, 4) as integer (top, left, height, width), distributed as `RandomResizedCrop`."""
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"scale {scale} and ratio {ratio} must be increasing pairs of positive numbers")
    device = generator.device if generator is not None else device
    # All 10 tries of every image at once; the first valid try wins, as in torchvision's loop.
    u = torch.rand(batch_size, ATTEMPTS, 4, generator=generator, device=device)  # (B, tries, 4)
    target_area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    # torch.round and Python's round both round half to even.
    w = torch.round(torch.sqrt(target_area * aspect)).long()  # (B, tries)
    h = torch.round(torch.sqrt(target_area / aspect)).long()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(dim=1, keepdim=True)  # index of the first valid try (0 if none)
    pick = lambda t: t.gather(1, first).squeeze(1)  # (B,)
    h, w = pick(h), pick(w)
    # randint(0, n - size + 1) is floor(uniform * (n - size + 1)).
    top = (pick(u[..., 2]) * (height - h + 1)).long()
    left = (pick(u[..., 3]) * (width - w + 1)).long()
    boxes = torch.stack([top, left, h, w], dim=1)  # (B, 4)
    fallback = torch.tensor(central_crop(height, width, ratio), device=boxes.device)
    return torch.where(valid.any(dim=1, keepdim=True), boxes, fallback)


def central_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's fallback box: the whole image, cut to the nearest allowed aspect ratio, centred."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resample_matrices(
    start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, antialias: bool = True
) -> torch.Tensor:
    """Weights (B, out_size, in_size) that resize pixels [start, start + length) of each row to out_size.

    PIL's bilinear filter: output pixel k is centred at start + (k + 0.5) * length / out_size and
    weighs input pixel i (centre i + 0.5) by the triangle 1 - |distance| / support, where the
    support is max(length / out_size, 1) with `antialias` (PIL) and 1 without (plain bilinear);
    pixels outside the crop get no weight and each row is renormalised, which clamps at the edges.
    """
    start = start.to(torch.float32)[:, None, None]  # (B, 1, 1)
    length = length.to(torch.float32)[:, None, None]
    step = length / out_size  # input pixels per output pixel
    out_centres = start + (torch.arange(out_size, device=start.device) + 0.5)[None, :, None] * step  # (B, S, 1)
    in_centres = (torch.arange(in_size, device=start.device) + 0.5)[None, None, :]  # (1, 1, in)
    support = step.clamp(min=1.0) if antialias else torch.ones_like(step)
    weights = (1.0 - (in_centres - out_centres).abs() / support).clamp(min=0.0)  # (B, S, in)
    inside = (in_centres >= start) & (in_centres < start + length)
    weights = weights * inside
    return weights / weights.sum(dim=2, keepdim=True)


def resized_crop(
    images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None, antialias: bool = True
) -> torch.Tensor:
    """Crop each image to its box (top, left, h, w) and resize it to size x size: float32 (B, C, S, S).

    Values keep the input's scale (0..255 for uint8). `flip` (B,) bool mirrors the chosen images.
    """
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (B, C, H, W), got shape {tuple(images.shape)}")
    if boxes.shape != (images.shape[0], 4):
        raise ValueError(f"expected boxes of shape ({images.shape[0]}, 4), got {tuple(boxes.shape)}")
    height, width = images.shape[-2:]
    boxes = boxes.to(images.device)
    rows = resample_matrices(boxes[:, 0], boxes[:, 2], height, size, antialias)  # (B, S, H)
    cols = resample_matrices(boxes[:, 1], boxes[:, 3], width, size, antialias)  # (B, S, W)
    if flip is not None:
        # Mirroring the output is reversing the order of the output columns.
        cols = torch.where(flip.to(images.device)[:, None, None], cols.flip(1), cols)
    x = images.to(torch.float32)
    x = rows[:, None] @ x  # (B, C, S, W)
    return x @ cols[:, None].transpose(-1, -2)  # (B, C, S, S)


def normalize(x: torch.Tensor, mean, std, value_range: float) -> torch.Tensor:
    """(x / value_range - mean) / std per channel; mean and std are numbers or per-channel sequences."""
    shape = (1, -1, 1, 1)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(shape)  # (1, C or 1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(shape)
    return (x / value_range - mean) / std


def _value_range(images: torch.Tensor) -> float:
    # torchvision's convention: uint8 images are 0..255, floating-point images 0..1.
    if images.dtype == torch.uint8:
        return 255.0
    if images.is_floating_point():
        return 1.0
    raise TypeError(f"expected uint8 or floating-point images, got {images.dtype}")


class DeviceAugment(nn.Module):
    """Training augmentation for a batch on any device: random resized crop, flip, resize, normalise.

    Takes uint8 (B, 3, H, W) images (0..255) or floating-point ones (0..1) and returns float32
    (B, 3, img_size, img_size); the defaults (Google's fine-tuning recipe: inception crop with area
    (0.05, 1), flip, inputs in [-1, 1]) give values in [-1, 1]. Pass a `torch.Generator` on the
    images' device to make it reproducible.
    """

    def __init__(
        self,
        img_size: int,
        scale: tuple[float, float] = (0.05, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        antialias: bool = True,
    ):
        super().__init__()
        self.img_size, self.scale, self.ratio = img_size, tuple(scale), tuple(ratio)
        self.flip, self.mean, self.std, self.antialias = flip, mean, std, antialias

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        value_range = _value_range(images)
        batch_size, _, height, width = images.shape
        device = images.device
        boxes = sample_crop_boxes(batch_size, height, width, self.scale, self.ratio, generator, device)
        flip = torch.rand(batch_size, generator=generator, device=device) < 0.5 if self.flip else None
        # Each row of the resampling matrices sums to 1, so normalising first gives the same result
        # on the small source images (49x fewer pixels than the output for 32 -> 224).
        x = normalize(images.to(torch.float32), self.mean, self.std, value_range)  # (B, C, H, W)
        return resized_crop(x, boxes, self.img_size, flip, self.antialias)  # (B, C, S, S)

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, scale={self.scale}, ratio={self.ratio}, flip={self.flip}"


class DeviceEvalTransform(nn.Module):
    """Evaluation transform on the device: resize the whole image to img_size and normalise."""

    def __init__(
        self,
        img_size: int,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        antialias: bool = True,
    ):
        super().__init__()
        self.img_size, self.mean, self.std, self.antialias = img_size, mean, std, antialias

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Deterministic: `generator` is accepted (and unused) so both transforms are called alike."""
        value_range = _value_range(images)
        batch_size, _, height, width = images.shape
        x = normalize(images.to(torch.float32), self.mean, self.std, value_range)  # (B, C, H, W)
        if (height, width) == (self.img_size, self.img_size):
            return x
        box = torch.tensor([0, 0, height, width], device=images.device)
        return resized_crop(x, box.expand(batch_size, 4), self.img_size, antialias=self.antialias)


class DeviceBatches:
    """Endless (images, labels) micro-batches from uint8 images kept on the device and augmented there.

    `keys` yields (position in the sample stream, dataset index) pairs, e.g. the trainer's
    `StepSampler`. Each micro-batch's augmentation is seeded by (seed, its first position), so a
    resumed or sharded run draws exactly the crops of an uninterrupted single-process one.
    """

    def __init__(self, images, labels, keys, batch_size: int, augment: nn.Module, seed: int, device):
        self.device = torch.device(device)
        self.images, self.labels = images.to(self.device), labels.to(self.device)  # the whole set, once
        self.keys, self.batch_size, self.augment, self.seed = iter(keys), batch_size, augment, seed
        self.generator = torch.Generator(self.device)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        positions, indices = zip(*(next(self.keys) for _ in range(self.batch_size)))
        self.generator.manual_seed((self.seed * 1_000_000_007 + positions[0]) % 2**63)
        index = torch.tensor(indices).to(self.device, non_blocking=True)  # (B,)
        return self.augment(self.images[index], self.generator), self.labels[index]


def uint8_cifar(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision CIFAR dataset (or a subset of one) as uint8 images (N, 3, H, W) and int64 labels (N,).

    Subsets are `torch.utils.data.Subset` or any wrapper with `indices` and `dataset` or `base`
    (such as `vitlab.data.TransformedSubset`), nested to any depth. Reads the raw `.data` /
    `.targets` arrays, so the dataset's own `transform` is not applied.
    """
    indices = None
    while hasattr(dataset, "indices") and (hasattr(dataset, "dataset") or hasattr(dataset, "base")):
        outer = torch.as_tensor(dataset.indices, dtype=torch.long)
        indices = outer if indices is None else outer[indices]
        dataset = dataset.dataset if hasattr(dataset, "dataset") else dataset.base
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4 or targets is None:
        raise TypeError(
            f"{type(dataset).__name__} has no CIFAR-style uint8 `.data` array (N, H, W, 3) and `.targets` "
            "list: pass a torchvision CIFAR10/CIFAR100 dataset or a subset of one, or use the PIL transforms"
        )
    images = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.long)  # (N,)
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return images, labels
