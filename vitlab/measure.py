"""What the benchmark measures with: model FLOPs and GPU peaks, timed steps taken in turns, the input
pipelines' images/s, and the machine it ran on. `vitlab.bench` runs the measurements and reports them."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitlab.configs import ModelConfig
from vitlab.errors import BadValue
from vitlab.precision import autocast_context

# Dense bf16 tensor-core peaks in TFLOP/s (fp16 for GPUs without bf16), from NVIDIA's data sheets;
# the first name found in `torch.cuda.get_device_name()` wins, so the more specific ones come first.
PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "V100": 125.0,  # fp16
    "T4": 65.0,  # fp16
}


# --- FLOPs ---------------------------------------------------------------------------------------
def vit_flops(cfg: ModelConfig) -> int:
    """Forward FLOPs of one image (multiply-add = 2 FLOPs): weight matmuls, patch embedding and attention.

    Per encoder layer: 2 * T * (4 D^2 + 2 D M) for qkv, output projection and the MLP, plus
    2 * 2 * T^2 * D for Q K^T and probs @ V. The patch embedding is a matmul of N patches with a
    (P^2 C, D) matrix; the head multiplies one pooled vector. Biases, LayerNorm, GELU and softmax
    (a few FLOPs per element, under 1% for ViT-B) are left out, as in the usual MFU accounting.
    """
    if getattr(cfg, "resnet_layers", None):
        raise BadValue("vit_flops counts plain ViTs only: the hybrid's ResNet stem is not included")
    tokens = cfg.num_patches + (1 if cfg.class_token else 0)
    d, m = cfg.hidden_size, cfg.mlp_dim
    per_layer = 2 * tokens * (4 * d * d + 2 * d * m) + 2 * 2 * tokens * tokens * d
    patch_embed = 2 * cfg.num_patches * cfg.patch_size**2 * cfg.in_chans * d
    width = d
    head = 0
    if cfg.representation_size:
        head += 2 * d * cfg.representation_size
        width = cfg.representation_size
    head += 2 * width * cfg.num_classes
    return cfg.num_layers * per_layer + patch_embed + head


def forward_flops(model, img_size: int) -> int:
    """Forward FLOPs of one `img_size` image through any model (a ViT, the CNN), counted by PyTorch's
    FlopCounterMode: matmuls and convolutions, 2 FLOPs per multiply-add, in eval mode on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters())
    image = torch.zeros(1, getattr(model.cfg, "in_chans", 3), img_size, img_size, dtype=parameter.dtype)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image.to(parameter.device))
    model.train(was_training)
    return int(counter.get_total_flops())


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU, or None."""
    for name, peak in PEAK_TFLOPS.items():
        if name in device_name:
            return peak
    return None


# --- timing --------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_fn(model: nn.Module, device: torch.device, precision: str, compile: bool) -> Callable:
    """One training step (forward, loss, backward, SGD with momentum) on a fixed batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    forward = torch.compile(model) if compile else model

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        model.train()
        with autocast_context(device, precision):
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def inference_fn(model: nn.Module, device: torch.device, precision: str, compile: bool) -> Callable:
    """One forward pass in evaluation mode without autograd."""
    forward = torch.compile(model) if compile else model

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        model.eval()
        with torch.inference_mode(), autocast_context(device, precision):
            forward(images)

    return step


def time_steps(step: Callable, images, labels, steps: int, device: torch.device) -> float:
    """Seconds per call of `step`, averaged over `steps` calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(images, labels)
    synchronize(device)
    return (time.perf_counter() - start) / steps


def alternate(
    variants: dict[str, Callable], images, labels, *, repeats: int, steps: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per step of every variant, measured in turns: {name: [one figure per round]}."""
    for step in variants.values():
        for _ in range(warmup):
            step(images, labels)
    synchronize(device)
    seconds = {name: [] for name in variants}
    for _ in range(repeats):
        for name, step in variants.items():
            seconds[name].append(time_steps(step, images, labels, steps, device))
    return seconds


def trainer_seconds_per_step(cfg, model: nn.Module, warmup: int) -> float:
    """Median seconds between the training forward passes of `vitlab.train.train(cfg, model=model)` after `warmup`.

    The interval from one step's forward to the next covers everything the loop does per step:
    fetching and augmenting the batch, backward, clipping, the optimiser and scheduler, logging.
    Set-up before the first step and the evaluation after the last are outside every interval.
    """
    from vitlab.train import train

    stamps = []
    hook = model.register_forward_pre_hook(
        lambda module, args: stamps.append(time.perf_counter()) if module.training else None
    )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # each timed run's own lines would bury the table
            train(cfg, model=model)
    finally:
        hook.remove()
    intervals = np.diff(stamps[warmup:])
    return float(np.median(intervals))


def median_ratio(fast: list[float], slow: list[float]) -> float:
    """Median over rounds of slow / fast time: > 1 means `fast` is faster (a speed-up)."""
    return statistics.median(s / f for f, s in zip(fast, slow))


# --- the data pipelines --------------------------------------------------------------------------
class _UInt8Images(torch.utils.data.Dataset):
    """CIFAR's own __getitem__: a uint8 (H, W, 3) array to a PIL image, then the transform."""

    def __init__(self, data: np.ndarray, transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), 0


def pil_images_per_sec(
    data: np.ndarray, img_size: int, batch_size: int, batches: int, workers: int, augment: str = "finetune"
) -> float:
    """Images/s of the trainer's PIL transforms (`augment`) in DataLoader workers, after the first batch."""
    from vitlab.data import build_transforms

    # "finetune": inception crop (area 0.05-1), flip, to tensor, scale to [-1, 1]: what DeviceAugment
    # replaces; "strong": padded crop, flip, TrivialAugmentWide: what DevicePadCropAugment replaces.
    dataset = _UInt8Images(data, build_transforms(augment, img_size, train=True))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def device_images_per_sec(
    data: np.ndarray, img_size: int, batch_size: int, batches: int, device: torch.device, augment: str = "finetune"
) -> float:
    """Images/s of the device augmentation (`augment`) on a uint8 tensor on the device, random batches."""
    from vitlab.augment import DEVICE_VERSIONS
    from vitlab.configs import AUGMENTATIONS

    images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous().to(device)  # (N, 3, H, W) uint8
    generator = torch.Generator(device).manual_seed(0)
    augment = DEVICE_VERSIONS[AUGMENTATIONS[augment]](img_size).to(device)

    def batch():
        index = torch.randint(0, len(images), (batch_size,), generator=generator, device=device)
        return augment(images[index], generator)

    batch()  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(batches):
        batch()
    synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)


def machine_info(device: torch.device) -> dict:
    """Versions and hardware, for the record."""
    import timm
    import torchvision

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
