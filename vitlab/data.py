"""Data: CIFAR-10/100 through torchvision, the transforms, the validation split, synthetic CIFAR files.

Images are normalised with the mean and std of the run's model (`ModelConfig.image_mean/std`):
[-1, 1] (Normalize(0.5, 0.5)) as in Google's ViT code for most presets, ImageNet's statistics for
weights trained with them (MAE's ViT-B/16, torchvision's). The validation split is carved out of the training set with a
seeded permutation and uses the test transforms; the test set is only for the final number.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from vitlab.configs import AUGMENTATIONS, DATASET_NAMES, VITConfig, get_model_config
from vitlab.weights.files import atomic_write

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SYNTHETIC_MARKER = "SYNTHETIC.txt"  # written beside synthetic batches so they are never taken for the real files
MEAN = STD = (0.5, 0.5, 0.5)  # scales [0, 1] to [-1, 1], the input range of Google's checkpoints

_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", datasets.CIFAR10),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", datasets.CIFAR100),
}


# --- transforms ----------------------------------------------------------------------------------
def image_normalization(cfg: VITConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the run's model: its preset's `image_mean/std`, or those in `cfg.model_overrides`."""
    model_cfg = get_model_config(cfg.model_type, **cfg.model_overrides)
    return model_cfg.image_mean, model_cfg.image_std


def build_transforms(
    augment: str, img_size: int, train: bool, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD
) -> transforms.Compose:
    """PIL image -> (tensor - mean) / std at `img_size` ([-1, 1] by default); `train=False`: resize only."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; valid names: {', '.join(AUGMENTATIONS)}")
    to_tensor = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    resize = [transforms.Resize((img_size, img_size))] if img_size != 32 else []
    if not train or augment == "none":
        return transforms.Compose(resize + to_tensor)
    if augment == "finetune":
        # Inception crop with area (0.05, 1) and a flip: Google's fine-tuning augmentation.
        crop = [transforms.RandomResizedCrop(img_size, scale=(0.05, 1.0)), transforms.RandomHorizontalFlip()]
        return transforms.Compose(crop + to_tensor)
    # Random crop with 4 px padding and a flip, the standard CIFAR augmentation, at 32 x 32 first.
    crop = [transforms.RandomCrop(32, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip()]
    strong = [transforms.TrivialAugmentWide()] if augment == "strong" else []
    return transforms.Compose(crop + strong + resize + to_tensor)


class TransformedSubset(Dataset):
    """Samples `indices` of `base` (which returns PIL images) through `transform`."""

    def __init__(self, base: Dataset, indices, transform):
        self.base = base
        self.indices = [int(i) for i in indices]
        self.transform = transform
        self.classes = list(getattr(base, "classes", []))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.base[self.indices[index]]
        return self.transform(image), int(label)


def split_indices(num_samples: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded (train, val) split of range(num_samples); val gets round(val_fraction * num_samples)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_fraction}")
    permutation = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed)).tolist()
    num_val = round(val_fraction * num_samples)
    return sorted(permutation[num_val:]), sorted(permutation[:num_val])


# --- CIFAR through torchvision --------------------------------------------------------------------
class _SyntheticCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without the checksums of the real files (synthetic batches)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


def load_cifar(name: str, root: str | os.PathLike, train: bool, download: bool = True) -> datasets.CIFAR10:
    """torchvision's CIFAR-10 or CIFAR-100 split from `root` (downloaded when missing), images as PIL."""
    if name not in _ARCHIVES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    archive, folder, reader = _ARCHIVES[name]
    root = Path(root)
    if (root / folder / SYNTHETIC_MARKER).is_file():
        return _SyntheticCIFAR10(root, train=train, download=False)
    try:
        return reader(root, train=train, download=download)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        url = reader.url
        raise FileNotFoundError(
            f"{name} is not in {root} and could not be downloaded ({type(error).__name__}: {error}). "
            f"Fetch {url} and put {archive} in {root}/ (or extract it so that {root / folder}/ exists), "
            "or train offline with --dataset synthetic"
        ) from error


def synthetic_root(data_dir: str | os.PathLike) -> Path:
    """Where `dataset="synthetic"` keeps its CIFAR-format files, written on first use."""
    root = Path(data_dir) / "synthetic"
    if not (root / "cifar-10-batches-py" / SYNTHETIC_MARKER).is_file():
        write_synthetic_cifar(root)
    return root


def _source(cfg: VITConfig) -> tuple[str, Path]:
    """(torchvision dataset name, root folder) behind `cfg.dataset`."""
    if cfg.dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; valid names: {', '.join(DATASET_NAMES)}")
    if cfg.dataset == "synthetic":
        return "cifar10", synthetic_root(cfg.data_dir)
    return cfg.dataset, Path(cfg.data_dir)


def num_classes(cfg: VITConfig) -> int:
    """How many classes `cfg.dataset` has, known before any file is read (the trainer builds the model first)."""
    if cfg.dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; valid names: {', '.join(DATASET_NAMES)}")
    return {"cifar10": 10, "cifar100": 100, "synthetic": 10}[cfg.dataset]


def build_datasets(cfg: VITConfig) -> tuple[Dataset, Dataset | None, Dataset, list[str]]:
    """(train, val, test, class_names) for `cfg.dataset`, with the transforms of `cfg.augment`.

    Images are normalised as the model expects (`image_normalization(cfg)`).
    """
    name, root = _source(cfg)
    base_train = load_cifar(name, root, train=True)
    base_test = load_cifar(name, root, train=False)
    train_indices, val_indices = split_indices(len(base_train), cfg.val_split, cfg.seed)
    mean, std = image_normalization(cfg)
    test_transform = build_transforms(cfg.augment, cfg.img_size, train=False, mean=mean, std=std)
    train_transform = build_transforms(cfg.augment, cfg.img_size, train=True, mean=mean, std=std)
    train_set = TransformedSubset(base_train, train_indices, train_transform)
    val_set = TransformedSubset(base_train, val_indices, test_transform) if val_indices else None
    test_set = TransformedSubset(base_test, range(len(base_test)), test_transform)
    return train_set, val_set, test_set, list(base_train.classes)


def build_test_set(cfg: VITConfig) -> tuple[Dataset, list[str]]:
    """The test split of `cfg.dataset` with the test transform at `cfg.img_size`, normalised for the model."""
    name, root = _source(cfg)
    base = load_cifar(name, root, train=False)
    mean, std = image_normalization(cfg)
    transform = build_transforms("none", cfg.img_size, train=False, mean=mean, std=std)
    return TransformedSubset(base, range(len(base)), transform), list(base.classes)


# --- synthetic CIFAR-10 ---------------------------------------------------------------------------
# Class k is one shape in one colour; position, size, background and noise vary per image.
_SHAPES = ("square", "disc", "triangle", "cross", "hbar", "vbar", "ring", "diamond", "x", "checker")
_COLOURS = np.array(
    [
        [230, 40, 40],
        [40, 200, 40],
        [50, 80, 230],
        [240, 220, 40],
        [220, 60, 220],
        [40, 220, 220],
        [250, 140, 20],
        [140, 60, 200],
        [245, 245, 245],
        [120, 80, 30],
    ],
    dtype=np.float32,
)


def _shape_masks(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 32, 32) boolean masks: shape `labels[i]` at a random centre and size."""
    n = len(labels)
    centre = rng.uniform(11, 21, size=(n, 2, 1, 1)).astype(np.float32)
    radius = rng.uniform(6, 10, size=(n, 1, 1)).astype(np.float32)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    dy, dx = yy[None] - centre[:, 0], xx[None] - centre[:, 1]  # (N, 32, 32)
    ady, adx, dist = np.abs(dy), np.abs(dx), np.hypot(dy, dx)
    thin = radius / 3
    masks = np.stack(
        [
            (ady < radius) & (adx < radius),  # square
            dist < radius,  # disc
            (dy < radius) & (dy > -radius) & (adx < (dy + radius) / 2),  # triangle, apex up
            ((ady < thin) & (adx < radius)) | ((adx < thin) & (ady < radius)),  # cross
            (ady < thin) & (adx < radius * 1.3),  # horizontal bar
            (adx < thin) & (ady < radius * 1.3),  # vertical bar
            (dist < radius) & (dist > radius * 0.55),  # ring
            (ady + adx) < radius * 1.2,  # diamond
            ((np.abs(dy - dx) < thin) | (np.abs(dy + dx) < thin)) & (ady < radius) & (adx < radius),  # x
            ((np.floor(dy / 3) + np.floor(dx / 3)) % 2 == 0) & (ady < radius) & (adx < radius),  # checker
        ]
    )  # (10, N, 32, 32)
    return masks[labels, np.arange(n)]


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 32, 32, 3) uint8 images of the classes `labels`: coloured shapes on noisy backgrounds."""
    n = len(labels)
    background = rng.uniform(0, 110, size=(n, 1, 1, 3)) + rng.normal(0, 20, size=(n, 32, 32, 3))
    colour = _COLOURS[labels][:, None, None, :] * rng.uniform(0.8, 1.0, size=(n, 1, 1, 1))
    masks = _shape_masks(labels, rng)[..., None]  # (N, 32, 32, 1)
    images = np.where(masks, colour + rng.normal(0, 12, size=(n, 32, 32, 3)), background)
    return np.clip(images, 0, 255).astype(np.uint8)


def _write_pickle(path: Path, entry: dict) -> None:
    with atomic_write(path) as f:
        pickle.dump(entry, f, protocol=2)  # the real files are Python 2 pickles


def _batch_entry(images: np.ndarray, labels: np.ndarray, batch_label: str, offset: int) -> dict:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)  # (N, 3072): R plane, G plane, B plane
    filenames = [f"synthetic_{_SHAPES[label]}_{offset + i:05d}.png" for i, label in enumerate(labels)]
    return {"batch_label": batch_label, "labels": [int(x) for x in labels], "data": data, "filenames": filenames}


def write_synthetic_cifar(root: str | os.PathLike, num_train: int = 5000, num_test: int = 1000, seed: int = 0) -> Path:
    """Write `root/cifar-10-batches-py/` in the real CIFAR-10 pickle layout with learnable synthetic classes."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_labels = rng.permutation(np.arange(num_train) % 10)  # balanced classes, shuffled
    test_labels = rng.permutation(np.arange(num_test) % 10)
    train_images, test_images = synthetic_images(train_labels, rng), synthetic_images(test_labels, rng)
    chunks = np.array_split(np.arange(num_train), 5)
    for number, chunk in enumerate(chunks, start=1):
        entry = _batch_entry(train_images[chunk], train_labels[chunk], f"training batch {number} of 5", int(chunk[0]))
        _write_pickle(folder / f"data_batch_{number}", entry)
    _write_pickle(folder / "test_batch", _batch_entry(test_images, test_labels, "testing batch 1 of 1", 0))
    meta = {"num_cases_per_batch": len(chunks[0]), "label_names": list(CIFAR10_CLASSES), "num_vis": 3 * 32 * 32}
    _write_pickle(folder / "batches.meta", meta)
    digest = hashlib.sha256(train_images.tobytes()).hexdigest()[:16]
    (folder / SYNTHETIC_MARKER).write_text(
        "Synthetic stand-in for CIFAR-10 written by vitlab.data.write_synthetic_cifar "
        f"(seed {seed}, {num_train} train / {num_test} test images, digest {digest}).\n"
        f"Class k is a {', '.join(_SHAPES)} shape (in that order) with its own colour; "
        "the label names are CIFAR-10's so code written for CIFAR-10 runs unchanged.\n"
    )
    return folder
