"""TensorBoard: the run's writer, its config, sample inputs, and the hyperparameters that tell runs apart."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vitlab.configs import AUGMENTATIONS, DATASET_NAMES, GOOGLE_MEAN, GOOGLE_STD, OPTIMIZERS, PRECISIONS, VITConfig
from vitlab.training.batches import SeededSamples, known_labels
from vitlab.training.devices import Distributed


def open_writer(cfg: VITConfig, processes: Distributed, start_step: int):
    """The run's SummaryWriter (a `GuardedWriter`) on the main process (None elsewhere, with TB_log off,
    or when the TensorBoard folder cannot be written: the run then goes on without it)."""
    if not (processes.is_main and cfg.TB_log):
        return None
    from torch.utils.tensorboard import SummaryWriter

    _quiet_writer_threads()
    # A resumed run purges what the stopped run logged after its checkpoint (steps it will log again),
    # and keeps step `start_step` itself, which it will not: each step once, the curves continuous.
    purge_step = start_step + 1 if start_step else None
    log_dir = Path(cfg.log_dir) / cfg.run_name
    if start_step:
        _after_earlier_event_files(log_dir)
    try:
        writer = GuardedWriter(SummaryWriter(str(log_dir), purge_step=purge_step), log_dir)
    except OSError as error:
        GuardedWriter(None, log_dir).stop(error)
        return None
    text = json.dumps(cfg.to_dict(), indent=2)
    writer.add_text("config", "    " + text.replace("\n", "\n    "), start_step)  # indented = code block
    return writer if not writer.stopped else None


def _after_earlier_event_files(log_dir: Path) -> None:
    """Wait, if needed, until the second after the newest event file's.

    TensorBoard reads a run's event files in name order and applies a resumed file's purge to what it read
    before. The names start with the second they were made in and end with a per-process counter compared
    as text ("10" before "9"), so a resumed file made in the same second as the stopped run's could be read
    first. A name from a later second is read after it.
    """
    import re
    import time

    seconds = [
        int(m[1])
        for f in log_dir.glob("events.out.tfevents.*")
        if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", f.name))
    ]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)


class GuardedWriter:
    """A SummaryWriter whose failure to write (a full disk, a folder taken away) ends TensorBoard logging with
    one warning, not the run: checkpoints matter more than curves. Every call after that does nothing."""

    def __init__(self, writer, log_dir: Path, owner: GuardedWriter | None = None):
        self._writer, self.log_dir, self._owner = writer, log_dir, owner
        self.stopped = False

    def stop(self, error: OSError) -> None:
        """Warn once, close what can be closed, and log nothing more."""
        owner = self._owner or self
        if owner.stopped:
            return
        owner.stopped = True
        from vitlab.files import disk_full_cause, disk_full_error

        reason = str(disk_full_error(self.log_dir)).split(";")[0] if disk_full_cause(error) else f"{error}"
        print(
            f"warning: TensorBoard stopped logging ({reason}); the run goes on without it, and its checkpoints "
            "are still saved",
            file=sys.stderr,
        )
        with contextlib.suppress(Exception):  # the writer's own close may fail the same way; it is not needed
            if owner._writer is not None:
                owner._writer.close()

    def __getattr__(self, name: str):
        owner = self._owner or self
        if owner.stopped:
            return _ignore
        attribute = getattr(self._writer, name)
        if name == "file_writer":  # log_hparams writes through it
            return GuardedWriter(attribute, self.log_dir, owner)
        if not callable(attribute):
            return attribute

        def guarded(*args, **kwargs):
            if owner.stopped:
                return None
            try:
                return attribute(*args, **kwargs)
            except OSError as error:
                self.stop(error)
                return None

        return guarded


def _ignore(*args, **kwargs) -> None:
    return None


def _quiet_writer_threads() -> None:
    """TensorBoard writes from a thread, which prints its own traceback when a write fails; the writer's next
    call raises the same error, which `GuardedWriter` turns into one warning. Those tracebacks are left out."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard", False):
        return

    def hook(args):
        if isinstance(args.thread, _AsyncWriterThread) and issubclass(args.exc_type, OSError):
            return
        previous(args)

    hook.quiet_tensorboard = True
    threading.excepthook = hook


def sample_indices(dataset: Dataset, count: int, seed: int) -> list[int]:
    """`count` indices drawn at random (seeded), one class after another when the labels are known.

    The first items of a dataset are often one class (an ImageFolder starts with its first folder), which
    would make the data look unshuffled; these show the classes side by side.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    known = known_labels(dataset)  # (labels, ...) of CIFAR, image folders and their subsets, without reading images
    labels = known[0] if known and len(known[0]) == len(dataset) else None
    if labels is None:
        return order[:count]
    by_class: dict[int, list[int]] = {}
    for index in order:
        by_class.setdefault(labels[index], []).append(index)
    picked: list[int] = []
    for turn in range(count):  # one of each class per turn, classes in order
        picked += [by_class[label][turn] for label in sorted(by_class) if turn < len(by_class[label])]
    return picked[:count]


def log_samples(writer, dataset: Dataset, seed: int, count: int = 16, mean=GOOGLE_MEAN, std=GOOGLE_STD) -> None:
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
    "warmup_steps", "num_steps", "augment", "label_smoothing", "train_fraction",
)  # fmt: skip
HPARAM_METRICS = {"val/best_accuracy": "best val accuracy", "test/top1": "test top-1", "test/top5": "test top-5"}
# TensorBoard ticks the first five hyperparameters for display, those marked as differing between runs first:
# these five, which tell a fine-tuning run from one from scratch (the others are a click away).
HPARAMS_SHOWN_FIRST = ("model_type", "dataset", "pretrained", "learning_rate", "num_steps")


def run_hparams(cfg: VITConfig, precision: str, images: dict | None = None) -> dict:
    """The run's distinguishing hyperparameters with their own types (str, int, float, bool); `images`: how many
    it trains on and holds out ({"train_images": 419, "val_images": 466})."""
    values = {name: getattr(cfg, name) for name in HPARAM_FIELDS}
    init = "pretrained" if cfg.weights_file else "random"
    return {**values, "precision": precision, "pretrained": bool(cfg.weights_file), "init": init, **(images or {})}


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
    if getattr(writer, "stopped", False):
        return
    try:
        summaries = [config, hp.hparams_pb(hparams, trial_id=run_name), comparison_layout()]
        write_first_events(Path(writer.log_dir), summaries)
    except OSError as error:
        if not isinstance(writer, GuardedWriter):
            raise
        writer.stop(error)  # one warning; the run goes on without TensorBoard


# TensorBoard's Custom Scalars tab: one chart per tag with every run's curve in it, the comparison on one screen.
# Each run carries the same layout (TensorBoard merges them, skipping duplicates), so any set of runs shows it.
COMPARISON_LAYOUT = {
    "every run side by side": {
        "val/accuracy": ["Multiline", [r"^val/accuracy$"]],
        "train/loss": ["Multiline", [r"^train/loss$"]],
        "train/lr": ["Multiline", [r"^train/lr"]],
    }
}


def comparison_layout():
    """COMPARISON_LAYOUT as the summary TensorBoard's Custom Scalars tab reads."""
    from torch.utils.tensorboard.summary import custom_scalars

    return custom_scalars(COMPARISON_LAYOUT)


def write_first_events(log_dir: Path, summaries: list) -> None:
    """Write `summaries` (at step 0) as the event file HPARAMS_FILE of `log_dir`, replacing it whole."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    from vitlab.files import atomic_write

    now = time.time()
    with atomic_write(log_dir / HPARAMS_FILE) as f:
        records = RecordWriter(f)
        records.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for summary in summaries:
            records.write(event_pb2.Event(wall_time=now, step=0, summary=summary).SerializeToString())
