"""Synthetic CIFAR-10: files in CIFAR-10's pickle layout whose classes are coloured shapes, for offline runs and tests.

Class k is one shape in one colour; position, size, background and noise vary per image, so a small ViT learns
them in seconds. The label names are CIFAR-10's, so code written for CIFAR-10 runs unchanged.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

from vitlab.files import atomic_write

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SYNTHETIC_MARKER = "SYNTHETIC.txt"  # written beside synthetic batches so they are never taken for the real files

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
    with atomic_write(folder / SYNTHETIC_MARKER, "w") as f:  # written last: its presence says the files are whole
        f.write(
            "Synthetic stand-in for CIFAR-10 written by vitlab.data.write_synthetic_cifar "
            f"(seed {seed}, {num_train} train / {num_test} test images, digest {digest}).\n"
            f"Class k is a {', '.join(_SHAPES)} shape (in that order) with its own colour; "
            "the label names are CIFAR-10's so code written for CIFAR-10 runs unchanged.\n"
        )
    return folder
