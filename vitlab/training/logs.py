"""TensorBoard: the run's writer, its config, sample inputs, and the hyperparameters that tell runs apart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vitlab.configs import AUGMENTATIONS, DATASET_NAMES, OPTIMIZERS, PRECISIONS, VITConfig
from vitlab.training.batches import SeededSamples
from vitlab.training.devices import Distributed


def open_writer(cfg: VITConfig, env: Distributed, start_step: int):
    """The run's SummaryWriter on the main process (None elsewhere or with TB_log off)."""
    if not (env.is_main and cfg.TB_log):
        return None
    from torch.utils.tensorboard import SummaryWriter

    # A resumed run purges what the stopped run logged after its checkpoint (steps it will log again),
    # and keeps step `start_step` itself, which it will not: each step once, the curves continuous.
    purge_step = start_step + 1 if start_step else None
    writer = SummaryWriter(str(Path(cfg.log_dir) / cfg.run_name), purge_step=purge_step)
    text = json.dumps(cfg.to_dict(), indent=2)
    writer.add_text("config", "    " + text.replace("\n", "\n    "), start_step)  # indented = code block
    return writer


def known_labels(dataset: Dataset) -> list[int] | None:
    """Every sample's label when the dataset knows them without reading images (`targets`), else None."""
    targets = getattr(dataset, "targets", None)
    base, indices = getattr(dataset, "base", None), getattr(dataset, "indices", None)
    if targets is None and indices is not None and getattr(base, "targets", None) is not None:
        targets = [base.targets[i] for i in indices]  # a subset of CIFAR or of an ImageFolder
    return [int(label) for label in targets] if targets is not None and len(targets) == len(dataset) else None


def sample_indices(dataset: Dataset, count: int, seed: int) -> list[int]:
    """`count` indices drawn at random (seeded), one class after another when the labels are known.

    The first items of a dataset are often one class (an ImageFolder starts with its first folder), which
    would make the data look unshuffled; these show the classes side by side.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    labels = known_labels(dataset)
    if labels is None:
        return order[:count]
    by_class: dict[int, list[int]] = {}
    for index in order:
        by_class.setdefault(labels[index], []).append(index)
    picked: list[int] = []
    for turn in range(count):  # one of each class per turn, classes in order
        picked += [by_class[label][turn] for label in sorted(by_class) if turn < len(by_class[label])]
    return picked[:count]


def log_samples(
    writer, dataset: Dataset, seed: int, count: int = 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
) -> None:
    """A few training inputs as the model sees them (augmented), un-normalised to [0, 1] with `mean`, `std`;
    drawn across the classes (`sample_indices`)."""
    samples = SeededSamples(dataset, seed)
    chosen = sample_indices(dataset, count, seed)
    images = torch.stack([samples[(position, index)][0] for position, index in enumerate(chosen)])
    shape = (1, -1, 1, 1)  # per channel
    pixels = images * torch.tensor(std).reshape(shape) + torch.tensor(mean).reshape(shape)  # (B, C, H, W)
    writer.add_images("train/samples", pixels.clamp(0, 1), 0)


# The hyperparameters that tell runs apart, for TensorBoard's HParams tab (not folders, seeds or switches),
# and the metrics it shows beside them: scalars of the run, so the table fills in as the run goes.
HPARAM_FIELDS = (
    "model_type", "dataset", "img_size", "train_batch_size", "optimizer", "learning_rate", "weight_decay",
    "warmup_steps", "num_steps", "augment", "label_smoothing",
)  # fmt: skip
HPARAM_METRICS = {"val/best_accuracy": "best val accuracy", "test/top1": "test top-1", "test/top5": "test top-5"}
# TensorBoard ticks the first five hyperparameters for display, those marked as differing between runs first:
# these five, which tell a fine-tuning run from one from scratch (the others are a click away).
HPARAMS_SHOWN_FIRST = ("model_type", "dataset", "pretrained", "learning_rate", "num_steps")


def run_hparams(cfg: VITConfig, precision: str) -> dict:
    """The run's distinguishing hyperparameters with their own types (str, int, float, bool)."""
    values = {name: getattr(cfg, name) for name in HPARAM_FIELDS}
    return {**values, "precision": precision, "pretrained": bool(cfg.pretrained_dir)}


# TensorBoard keeps the first hyperparameters it reads for a run, from its files in name order; a resumed run's
# writer opens a new file, so the run's hyperparameters live in one file of their own that sorts first and is
# rewritten by each segment: the HParams tab shows those the run has now (a longer num_steps after a resume).
HPARAMS_FILE = "events.out.tfevents.0000000000.hparams"


def log_hparams(writer, hparams: dict, run_name: str) -> None:
    """`hparams` for TensorBoard's HParams tab, with the metrics of HPARAM_METRICS beside them, in HPARAMS_FILE.

    Each run is its own row, also when two runs share every hyperparameter (e.g. differ by seed only).
    """
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    choices = {
        "dataset": list(DATASET_NAMES), "optimizer": list(OPTIMIZERS), "precision": list(PRECISIONS),
        "augment": list(AUGMENTATIONS), "pretrained": [False, True],
    }  # fmt: skip
    columns = [hp.HParam(name, hp.Discrete(choices[name]) if name in choices else None) for name in hparams]
    metrics = [hp.Metric(tag, display_name=label) for tag, label in HPARAM_METRICS.items()]
    config = hp.hparams_config_pb(columns, metrics)
    content = config.value[0].metadata.plugin_data
    data = plugin_data_pb2.HParamsPluginData.FromString(content.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in HPARAMS_SHOWN_FIRST
    content.content = data.SerializeToString()
    write_first_events(Path(writer.log_dir), [config, hp.hparams_pb(hparams, trial_id=run_name)])


def write_first_events(log_dir: Path, summaries: list) -> None:
    """Write `summaries` (at step 0) as the event file HPARAMS_FILE of `log_dir`, replacing it whole."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    from vitlab.weights.files import atomic_write

    now = time.time()
    with atomic_write(log_dir / HPARAMS_FILE) as f:
        records = RecordWriter(f)
        records.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for summary in summaries:
            records.write(event_pb2.Event(wall_time=now, step=0, summary=summary).SerializeToString())
