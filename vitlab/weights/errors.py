"""The one error type of weight files, and the short key lists its messages show."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the message says why and what to do."""


def preview_keys(keys, limit: int = 6) -> str:
    """The first `limit` keys in sorted order, and how many there are in all."""
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
