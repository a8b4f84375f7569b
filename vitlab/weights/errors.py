"""The one error type of weight files, and the short key lists its messages show."""

from __future__ import annotations

from vitlab.errors import BadValue


class CheckpointError(BadValue):
    """A checkpoint that cannot be loaded into the model; the message says why and what to do."""


def preview_keys(keys, limit: int = 6) -> str:
    """The first `limit` keys in sorted order, and how many there are in all."""
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def unreadable_torch_file(path, error: Exception, fix: str) -> CheckpointError:
    """What `torch.load(path, weights_only=True)` failing with `error` means, as one message ending in `fix`.

    A refused pickle (an object that could run code when loaded) is named as refused; an HTML page
    (a download that returned an error page) is named as one; anything else is damaged or not a checkpoint.
    """
    import re
    from pathlib import Path

    path, text = Path(path), str(error)
    with open(path, "rb") as f:
        start = f.read(64).lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return CheckpointError(f"checkpoint {path} is a web page (HTML), not a PyTorch checkpoint: {fix}")
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found is not None or "allowlist" in text or "Unsupported global" in text:
        what = f" ({found.group(1)})" if found else ""
        return CheckpointError(
            f"checkpoint {path} contains a pickled Python object{what} besides tensors and was refused: loading it "
            "could run arbitrary code. Use a checkpoint that holds tensors only (vitlab's trainer writes such files)"
        )
    first_line = text.splitlines()[0] if text else ""
    return CheckpointError(
        f"checkpoint {path} cannot be read ({path.stat().st_size:,} bytes, {type(error).__name__}: {first_line}): "
        f"the file is truncated or not a PyTorch checkpoint; {fix}"
    )
