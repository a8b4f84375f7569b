"""Execute the notebooks top to bottom with real data and weights, and save them with their outputs.

    python docs/split_photos.py ../shared/data/cifar10-train-subset data/photos
    python notebooks/execute.py --photos data/photos --dinov2 Pretrained/dinov2-small-hf.safetensors

runs all seven notebooks in order (or those named, e.g. `04 05`) with a Jupyter kernel in `notebooks/`, as a
person would, and writes each one back with its outputs and, at the end of its first cell, a paragraph saying
what produced them: the date, the machine, the data, the weights and the notebook's wall time. The notebooks
take their paths from the environment (VITLAB_PHOTOS, VITLAB_DINOV2); TensorBoard is not started
(VITLAB_TENSORBOARD=0). Notebook 4 and 5 write their runs to TB_log/ and Model/, where 7 finds them (without
them 7 trains a short run from scratch and shows DINOv2 unchanged); 6 reads the table and the runs of
`python -m vitlab.sweep` (their curves from docs/data_size/curves.json when the runs are not here).
A notebook that fails is not written, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent
ROOT = NOTEBOOKS.parent
PROVENANCE = "**The outputs below**"  # the paragraph this script writes at the end of each notebook's first cell
# What each notebook reads besides the package: the photo folder, the DINOv2 weights, the runs of 4 and 5, the sweep's.
USES = {
    "01": (),
    "02": ("weights",),
    "03": (),
    "04": ("photos",),
    "05": ("photos", "weights"),
    "06": ("sweep",),
    "07": ("photos", "weights", "runs"),
}


def repo_path(path: str) -> str:
    """`path` relative to the repository root when it lies inside it (the notebooks print what they are given).

    Symbolic links are kept, not followed: `data/photos` linked to a folder elsewhere stays `data/photos`.
    """
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(ROOT)) if absolute.is_relative_to(ROOT) else str(absolute)


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else platform.machine()


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores ({cpu_name()}), {gpu}, torch {torch.__version__}"


class LoadSampler(threading.Thread):
    """The 1-minute load average every 30 s while a notebook runs: how busy the shared machine was."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
        self.done = threading.Event()

    def run(self) -> None:
        while self.samples and not self.done.wait(30):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> str:
        self.done.set()
        if not self.samples:
            return ""
        mean = sum(self.samples) / len(self.samples)
        return f" (load average {self.samples[0]:.1f} at the start, {mean:.1f} on average while it ran)"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = " with uncommitted changes" if git("status", "--porcelain", "vitlab") else ""
    return f"vitlab/ as at commit {head}{changed}"


def describe_photos(folder: Path, note: str) -> str:
    counts = {split: len(list((folder / split).glob("*/*.*"))) for split in ("train", "test")}
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    synthetic = " SYNTHETIC images (SYNTHETIC.txt)," if (folder / "SYNTHETIC.txt").exists() else ""
    text = f"{counts['train']:,} training and {counts['test']:,} test photos in {len(classes)} class folders"
    return f"{text},{synthetic} `{repo_path(folder)}`" + (f": {note}" if note else "")


def describe_weights(path: Path, note: str) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    text = f"`{path.name}` ({path.stat().st_size / 2**20:.0f} MiB, sha256 {digest}…)"
    return text + (f": {note}" if note else "")


def provenance(uses, started: datetime.datetime, minutes: float, args, where: str) -> str:
    parts = [
        f"{PROVENANCE} were produced by `python notebooks/execute.py` on {started:%Y-%m-%d} at {started:%H:%M} UTC, "
        f"on {where}. Running this notebook took {minutes:.1f} min."
    ]
    if "photos" in uses:
        parts.append(f"Data: {describe_photos(Path(args.photos), args.photos_note)}.")
    if "weights" in uses:
        parts.append(f"Weights: {describe_weights(Path(args.dinov2), args.weights_note)}.")
    if "runs" in uses:
        parts.append("Runs: the newest of notebooks 4 and 5 in `Model/` and `TB_log/` (named below).")
    if "sweep" in uses:
        parts.append(
            "Runs: the table `docs/data_size/results.json` of `python -m vitlab.sweep` on the 4,660 real CIFAR-10 "
            "photos of `../shared/data/cifar10-train-subset` (commands in the notebook), and its runs' curves from "
            "their event files in `TB_log/`, or from `docs/data_size/curves.json` where those are absent (named below)."
        )
    return " ".join(parts)


def with_provenance(source: str, paragraph: str) -> str:
    kept = source.split(f"\n\n{PROVENANCE}")[0].rstrip()
    return f"{kept}\n\n{paragraph}"


def execute(path: Path, args, where: str) -> bool:
    nb = nbformat.read(path, as_version=4)
    started = datetime.datetime.now(datetime.timezone.utc)
    start, load, package = time.perf_counter(), LoadSampler(), commit()
    load.start()
    client = NotebookClient(
        nb, kernel_name="python3", timeout=None, record_timing=False, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    try:
        client.execute()
    except CellExecutionError as error:
        print(f"{path.name} failed; not written:\n{error}", file=sys.stderr)
        return False
    finally:
        machine_load = load.summary()
    minutes = (time.perf_counter() - start) / 60
    uses = USES.get(path.name[:2], ())
    paragraph = provenance(uses, started, minutes, args, f"{where}{machine_load}; {package}")
    nb.cells[0].source = with_provenance(nb.cells[0].source, paragraph)
    nbformat.write(nb, path)
    print(f"{path.name}: {minutes:.1f} min", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to run, e.g. 04 05 (default: all, in order)")
    parser.add_argument("--photos", default=os.environ.get("VITLAB_PHOTOS", "data/photos"),
                        help="folder with train/ and test/ class folders of photos (VITLAB_PHOTOS)")  # fmt: skip
    dinov2 = os.environ.get("VITLAB_DINOV2", "Pretrained/dinov2_vits14_pretrain.pth")
    parser.add_argument("--dinov2", default=dinov2,
                        help="DINOv2 ViT-S/14 weights in Meta's, timm's or HF's layout (VITLAB_DINOV2)")  # fmt: skip
    parser.add_argument("--photos_note", default="", help="where the photos come from, for the provenance paragraph")
    parser.add_argument("--weights_note", default="", help="where the weights come from, for the provenance paragraph")
    args = parser.parse_args(argv)
    if os.environ.get("VITLAB_SMOKE") == "1":
        parser.error("VITLAB_SMOKE=1 is set: smoke-mode outputs are never saved; unset it")
    for name, path in (("--photos", Path(args.photos) / "test"), ("--dinov2", Path(args.dinov2))):
        if not path.exists():
            parser.error(f"{name}: {path} does not exist")
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.names:
        paths = [p for p in paths if any(p.name.startswith(name) for name in args.names)]
    os.environ.update(
        VITLAB_PHOTOS=repo_path(args.photos), VITLAB_DINOV2=repo_path(args.dinov2), VITLAB_TENSORBOARD="0"
    )
    where = machine()
    failed = [path.name for path in paths if not execute(path, args, where)]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
