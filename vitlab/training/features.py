"""A linear probe's inputs: what the frozen backbone makes of every image, computed once and kept on disk.

A probe whose images nothing augments sees the same features in every epoch, so they are computed once before
the first step (`probe_on_fixed_features`). They are also kept in a cache file whose name is a hash of everything they
depend on: the backbone's weights and architecture, the precision, and the images themselves after their
transforms (hashed in a first, cheap pass that only decodes and resizes). A second probe on the same photos with
the same weights reads that file and starts training at once; any change to a photo, a weight, the image size,
the pooling or the precision gives another name, so a stale file is never read.

The cache folder is `$VITLAB_CACHE/features`, else `$XDG_CACHE_HOME/vitlab/features`, else
`~/.cache/vitlab/features`; deleting it only costs the next probe its feature pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from vitlab.configs import VITConfig
from vitlab.files import atomic_write
from vitlab.precision import autocast_context
from vitlab.training.devices import data_workers

CACHE_VERSION = 1  # part of every key: a change to what a cache file holds gives all files new names


def probe_on_fixed_features(cfg: VITConfig) -> bool:
    """A linear probe whose inputs nothing augments: the frozen backbone's features are computed once."""
    return cfg.freeze_backbone and cfg.augment == "none" and not (cfg.mixup_alpha or cfg.cutmix_alpha)


def cache_folder() -> Path:
    """Where feature files are kept (see the module docstring)."""
    if os.environ.get("VITLAB_CACHE"):
        return Path(os.environ["VITLAB_CACHE"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vitlab" / "features"


def _hash_tensor(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def backbone_key(model: torch.nn.Module, precision: str) -> hashlib._Hash:
    """A hash of what turns an image into features: every weight but the head's, the architecture, the precision."""
    digest = hashlib.sha256(f"vitlab features v{CACHE_VERSION} {precision}".encode())
    cfg = getattr(model, "cfg", None)
    if dataclasses.is_dataclass(cfg):
        fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "num_classes"}
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, value in sorted(model.state_dict().items()):
        if not name.startswith("head."):
            digest.update(name.encode())
            _hash_tensor(digest, value)
    return digest


def loader(dataset: Dataset, cfg: VITConfig) -> DataLoader:
    # Its own generator: creating the loader must not draw from the global RNG that dropout uses.
    generator = torch.Generator().manual_seed(0)
    workers = data_workers(cfg.num_workers)
    return DataLoader(dataset, batch_size=cfg.eval_batch_size, num_workers=workers, generator=generator)


def cache_key(model: torch.nn.Module, dataset: Dataset, cfg: VITConfig, precision: str) -> str:
    """The cache file's name: the backbone's hash extended by every image tensor and label of `dataset`."""
    digest = backbone_key(model, precision)
    for images, labels in loader(dataset, cfg):
        _hash_tensor(digest, images)
        _hash_tensor(digest, torch.as_tensor(labels))
    return digest.hexdigest()[:32]


PROGRESS_SECONDS = 60  # a line about the feature pass at least this often: it can take minutes on a CPU


@torch.no_grad()
def compute_features(
    model, dataset: Dataset, cfg: VITConfig, device, precision: str, say=None
) -> tuple[torch.Tensor, ...]:
    """(features, labels) of every image of `dataset`, on the CPU: what the head of the frozen `model` reads.

    `say`, when given, gets a line at least every minute: how many images are done, and at what rate.
    """
    was_training = model.training
    model.eval()
    features, labels = [], []
    start = last_line = time.perf_counter()
    try:
        for images, targets in loader(dataset, cfg):
            with autocast_context(device, precision):
                tokens = model.forward_features(images.to(device))  # (B, T, D)
                pooled = model.forward_head(tokens, pre_logits=True)  # (B, num_features)
            features.append(pooled.float().cpu())
            labels.append(torch.as_tensor(targets))
            if say is not None and time.perf_counter() - last_line > PROGRESS_SECONDS:
                done, last_line = sum(len(f) for f in features), time.perf_counter()
                say(f"  features: {done:,} of {len(dataset):,} images, {done / (last_line - start):.0f} images/s")
    finally:
        model.train(was_training)
    return torch.cat(features), torch.cat(labels)


def backbone_features(
    model, dataset: Dataset, cfg: VITConfig, device, precision: str, say=print, what: str = "images"
) -> TensorDataset:
    """(features, labels) of every image of `dataset` on `device`, read from the cache when it has them.

    `say` gets one line: where the features came from, or how long they took and where they are kept.
    """
    start = time.perf_counter()
    key = cache_key(model, dataset, cfg, precision)
    path = cache_folder() / f"{key}.pt"
    cached = _read(path)
    if cached is not None and len(cached[0]) == len(dataset):
        features, labels = cached
        say(f"  features of {len(dataset):,} {what}: read from the cache, {path} ({time.perf_counter() - start:.1f} s)")
    else:
        features, labels = compute_features(model, dataset, cfg, device, precision, say)
        seconds = time.perf_counter() - start
        kept = _write(path, features, labels)
        say(f"  features of {len(dataset):,} {what}: computed in {seconds:.0f} s ({precision}); {kept}")
    return TensorDataset(features.to(device), labels.to(device))


def _read(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A cache file's (features, labels), or None when it is absent or unreadable (it is then written again)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return data["features"], data["labels"]
    except Exception:  # a damaged file is only a cache miss
        return None


def _write(path: Path, features: torch.Tensor, labels: torch.Tensor) -> str:
    """Keep the features in `path`; a cache that cannot be written only costs the next run its feature pass."""
    try:
        with atomic_write(path) as f:
            torch.save({"features": features, "labels": labels}, f)
    except OSError as error:
        return f"not kept ({error}); the next probe computes them again"
    return f"kept in {path}"
