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

The from-scratch recipe (`DevicePadCropAugment`) is a 4-pixel reflect-padded random crop, a flip
and TrivialAugmentWide, drawn per image. Neither well-kept library draws TrivialAugment per image
of a batch: `torchvision.transforms.v2.TrivialAugmentWide` on a (B, C, H, W) tensor draws one op
and one magnitude per call and applies them to the whole batch, and kornia's `TrivialAugment`
also samples one sub-policy per call (with its own, narrower op set and ranges). So
`BatchTrivialAugmentWide` draws an op, a magnitude bin and a sign for every image from
torchvision's own table (`TrivialAugmentWide._augmentation_space`) and applies them with
torchvision's tensor kernels where they take per-image statistics anyway (`autocontrast`,
`equalize`, the grayscale and blur of `adjust_saturation` / `adjust_sharpness`); only the parts
whose parameter is a single number in torchvision are written here with one number per image:
the blends of brightness, colour, contrast and sharpness (torchvision's `_blend` formula), the
posterize mask, the solarize threshold, and the affine grid of shear, translate and rotate
(torchvision's `_get_inverse_affine_matrix` and `_gen_affine_grid`, batched). Every op is
computed for the whole batch and kept only for the images that drew it (`torch.where`), so a
batch never waits on the host (no data-dependent shapes), which matters on a GPU.

Random numbers: every transform here can take its uniform draws as a (B, num_uniforms) tensor
instead of a generator. `DeviceBatches` draws them for a whole optimiser step (the global batch)
from a generator seeded by (seed, step) and gives each micro-batch the rows of its stream
positions, so a sample's augmentation depends only on (seed, position) and not on how the step
is split over processes and accumulation passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitlab.configs import GOOGLE_MEAN, GOOGLE_STD
from vitlab.errors import BadType, BadValue

__all__ = [
    "BatchTrivialAugmentWide",
    "DeviceAugment",
    "DeviceBatches",
    "DeviceEvalTransform",
    "DevicePadCropAugment",
    "normalize",
    "pad_crop_flip",
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
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random crop boxes (B, 4) as integer (top, left, height, width), distributed as `RandomResizedCrop`.

    The randomness is `uniforms` (B, 40) in [0, 1) when given, else drawn from `generator`.
    """
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise BadValue(f"scale {scale} and ratio {ratio} must be increasing pairs of positive numbers")
    if uniforms is None:
        device = generator.device if generator is not None else device
        uniforms = torch.rand(batch_size, ATTEMPTS * 4, generator=generator, device=device)
    # All 10 tries of every image at once; the first valid try wins, as in torchvision's loop.
    u = uniforms.reshape(batch_size, ATTEMPTS, 4)  # (B, tries, 4)
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
        raise BadValue(f"expected a batch of images (B, C, H, W), got shape {tuple(images.shape)}")
    if boxes.shape != (images.shape[0], 4):
        raise BadValue(f"expected boxes of shape ({images.shape[0]}, 4), got {tuple(boxes.shape)}")
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


def draw_uniforms(
    uniforms: torch.Tensor | None, batch_size: int, count: int, generator: torch.Generator | None, device
) -> torch.Tensor:
    """`uniforms` (B, count) in [0, 1), checked, or drawn from `generator` on `device` when None."""
    if uniforms is None:
        return torch.rand(batch_size, count, generator=generator, device=device)
    if tuple(uniforms.shape) != (batch_size, count):
        raise BadValue(f"expected uniforms of shape ({batch_size}, {count}), got {tuple(uniforms.shape)}")
    return uniforms.to(device)


def _value_range(images: torch.Tensor) -> float:
    # torchvision's convention: uint8 images are 0..255, floating-point images 0..1.
    if images.dtype == torch.uint8:
        return 255.0
    if images.is_floating_point():
        return 1.0
    raise BadType(f"expected uint8 or floating-point images, got {images.dtype}")


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
        mean: float | Sequence[float] = GOOGLE_MEAN,
        std: float | Sequence[float] = GOOGLE_STD,
        antialias: bool = True,
    ):
        super().__init__()
        self.img_size, self.scale, self.ratio = img_size, tuple(scale), tuple(ratio)
        self.flip, self.mean, self.std, self.antialias = flip, mean, std, antialias

    num_uniforms = ATTEMPTS * 4 + 1  # the crop's 10 tries, then the flip

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None, uniforms: torch.Tensor | None = None
    ) -> torch.Tensor:
        value_range = _value_range(images)
        batch_size, _, height, width = images.shape
        u = draw_uniforms(uniforms, batch_size, self.num_uniforms, generator, images.device)  # (B, 41)
        boxes = sample_crop_boxes(batch_size, height, width, self.scale, self.ratio, uniforms=u[:, :-1])
        flip = u[:, -1] < 0.5 if self.flip else None
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
        mean: float | Sequence[float] = GOOGLE_MEAN,
        std: float | Sequence[float] = GOOGLE_STD,
        antialias: bool = True,
    ):
        super().__init__()
        self.img_size, self.mean, self.std, self.antialias = img_size, mean, std, antialias

    num_uniforms = 0

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None, uniforms: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Deterministic: `generator` and `uniforms` are accepted (and unused) so all transforms are called alike."""
        value_range = _value_range(images)
        batch_size, _, height, width = images.shape
        x = normalize(images.to(torch.float32), self.mean, self.std, value_range)  # (B, C, H, W)
        if (height, width) == (self.img_size, self.img_size):
            return x
        box = torch.tensor([0, 0, height, width], device=images.device)
        return resized_crop(x, box.expand(batch_size, 4), self.img_size, antialias=self.antialias)


# --- the from-scratch recipe: reflect-padded crop, flip, TrivialAugmentWide per image -----------
def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices into [0, size) as `padding_mode="reflect"` maps them (the edge pixel is not repeated)."""
    index = index.abs()  # -k -> k
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def pad_crop_flip(images: torch.Tensor, padding: int, uniforms: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """`RandomCrop(H, padding, padding_mode="reflect")` then `RandomHorizontalFlip()` per image: (B, C, H, W).

    `uniforms` (B, 3): the crop's top and left offsets (each uniform over 0 .. 2 * padding, as
    torchvision's `randint(0, H + 2 * padding - H + 1)`) and the flip (< 0.5 flips). One gather,
    any dtype (uint8 stays uint8), nothing padded in memory.
    """
    batch_size, channels, height, width = images.shape
    offsets = (uniforms[:, :2] * (2 * padding + 1)).long().clamp(max=2 * padding)  # (B, 2): top, left
    rows = _reflect(offsets[:, :1] - padding + torch.arange(height, device=images.device), height)  # (B, H)
    cols = _reflect(offsets[:, 1:] - padding + torch.arange(width, device=images.device), width)  # (B, W)
    if flip:
        cols = torch.where(uniforms[:, 2:3] < 0.5, cols.flip(1), cols)
    source = rows[:, :, None] * width + cols[:, None, :]  # (B, H, W): flat index of each output pixel
    source = source.reshape(batch_size, 1, height * width).expand(batch_size, channels, height * width)
    return images.reshape(batch_size, channels, height * width).gather(2, source).reshape(images.shape)


def _trivial_augment_space(num_bins: int) -> dict[str, tuple[torch.Tensor, bool]]:
    """torchvision's TrivialAugmentWide table: op name -> (magnitudes, signed)."""
    from torchvision.transforms import TrivialAugmentWide

    return TrivialAugmentWide(num_magnitude_bins=num_bins)._augmentation_space(num_bins)


class BatchTrivialAugmentWide(nn.Module):
    """TrivialAugmentWide drawn independently for every image of a uint8 batch (B, 3, H, W), on its device.

    Per image, as torchvision's `TrivialAugmentWide` per call: one of its 14 ops uniformly, one of
    `num_magnitude_bins` magnitudes uniformly, a random sign for the signed ops; nearest
    interpolation and a black fill for the geometric ops. `uniforms` (B, 3) are the op, the bin
    and the sign draws. Each op equals torchvision's tensor kernel applied to that image alone
    (within one grey level for the blends, whose uint8 results torchvision truncates).
    """

    num_uniforms = 3
    GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
    BLENDS = ("Brightness", "Color", "Contrast", "Sharpness")

    def __init__(self, num_magnitude_bins: int = 31):
        super().__init__()
        space = _trivial_augment_space(num_magnitude_bins)
        self.op_names = tuple(space)
        self.num_magnitude_bins = num_magnitude_bins
        table = torch.zeros(len(space), num_magnitude_bins, dtype=torch.float64)  # (ops, bins)
        for k, (magnitudes, _) in enumerate(space.values()):
            table[k] = magnitudes.double()  # ops without a magnitude (Identity, ...) hold 0.0
        self.register_buffer("magnitudes", table, persistent=False)
        signed = torch.tensor([is_signed for _, is_signed in space.values()])
        self.register_buffer("signed", signed, persistent=False)

    def sample(self, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(op index (B,), signed magnitude (B,) float64) from uniforms (B, 3)."""
        num_ops, num_bins = self.magnitudes.shape
        op = (uniforms[:, 0] * num_ops).long().clamp(max=num_ops - 1)
        magnitude_bin = (uniforms[:, 1] * num_bins).long().clamp(max=num_bins - 1)
        magnitude = self.magnitudes[op, magnitude_bin]
        negative = self.signed[op] & (uniforms[:, 2] < 0.5)
        return op, torch.where(negative, -magnitude, magnitude)

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None, uniforms: torch.Tensor | None = None
    ) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise BadType(f"expected uint8 RGB images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        u = draw_uniforms(uniforms, images.shape[0], self.num_uniforms, generator, images.device)
        op, magnitude = self.sample(u)
        return self.apply_ops(images, op, magnitude)

    def apply_ops(self, images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """Image i through op `op_names[op[i]]` with `magnitude[i]`; every op is exact identity elsewhere."""
        import torchvision.transforms.v2.functional as F2

        def chose(*names: str) -> torch.Tensor:  # (B, 1, 1, 1) bool: the images that drew one of `names`
            wanted = torch.tensor([self.op_names.index(n) for n in names], device=op.device)
            return torch.isin(op, wanted)[:, None, None, None]

        x = images
        x = torch.where(chose(*self.GEOMETRIC), self._affine(x, op, magnitude), x)
        x = torch.where(chose(*self.BLENDS), self._blend(x, op, magnitude), x)
        posterize = chose("Posterize")[:, 0, 0, 0]
        bits = torch.where(posterize, magnitude, 8.0).long()  # (B,): 8 keeps every bit
        mask = ((255 << (8 - bits)) & 255).to(torch.uint8)[:, None, None, None]  # the top `bits` bits
        x = x & mask
        threshold = torch.where(chose("Solarize"), magnitude[:, None, None, None], 256.0)  # 256: nothing inverted
        x = torch.where(x >= threshold, 255 - x, x)
        x = torch.where(chose("AutoContrast"), F2.autocontrast(x), x)
        return torch.where(chose("Equalize"), F2.equalize(x), x)

    def _blend(self, x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """Brightness, colour, contrast, sharpness: f x + (1 - f) degenerate, torchvision's `_blend` per image."""
        import torchvision.transforms.v2.functional as F2

        index = {name: self.op_names.index(name) for name in self.BLENDS}
        per_image = lambda t: t[:, None, None, None]  # (B,) -> (B, 1, 1, 1)
        factor = 1.0 + magnitude  # float64, as torchvision's Python float
        ratio, alpha = per_image(factor.float()), per_image((1.0 - factor).float())
        image = x.float()
        gray = F2.rgb_to_grayscale(x).float()  # floor(0.2989 R + 0.587 G + 0.114 B), (B, 1, H, W)
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)  # (B, 1, 1, 1): contrast blends towards it
        blurred = F2.adjust_sharpness(x, 0.0).float()  # the 3 x 3 smoothed image, borders kept
        degenerate = torch.where(per_image(op == index["Brightness"]), 0.0, gray)
        degenerate = torch.where(per_image(op == index["Contrast"]), mean, degenerate)
        degenerate = torch.where(per_image(op == index["Sharpness"]), blurred, degenerate)
        out = image * ratio + degenerate * alpha
        return out.clamp(0, 255).to(torch.uint8)  # truncation, as torchvision's uint8 kernels

    def _affine(self, x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """Shear, translate, rotate: torchvision's inverse affine matrix per image, one nearest grid_sample."""
        batch_size, _, height, width = x.shape
        zero = torch.zeros_like(magnitude)
        is_op = lambda name: op == self.op_names.index(name)
        shear = torch.rad2deg(torch.atan(magnitude))  # torchvision shears by atan(magnitude) degrees
        shear_x = torch.where(is_op("ShearX"), shear, zero)
        shear_y = torch.where(is_op("ShearY"), shear, zero)
        translate_x = torch.where(is_op("TranslateX"), magnitude.trunc(), zero)  # int(magnitude) pixels
        translate_y = torch.where(is_op("TranslateY"), magnitude.trunc(), zero)
        angle = torch.where(is_op("Rotate"), -magnitude, zero)  # F.rotate passes -angle to the matrix
        # F.affine's shears are about the pixel (0, 0), i.e. (-W/2, -H/2) from the centre; the rest about the centre.
        is_shear = is_op("ShearX") | is_op("ShearY")
        center_x = torch.where(is_shear, -0.5 * width, zero)
        center_y = torch.where(is_shear, -0.5 * height, zero)
        theta = inverse_affine_matrices(angle, translate_x, translate_y, shear_x, shear_y, center_x, center_y)
        grid = affine_grid(theta.float(), height, width)  # (B, H, W, 2)
        out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return out.round().to(torch.uint8)


def inverse_affine_matrices(angle, translate_x, translate_y, shear_x, shear_y, center_x, center_y) -> torch.Tensor:
    """(B, 2, 3) output -> input pixel maps: torchvision's `_get_inverse_affine_matrix` (scale 1), batched.

    Angles and shears in degrees, the centre relative to the image centre, as torchvision's tensor ops take them.
    """
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a  # the inverse of [[a, b], [c, d]] (determinant 1)
    m2 = m0 * (-center_x - translate_x) + m1 * (-center_y - translate_y) + center_x
    m5 = m3 * (-center_x - translate_x) + m4 * (-center_y - translate_y) + center_y
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).reshape(-1, 2, 3)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`grid_sample` coordinates (B, H, W, 2) of pixel maps `theta` (B, 2, 3): torchvision's `_gen_affine_grid`."""
    device = theta.device
    base = torch.empty(1, height, width, 3, dtype=theta.dtype, device=device)
    base[..., 0].copy_(torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, steps=width, device=device))
    base[..., 1].copy_(torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, steps=height, device=device)[:, None])
    base[..., 2].fill_(1)
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=theta.dtype, device=device)
    rescaled = theta.transpose(1, 2) / scale  # (B, 3, 2): pixel offsets -> [-1, 1] coordinates
    grid = base.view(1, height * width, 3).expand(theta.shape[0], -1, -1).bmm(rescaled)  # (B, H * W, 2)
    return grid.view(-1, height, width, 2)


class DevicePadCropAugment(nn.Module):
    """The from-scratch CIFAR augmentation on a uint8 batch: padded crop, flip, TrivialAugmentWide, resize, normalise.

    The same steps as `vitlab.data.build_transforms("strong" | "basic", ...)` on PIL images:
    `RandomCrop(H, padding=4, padding_mode="reflect")`, `RandomHorizontalFlip()`, with
    `trivial_augment` also `TrivialAugmentWide()` (per image, `BatchTrivialAugmentWide`), a
    bilinear antialiased resize to `img_size` when it differs, then (x / 255 - mean) / std.
    Returns float32 (B, 3, img_size, img_size).
    """

    def __init__(
        self,
        img_size: int,
        trivial_augment: bool = True,
        padding: int = 4,
        mean: float | Sequence[float] = GOOGLE_MEAN,
        std: float | Sequence[float] = GOOGLE_STD,
        num_magnitude_bins: int = 31,
    ):
        super().__init__()
        self.img_size, self.padding, self.mean, self.std = img_size, padding, mean, std
        self.trivial_augment = BatchTrivialAugmentWide(num_magnitude_bins) if trivial_augment else None
        self.num_uniforms = 3 + (BatchTrivialAugmentWide.num_uniforms if trivial_augment else 0)

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None, uniforms: torch.Tensor | None = None
    ) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise BadType(f"expected uint8 images (B, 3, H, W), got {images.dtype}")
        batch_size, _, height, width = images.shape
        u = draw_uniforms(uniforms, batch_size, self.num_uniforms, generator, images.device)
        x = pad_crop_flip(images, self.padding, u[:, :3])  # (B, 3, H, W) uint8
        if self.trivial_augment is not None:
            x = self.trivial_augment(x, uniforms=u[:, 3:])
        x = normalize(x.to(torch.float32), self.mean, self.std, 255.0)
        if (height, width) == (self.img_size, self.img_size):
            return x
        box = torch.tensor([0, 0, height, width], device=images.device).expand(batch_size, 4)
        return resized_crop(x, box, self.img_size)  # (B, 3, S, S), PIL's antialiased bilinear weights

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, padding={self.padding}, trivial_augment={self.trivial_augment is not None}"


# The recipes of configs.AUGMENTATIONS done on the device, keyed by their steps: f(img_size, mean=, std=) -> module.
DEVICE_VERSIONS = {
    ("inception_crop", "flip"): DeviceAugment,
    ("pad_crop", "flip", "trivial_augment"): partial(DevicePadCropAugment, trivial_augment=True),
    ("pad_crop", "flip"): partial(DevicePadCropAugment, trivial_augment=False),
    (): DeviceEvalTransform,
}


class DeviceBatches:
    """Endless (images, labels) micro-batches from uint8 images kept on the device and augmented there.

    `keys` yields (position in the sample stream, dataset index) pairs, e.g. the trainer's
    `StepSampler`, whose optimiser step s covers positions [s * global_batch, (s + 1) * global_batch).
    The augmentation's random numbers are drawn for the whole step from a generator seeded by
    (seed, s), one row per position, and each micro-batch takes the rows of its positions: a
    sample's augmentation depends only on (seed, its position), so a resumed run, and a run split
    over processes or accumulation passes, draws exactly the augmentation of one uninterrupted
    single-process run. `global_batch` defaults to `batch_size` (every micro-batch a step).
    """

    def __init__(self, images, labels, keys, batch_size: int, augment: nn.Module, seed: int, device,
                 global_batch: int | None = None):  # fmt: skip
        self.device = torch.device(device)
        self.images, self.labels = images.to(self.device), labels.to(self.device)  # the whole set, once
        self.keys, self.batch_size, self.augment, self.seed = iter(keys), batch_size, augment, seed
        self.global_batch = global_batch or batch_size
        self.generator = torch.Generator(self.device)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        positions, indices = zip(*(next(self.keys) for _ in range(self.batch_size)))
        step = positions[0] // self.global_batch
        if positions[-1] // self.global_batch != step:
            raise ValueError(f"micro-batch positions {positions[0]}..{positions[-1]} span two global batches")
        index = torch.tensor(indices).to(self.device, non_blocking=True)  # (B,)
        uniforms = None
        if self.augment.num_uniforms:
            self.generator.manual_seed((self.seed * 1_000_000_007 + step) % 2**63)
            shape = (self.global_batch, self.augment.num_uniforms)
            every = torch.rand(shape, generator=self.generator, device=self.device)
            rows = torch.tensor(positions).to(self.device, non_blocking=True) - step * self.global_batch
            uniforms = every[rows]  # (B, num_uniforms): the rows of this micro-batch's positions
        return self.augment(self.images[index], uniforms=uniforms), self.labels[index]


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
        raise BadType(
            f"{type(dataset).__name__} has no CIFAR-style uint8 `.data` array (N, H, W, 3) and `.targets` "
            "list: pass a torchvision CIFAR10/CIFAR100 dataset or a subset of one, or use the PIL transforms"
        )
    images = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.long)  # (N,)
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return images, labels
