"""TensorBoard: the run's writer, its config, sample inputs and the final hyperparameters."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vitlab.configs import VITConfig
from vitlab.training.batches import SeededSamples
from vitlab.training.devices import Distributed


def open_writer(cfg: VITConfig, env: Distributed, start_step: int):
    """The run's SummaryWriter on the main process (None elsewhere or with TB_log off)."""
    if not (env.is_main and cfg.TB_log):
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(Path(cfg.log_dir) / cfg.run_name), purge_step=start_step or None)
    text = json.dumps(cfg.to_dict(), indent=2)
    writer.add_text("config", "    " + text.replace("\n", "\n    "), start_step)  # indented = code block
    return writer


def log_samples(
    writer, dataset: Dataset, seed: int, count: int = 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
) -> None:
    """A few training inputs as the model sees them (augmented), un-normalised to [0, 1] with `mean`, `std`."""
    samples = SeededSamples(dataset, seed)
    images = torch.stack([samples[(i, i % len(dataset))][0] for i in range(min(count, len(dataset)))])
    shape = (1, -1, 1, 1)  # per channel
    pixels = images * torch.tensor(std).reshape(shape) + torch.tensor(mean).reshape(shape)  # (B, C, H, W)
    writer.add_images("train/samples", pixels.clamp(0, 1), 0)


def log_hparams(writer, cfg: VITConfig, metrics: dict) -> None:
    """The run's hyperparameters and final metrics for TensorBoard's HParams tab."""
    from torch.utils.tensorboard.summary import hparams

    values = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in cfg.to_dict().items()}
    metrics = {f"hparam/{k}": float(v) for k, v in metrics.items()}
    for summary in hparams(values, metrics):
        writer.file_writer.add_summary(summary)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, cfg.num_steps)
