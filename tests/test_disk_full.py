"""A full disk is said as such, with the path, and loses nothing: checkpoints, the run lock, TensorBoard, config files.

Real small filesystems (tmpfs mounts, the `small_disk` fixture) where the machine allows mounting, and the
same failures simulated in-process, which run everywhere. Downloads into a full disk: tests/test_download.py.
"""

import errno
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from messages import raises_naming

from vitlab import commands
from vitlab.files import DiskFullError, atomic_write
from vitlab.training.logs import GuardedWriter
from vitlab.training.run_folder import claim
from vitlab.weights.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
NO_SPACE = OSError(errno.ENOSPC, "No space left on device")
FREE = r"([\d.,]+ (bytes|KiB|MiB|GiB)|unknown)"  # the free space a message reports


def _train(argv, capsys) -> tuple[int, str]:
    """`python -m vitlab.train argv` in this process: (exit status, stderr)."""
    code = commands.run(importlib.import_module("vitlab.train").main, [str(a) for a in argv])
    return code, capsys.readouterr().err


def _args(data) -> list[str]:
    """No validation split, so every evaluation writes best.pt and last.pt."""
    return ["--config", "smoke", "--dataset", "cifar10", "--data_dir", data, "--name", "run", "--eval_every", "2",
            "--warmup_steps", "1", "--val_split", "0", "--model_overrides", '{"num_layers": 1}', "--progress", "false",
            "--log_dir", "TB"]  # fmt: skip


# --- simulated: every machine ---------------------------------------------------------------------
def test_a_full_disk_under_atomic_write_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text("old")

    def no_space(fd):
        raise NO_SPACE

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError) as full:
        with atomic_write(path, "w") as f:
            f.write("new")
    assert re.fullmatch(
        rf"the disk is full \(No space left on device\): could not write {re.escape(str(path))} \({FREE} free there\); "
        r"free some space on that disk, or write to another one \(the file there before is unchanged\)",
        str(full.value),
    )
    assert full.value.errno == errno.ENOSPC and isinstance(full.value, OSError)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_torch_saves_unexpected_pos_error_is_reported_as_the_full_disk_it_hides(tmp_path):
    """torch.save turns a failed write into `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`."""
    path = tmp_path / "last.pt"
    with raises_naming(DiskFullError, "disk is full", path):
        with atomic_write(path):
            try:
                raise NO_SPACE
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    assert list(tmp_path.iterdir()) == []


def test_another_write_error_without_a_path_gets_the_path(tmp_path, monkeypatch):
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError) as failed:
        with atomic_write(tmp_path / "best.pt") as f:
            f.write(b"x")
    assert commands.describe(failed.value) == f"Input/output error: {tmp_path / 'best.pt'}"


def test_a_lock_that_could_not_be_written_does_not_stay(tmp_path, monkeypatch):
    run_folder = importlib.import_module("vitlab.training.run_folder")

    def no_space(record, f):
        raise NO_SPACE

    monkeypatch.setattr(run_folder.json, "dump", no_space)
    with raises_naming(DiskFullError, tmp_path / "run" / "run.lock"):
        with claim(tmp_path / "run"):
            pass
    assert list((tmp_path / "run").iterdir()) == []
    monkeypatch.undo()
    with claim(tmp_path / "run") as lock:  # at once: no "being claimed by another run"
        assert lock.is_file()


class _FailingWriter:
    """A SummaryWriter whose disk filled up after the first scalar."""

    def __init__(self):
        self.scalars, self.closed = [], 0

    def add_scalar(self, tag, value, step):
        if self.scalars:
            raise NO_SPACE
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed += 1
        raise NO_SPACE


def test_tensorboard_that_cannot_write_warns_once_and_logs_nothing_more(tmp_path, capsys):
    inner = _FailingWriter()
    writer = GuardedWriter(inner, tmp_path / "TB" / "run")
    writer.add_scalar("train/loss", 1.0, 1)
    writer.add_scalar("train/loss", 0.5, 2)  # fails: the warning
    writer.add_scalar("train/loss", 0.25, 3)  # does nothing
    writer.flush()
    writer.close()
    err = capsys.readouterr().err
    [line] = err.splitlines()
    assert re.fullmatch(
        r"warning: TensorBoard stopped logging \(the disk is full \(No space left on device\): could not write "
        rf"{re.escape(str(tmp_path / 'TB' / 'run'))} \({FREE} free there\)\); the run goes on without it, and its "
        r"checkpoints are still saved",
        line,
    )
    assert inner.scalars == [("train/loss", 1.0, 1)] and inner.closed == 1 and writer.stopped


# --- real small filesystems: where mounting is allowed ---------------------------------------------
def test_a_checkpoint_on_a_real_full_disk_is_a_disk_full_error_and_the_old_one_stays(small_disk):
    disk = small_disk(64)
    save_checkpoint(disk / "last.pt", {"step": 1, "weights": torch.ones(100)})
    before = (disk / "last.pt").read_bytes()
    with pytest.raises(DiskFullError) as full:
        save_checkpoint(disk / "last.pt", {"step": 2, "weights": torch.ones(100_000)})  # 400 kB on 64 KiB
    assert str(full.value).startswith(f"the disk is full (No space left on device): could not write {disk}/last.pt (")
    assert "unexpected pos" not in str(full.value)
    assert (disk / "last.pt").read_bytes() == before and load_checkpoint(disk / "last.pt")["step"] == 1
    assert [p.name for p in disk.iterdir()] == ["last.pt"]  # no temporary file stays


def test_a_run_whose_disk_fills_up_stops_with_one_line_and_keeps_its_checkpoints(
    tmp_path, synthetic_cifar, small_disk, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert _train([*_args(synthetic_cifar), "--num_steps", "2", "--output_dir", "reference"], capsys)[0] == 0
    size = (tmp_path / "reference" / "run" / "last.pt").stat().st_size
    # Room for best.pt and last.pt of step 2 and half of the next checkpoint: the write at step 4 fails.
    disk = small_disk((5 * size // 2 + 8192) // 1024)
    code, err = _train([*_args(synthetic_cifar), "--num_steps", "6", "--output_dir", disk], capsys)
    assert code == 1
    [line] = err.splitlines()
    run_dir = disk / "run"
    assert line.startswith(
        f"error: the disk is full (No space left on device): could not write the checkpoint {run_dir}/best.pt ("
    )
    assert line.endswith(
        f"free there); the checkpoints of step 2 are kept: free some space there and continue with: "
        f"python -m vitlab.train --name run --output_dir {disk} --log_dir TB --resume"
    )
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "config.json", "last.pt"]  # no .tmp, no lock
    assert load_checkpoint(run_dir / "best.pt")["step"] == 2 and load_checkpoint(run_dir / "last.pt")["step"] == 2


def test_a_full_disk_at_the_start_names_the_path_and_leaves_no_lock(tmp_path, synthetic_cifar, small_disk, capsys,
                                                                     monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    disk = small_disk(64, full=True)
    code, err = _train([*_args(synthetic_cifar), "--num_steps", "2", "--output_dir", disk], capsys)
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith(
        f"error: the disk is full (No space left on device): could not write the run's lock {disk}/run/run.lock ("
    )
    assert line.endswith("free there); free some space there and run the command again, or choose another --output_dir")
    assert list((disk / "run").iterdir()) == [] and not (tmp_path / "TB").exists()
    (disk / "filler").unlink()
    with claim(disk / "run") as lock:  # the same folder is free at once, not "being claimed by another run"
        assert lock.is_file()


def test_tensorboard_on_a_full_disk_warns_once_and_the_run_saves_its_checkpoints(tmp_path, synthetic_cifar,
                                                                                  small_disk):  # fmt: skip
    """A real process: TensorBoard's writer thread would print its own traceback on stderr."""
    disk = small_disk(16)
    args = [*_args(synthetic_cifar), "--num_steps", "4", "--output_dir", "Model", "--log_dir", disk]
    done = subprocess.run([sys.executable, "-m", "vitlab.train", *args], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [warning] = done.stderr.splitlines()
    assert warning.startswith(
        f"warning: TensorBoard stopped logging (the disk is full (No space left on device): could not write {disk}/run"
    )
    assert warning.endswith("the run goes on without it, and its checkpoints are still saved")
    run_dir = tmp_path / "Model" / "run"
    assert load_checkpoint(run_dir / "last.pt")["step"] == 4 and load_checkpoint(run_dir / "best.pt")["step"] == 4
    assert "checkpoints: Model/run/best.pt, last.pt" in done.stdout
