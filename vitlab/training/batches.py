"""The order of the training images: an endless, seeded stream of micro-batches.

Steps, not epochs: global batch s covers stream positions [s * G, (s + 1) * G) of a stream that
walks a fresh permutation of the training set every epoch. Every sample's augmentation is seeded by
its position, so a resumed run and a multi-process run see exactly the images of one uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vitlab.augment import DEVICE_VERSIONS, DeviceBatches, uint8_cifar
from vitlab.configs import AUGMENTATIONS, VITConfig
from vitlab.errors import BadType, BadValue
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
            raise BadValue("the training set is empty")
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
    """Reads key (position, index) with the torch RNG seeded by (seed, position): reproducible augmentation.

    Labels are checked as they are read: class indices, below `num_classes` when it is given.
    """

    def __init__(self, dataset: Dataset, seed: int, num_classes: int | None = None):
        self.dataset, self.seed, self.num_classes = dataset, seed, num_classes

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
        return image, class_index(label, index, self.num_classes)


def class_index(label, index: int | str, num_classes: int | None = None, split: str = "training") -> int:
    """A sample's label as a class index; anything else (a name, a float, None, < 0, >= num_classes) is an
    error naming the sample and the class count."""
    if isinstance(label, (torch.Tensor, np.ndarray)) and label.ndim == 0:
        label = label.item()  # an integer tensor becomes an int, a float one a float (refused below)
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and label >= 0:
        if num_classes is not None and label >= num_classes:
            raise BadValue(
                f"{split} sample {index} has label {label}, but the data have {num_classes} classes (labels 0 to "
                f"{num_classes - 1}): fix the sample's label, or train a model with more classes"
            )
        return int(label)
    raise BadValue(
        f"{split} sample {index} has label {label!r} ({type(label).__name__}): labels must be class indices "
        "0, 1, ..., num_classes - 1 (map class names to indices first)"
    )


def known_labels(dataset: Dataset) -> tuple[list, list[int] | None, Dataset] | None:
    """(labels, their indices in the underlying dataset or None, that dataset) when `dataset` keeps its labels
    beside the images (`targets`: CIFAR, image folders, and subsets of them), read without an image; else None."""
    indices = None
    while hasattr(dataset, "indices") and (hasattr(dataset, "dataset") or hasattr(dataset, "base")):
        outer = list(dataset.indices)
        indices = outer if indices is None else [outer[i] for i in indices]
        dataset = dataset.dataset if hasattr(dataset, "dataset") else dataset.base
    targets = getattr(dataset, "targets", None)
    if targets is None or getattr(dataset, "target_transform", None) is not None:
        return None  # labels computed on reading: they are checked as samples are read
    targets = list(targets)
    return (targets if indices is None else [targets[i] for i in indices]), indices, dataset


def check_dataset_labels(dataset: Dataset | None, num_classes: int, split: str) -> None:
    """Labels kept beside the images are class indices below `num_classes`, checked before the run starts."""
    known = known_labels(dataset) if dataset is not None else None
    if not known or not known[0]:
        return
    labels, indices, base = known
    array = np.asarray(labels)
    if array.ndim == 1 and array.dtype.kind in "iu":  # the usual case, a list of ints: checked at once
        bad = [int(i) for i in np.flatnonzero((array < 0) | (array >= num_classes))[:1]]
    else:
        bad = [i for i, label in enumerate(labels) if not _is_index(label, num_classes)][:1]
    if not bad:
        return
    index = bad[0]
    class_index(labels[index], f"{index}{_sample_file(base, indices[index] if indices else index)}", num_classes, split)


def _sample_file(base: Dataset, index: int) -> str:
    """Where sample `index` of `base` comes from, for a message: " (its file)" or ""."""
    samples, root, folder = (
        getattr(base, "samples", None),
        getattr(base, "root", None),
        getattr(base, "base_folder", ""),
    )
    if isinstance(samples, list) and index < len(samples):  # an image folder: the file itself
        return f" ({samples[index][0]})"
    if root is not None:  # CIFAR: the position in its batch files
        return f" (image {index} of the files in {Path(root) / folder})"
    return ""


def _is_index(label, num_classes: int) -> bool:
    try:
        class_index(label, 0, num_classes)
    except ValueError:
        return False
    return True


def check_data(cfg: VITConfig, train_set, val_set, test_set, class_names: list[str], model, given=False) -> None:
    """What the run will read, checked before anything is written: a training set to learn from, at least two
    classes, labels that are class indices (where they are kept beside the images), the first sample's shape.
    `given`: the caller's datasets, not those of `cfg.dataset`."""
    where = f"the image folders in {cfg.data_dir}" if cfg.dataset == "folder" else f"the {cfg.dataset} data"
    where = "the training data" if given else where
    if len(train_set) == 0:
        total = len(train_set) + (len(val_set) if val_set is not None else 0)
        if cfg.val_split > 0 and val_set is not None and total:
            raise BadValue(
                f"the training set is empty: --val_split {cfg.val_split} holds out {len(val_set)} of the {total} "
                f"image(s) of {where} for validation, which leaves none to train on; lower --val_split or add images"
            )
        raise BadValue("the training set is empty (0 samples): give a training set with at least one sample")
    for name, dataset in (("validation", val_set), ("test", test_set)):
        if dataset is not None and len(dataset) == 0:
            raise BadValue(f"the {name} set is empty (0 samples): give one with samples, or None to do without")
    if len(class_names) < 2:
        found = f"one class ({class_names[0]})" if class_names else "no class"
        raise BadValue(
            f"{where} have {found}: a classifier cannot learn anything from one class (its loss is 0 from the "
            "first step); give at least two classes (one folder per class for image folders)"
        )
    for split, dataset in (("training", train_set), ("validation", val_set), ("test", test_set)):
        check_dataset_labels(dataset, len(class_names), split)
    check_first_sample(train_set, cfg.seed, len(class_names), model)


def check_first_sample(dataset: Dataset, seed: int, num_classes: int, model) -> None:
    """The first training sample as the loop will read it: an image tensor of the shape the model takes."""
    image, _ = SeededSamples(dataset, seed, num_classes)[(0, 0)]  # the RNG is left as it was
    model_cfg = getattr(model, "cfg", None)
    channels, size = getattr(model_cfg, "in_chans", None), getattr(model_cfg, "img_size", None)
    if not isinstance(image, torch.Tensor):
        raise BadType(
            f"training sample 0 is a {type(image).__name__}, not an image tensor: give the dataset a transform "
            "that makes tensors, e.g. torchvision.transforms.ToTensor()"
        )
    expected = (channels, size, size)
    if None in expected or tuple(image.shape) == expected:  # without a ModelConfig, the model's forward checks
        return
    shape = tuple(image.shape)
    hint = f"resize the images to {size} x {size}, or build the model for them"
    if image.ndim == 3 and shape[-1] == channels and shape[0] != channels:
        hint = "it looks like (height, width, channels): put channels first with image.permute(2, 0, 1)"
    elif image.ndim == 4 and shape[0] == 1:
        hint = "each sample is one image, not a batch of one: drop the first dimension"
    raise BadValue(
        f"training sample 0 is an image of shape {shape}, but the model takes (channels, height, width) = "
        f"{expected}: {hint}"
    )


def step_sampler(cfg: VITConfig, num_samples: int, micro: int, processes: Distributed, start_step: int) -> StepSampler:
    """The run's stream of training samples, as this process takes it from optimiser step `start_step` on."""
    accumulation, rank, world = cfg.gradient_accumulation_steps, processes.rank, processes.world_size
    return StepSampler(num_samples, micro, accumulation, rank, world, cfg.seed, start_step)


def build_train_loader(
    cfg: VITConfig,
    dataset: Dataset,
    micro: int,
    processes: Distributed,
    start_step: int,
    num_classes: int | None = None,
):
    """Endless DataLoader of micro-batches for this process, starting at optimiser step `start_step`."""
    sampler = step_sampler(cfg, len(dataset), micro, processes, start_step)
    workers = data_workers(cfg.num_workers)  # never more than the cores: each sample's seed, not the worker, decides
    return DataLoader(
        SeededSamples(dataset, cfg.seed, num_classes),
        batch_size=micro,
        sampler=sampler,
        num_workers=workers,
        pin_memory=processes.device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),  # worker seeds must not draw from the global RNG
    )


def build_device_batches(
    cfg: VITConfig,
    dataset: Dataset,
    micro: int,
    processes: Distributed,
    start_step: int,
    num_classes: int | None = None,
):
    """`cfg.device_augment`: the same stream of samples, augmented on the device from a uint8 copy of CIFAR."""

    images, labels = uint8_cifar(dataset)
    if num_classes is not None:
        check_dataset_labels(dataset, num_classes, "training")
    sampler = step_sampler(cfg, len(labels), micro, processes, start_step)
    from vitlab.data import image_normalization  # imported here: vitlab.data loads torchvision

    mean, std = image_normalization(cfg)  # the model's input normalisation, as for the PIL transforms
    augment = DEVICE_VERSIONS[AUGMENTATIONS[cfg.augment]](cfg.img_size, mean=mean, std=std)
    # Random draws per optimiser step, one row per stream position: independent of how the step is split.
    return DeviceBatches(
        images,
        labels,
        sampler,
        micro,
        augment.to(processes.device),
        cfg.seed,
        processes.device,
        global_batch=sampler.global_batch,
    )


def prepare_batch(batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on the device (a no-op for `build_device_batches`, whose batches are there already)."""
    images, labels = batch
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
