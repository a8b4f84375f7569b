"""A run's checkpoint folder: claimed by one process at a time, and cleaned of half-written files.

`save_dir/<run name>/` holds `config.json`, `best.pt` and `last.pt`. A run claims the folder with
`run.lock` (created atomically, holding the process id) before writing anything, so two runs
started with the same name cannot mix their files; the lock of a process that no longer exists
(killed, machine rebooted) is taken over. Temporary files that an interrupted write left behind
(`.last.pt.<random>.tmp`, full-size) are removed when a run starts or resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from vitlab.errors import AlreadyExists, FileError
from vitlab.files import disk_full_cause, disk_full_error

LOCK_NAME = "run.lock"
RUN_FILES = ("best.pt", "last.pt", "config.json", "config.before_step_*.json")  # written with `atomic_write`
LOG_FILES = ("events.out.tfevents.*",)  # in the TensorBoard folder: the hparams events (vitlab.training.logs)
FREE_SPACE = "free some space there and run the command again, or choose another --output_dir"
FRESH_LOCK_SECONDS = 10  # an empty lock younger than this is being written by a process that just created it


class RunFolderBusy(AlreadyExists):
    """Another live process holds the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # not written yet, or half-written by a process killed while creating it


def _being_written(path: Path) -> bool:
    """An unreadable lock created moments ago: its creator is between creating and writing it."""
    try:
        return time.time() - path.stat().st_mtime < FRESH_LOCK_SECONDS
    except OSError:
        return False


@contextlib.contextmanager
def claim(run_dir: str | os.PathLike):
    """Hold `run_dir/run.lock` for the block; a lock held by a live process is a `RunFolderBusy` error."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if disk_full_cause(error) is not None:
            raise disk_full_error(run_dir, "the run folder", FREE_SPACE) from None
        raise FileError(error.errno, error.strerror, str(run_dir)) from None  # e.g. a folder the user may not write
    path = run_dir / LOCK_NAME
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):  # a stale lock is removed and the claim tried again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if not holder and _being_written(path):
                raise RunFolderBusy(
                    f"run folder {run_dir} is being claimed by another run at this moment: choose another --name"
                ) from None
            same_host = holder.get("host") == record["host"]
            if same_host and isinstance(holder.get("pid"), int) and _alive(holder["pid"]):
                raise RunFolderBusy(
                    f"run folder {run_dir} is in use by process {holder['pid']} (started {holder.get('started')}): "
                    "wait for that run to end, or choose another --name"
                ) from None
            if not same_host and holder.get("host"):
                raise RunFolderBusy(
                    f"run folder {run_dir} is locked by process {holder.get('pid')} on {holder['host']}: if no run "
                    f"is going on there, delete {path}; or choose another --name"
                ) from None
            print(f"removed the stale lock of process {holder.get('pid')}, which no longer runs ({path})")
            path.unlink(missing_ok=True)
            continue
        except OSError as error:
            if disk_full_cause(error) is not None:
                raise disk_full_error(path, "the run's lock", FREE_SPACE) from None
            raise FileError(error.errno, error.strerror, str(path)) from None
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
        except BaseException as error:  # a lock that could not be written must not stay and block the next run
            path.unlink(missing_ok=True)
            if disk_full_cause(error) is not None:
                raise disk_full_error(path, "the run's lock", FREE_SPACE) from None
            if isinstance(error, OSError) and error.strerror:
                raise FileError(error.errno, error.strerror, str(path)) from None
            raise
        break
    else:
        raise RunFolderBusy(f"could not claim run folder {run_dir}: {path} keeps reappearing")
    try:
        yield path
    finally:
        if _read_lock(path).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def sweep_temporaries(run_dir: str | os.PathLike, log_dir: str | os.PathLike | None = None) -> list[Path]:
    """Delete the run's own half-written files (`.last.pt.*.tmp`, ...), saying so in one line; returns them.

    `atomic_write` removes its temporary file when a write fails, but not when the process is killed
    mid-write; such a file is never read again, and in the TensorBoard folder (`log_dir`) a half-written
    event file would be read as one.
    """
    places = [(Path(run_dir), RUN_FILES)] + ([(Path(log_dir), LOG_FILES)] if log_dir is not None else [])
    removed, described = [], []
    for folder, names in places:
        for name in names:
            for path in sorted(folder.glob(f".{name}.*.tmp")):
                with contextlib.suppress(OSError):
                    size = path.stat().st_size
                    path.unlink()
                    removed.append(path)
                    described.append(f"{path.name} ({size / 2**20:.1f} MiB)")
    if removed:
        where = ", ".join(sorted({str(path.parent) for path in removed}))
        print(f"removed {', '.join(described)} from {where}: left by writes that were interrupted")
    return removed
