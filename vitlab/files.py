"""Files written whole or not at all, and a full disk said as such, with the path."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from vitlab.errors import FileError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # no space left, disk quota exceeded


class DiskFullError(FileError):
    """A write failed because the disk (or the user's quota) is full; the message names the path."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def disk_full_cause(error: BaseException) -> OSError | None:
    """The "no space left on device" OSError behind `error`, if any.

    torch.save reports a failed write as `RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos ...`; the OSError it hides is its context.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def _free_space(path: Path) -> str:
    """The free space on the disk that holds `path` (its nearest existing folder), e.g. "12.0 KiB"."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:,} bytes" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


def disk_full_error(path: str | os.PathLike, what: str = "", fix: str = "", disk: str = "the disk") -> DiskFullError:
    """ "the disk is full (No space left on device): could not write <what> <path> (<free> free there); <fix>"."""
    path = Path(path)
    what = f"{what} " if what else ""
    fix = fix or "free some space on that disk, or write to another one"
    return DiskFullError(
        f"{disk} is full ({os.strerror(errno.ENOSPC)}): could not write {what}{path} ({_free_space(path)} free "
        f"there); {fix}"
    )


def _umask() -> int:
    """This process's umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file next to `path`; on success it is synced and renamed to `path`.

    Readers see the old file or the new one, never half of one: an error or an interruption
    inside the block removes the temporary file and leaves `path` as it was. A full disk is a
    `DiskFullError` naming `path`, also when torch.save hides it in a RuntimeError; another failed
    write is a `FileError` (an OSError) naming `path`.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; the final file gets what open() would give
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if disk_full_cause(error) is not None:
            kept = " (the file there before is unchanged)" if path.exists() else ""
            raise disk_full_error(path, fix=f"free some space on that disk, or write to another one{kept}") from None
        if isinstance(error, OSError) and not isinstance(error, FileError) and error.strerror:
            # The system's refusal (permissions, a read-only disk, an I/O error) named with the path written.
            raise FileError(error.errno, error.strerror, str(path)) from None
        raise
