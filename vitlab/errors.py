"""vitlab's own errors: what it raises about its input, each message naming the problem and the fix.

A command ends with one `error:` line for these and shows the traceback of anything else (a bug, in
vitlab or in the user's own model or transform). Each also derives from the builtin error that Python
code expects for it, so `except ValueError` and `except FileNotFoundError` catch vitlab's as before.
This module imports nothing of vitlab's: every other module may raise its errors (and use `preview_names`).
"""

from __future__ import annotations


class VitlabError(Exception):
    """An error about the input vitlab was given (a value, a file, the network), not a bug."""


class BadValue(VitlabError, ValueError):
    """A value out of range, an unknown name, or one that does not fit the rest of the input."""


class BadType(VitlabError, TypeError):
    """A value of the wrong kind: a string for a number, a dataset that yields something else."""


class MissingFile(VitlabError, FileNotFoundError):
    """A file or folder that is not where the input says it is."""


class NotAFolder(VitlabError, NotADirectoryError):
    """A file where a folder was expected."""


class IsAFolder(VitlabError, IsADirectoryError):
    """A folder where a file was expected."""


class AlreadyExists(VitlabError, FileExistsError):
    """A file or folder in the way of one that vitlab would make."""


class FileError(VitlabError, OSError):
    """A file that could not be read or written for another reason (the message names it and why)."""


class NoConnection(VitlabError, ConnectionError):
    """A download that cannot reach its server, or that was cut off."""


class MissingPackage(VitlabError, ModuleNotFoundError):
    """An optional package that is not installed; the message says what to install."""


class MismatchedPackages(VitlabError, ImportError):
    """Installed packages that do not work together (torch and torchvision); the message says what to install."""


def preview_names(names, limit: int = 10) -> str:
    """The first `limit` of `names` for a message, comma-separated, and how many there are when some are left out."""
    names = [str(name) for name in names]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
