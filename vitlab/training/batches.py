"""The order of the training images: an endless, seeded stream of micro-batches.

Steps, not epochs: global batch s covers stream positions [s * G, (s + 1) * G) of a stream that
walks a fresh permutation of the training set every epoch. Every sample's augmentation is seeded by
its position, so a resumed run and a multi-process run see exactly the images of one uninterrupted run.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vitlab.augment import DeviceAugment, DeviceBatches, DeviceEvalTransform, DevicePadCropAugment, uint8_cifar
from vitlab.configs import VITConfig
from vitlab.training.devices import Distributed, data_workers


class StepSampler(Sampler):
    """An endless stream of (position, index) keys: epoch e is randperm(N) seeded by (seed, e).

    Global batch s covers stream positions [s * G, (s + 1) * G); accumulation pass a of process r
    takes its slice [(a * world + r) * micro, ...). The stream starts at `start_step`, so resuming
    and sharding give the same images as one uninterrupted process.
    """

    def __init__(self, num_samples: int, micro_batch: int, accumulation: int, rank: int, world_size: int, seed: int,
                 start_step: int = 0):  # fmt: skip
        if num_samples == 0:
            raise ValueError("the training set is empty")
        self.num_samples, self.micro, self.accumulation = num_samples, micro_batch, accumulation
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step
        self.global_batch = micro_batch * accumulation * world_size

    def permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def positions(self, first: int, count: int):
        """(position, dataset index) for stream positions first .. first + count - 1."""
        epoch, perm = -1, None
        for position in range(first, first + count):
            if position // self.num_samples != epoch:
                epoch = position // self.num_samples
                perm = self.permutation(epoch)
            yield position, perm[position % self.num_samples]

    def __iter__(self):
        step = self.start_step
        while True:
            batch = list(self.positions(step * self.global_batch, self.global_batch))
            for accumulation_pass in range(self.accumulation):
                start = (accumulation_pass * self.world_size + self.rank) * self.micro
                yield from batch[start : start + self.micro]
            step += 1


class SeededSamples(Dataset):
    """Reads key (position, index) with the torch RNG seeded by (seed, position): reproducible augmentation."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        position, index = key
        # torchvision's random transforms draw from torch's CPU generator: seeding that one alone is
        # enough, and costs a microsecond where torch.manual_seed (every backend: CUDA, XPU, MTIA, ...)
        # costs 0.1-1.5 ms. Its state is put back, so the caller's RNG (dropout) stays untouched.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed((self.seed * 1_000_000_007 + position) % 2**63)
        try:
            image, label = self.dataset[index]
        finally:
            generator.set_state(state)
        return image, class_index(label, index)


def class_index(label, index: int) -> int:
    """A sample's label as a class index; anything else (a name, a float, None, < 0) is an error naming it."""
    if isinstance(label, (torch.Tensor, np.ndarray)) and label.ndim == 0:
        label = label.item()  # an integer tensor becomes an int, a float one a float (refused below)
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and label >= 0:
        return int(label)
    raise ValueError(
        f"training sample {index} has label {label!r} ({type(label).__name__}): labels must be class indices "
        "0, 1, ..., num_classes - 1 (map class names to indices first)"
    )


def build_train_loader(cfg: VITConfig, dataset: Dataset, micro: int, env: Distributed, start_step: int):
    """Endless DataLoader of micro-batches for this process, starting at optimiser step `start_step`."""
    sampler = StepSampler(
        len(dataset), micro, cfg.gradient_accumulation_steps, env.rank, env.world_size, cfg.seed, start_step
    )
    workers = data_workers(cfg.num_workers)  # never more than the cores: each sample's seed, not the worker, decides
    return DataLoader(
        SeededSamples(dataset, cfg.seed),
        batch_size=micro,
        sampler=sampler,
        num_workers=workers,
        pin_memory=env.device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),  # worker seeds must not draw from the global RNG
    )


def build_device_batches(cfg: VITConfig, dataset: Dataset, micro: int, env: Distributed, start_step: int):
    """`cfg.device_augment`: the same stream of samples, augmented on the device from a uint8 copy of CIFAR."""

    images, labels = uint8_cifar(dataset)
    sampler = StepSampler(
        len(labels), micro, cfg.gradient_accumulation_steps, env.rank, env.world_size, cfg.seed, start_step
    )
    from vitlab.data import image_normalization  # imported here: vitlab.data loads torchvision

    mean, std = image_normalization(cfg)  # the model's input normalisation, as for the PIL transforms
    if cfg.augment == "finetune":
        augment = DeviceAugment(cfg.img_size, mean=mean, std=std)
    elif cfg.augment in ("strong", "basic"):  # padded crop and flip, "strong" adds TrivialAugmentWide
        augment = DevicePadCropAugment(cfg.img_size, trivial_augment=cfg.augment == "strong", mean=mean, std=std)
    else:
        augment = DeviceEvalTransform(cfg.img_size, mean=mean, std=std)
    # Random draws per optimiser step, one row per stream position: independent of how the step is split.
    return DeviceBatches(
        images, labels, sampler, micro, augment.to(env.device), cfg.seed, env.device, global_batch=sampler.global_batch
    )


def prepare_batch(batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on the device (a no-op for `build_device_batches`, whose batches are there already)."""
    images, labels = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
