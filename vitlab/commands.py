"""What every `python -m vitlab.<command>` shares: a mistake ends the command with one `error:` line.

A command line that cannot be parsed (an unknown flag, a missing value, a value that a flag's argparse
type refuses) exits with status 2; any other bad input (a missing file, a config value of the wrong type
or out of range, no network) is one of vitlab's own errors (`vitlab.errors.VitlabError`) and exits with
status 1, and so does running out of memory (CPU or GPU); none prints a traceback (`VITLAB_DEBUG=1`
shows one for vitlab's errors). Any other error is a bug, in vitlab or in the user's own model, dataset
or transform: its full traceback is printed, then a line that says so and where to report it, and the
status is 1. Ctrl-C is a stop the user asked for, not an error: `stopped: ...` and status 130. Warnings
print as one `warning: ...` line, without the source line Python adds.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import traceback
import types
import warnings
from collections.abc import Callable

from vitlab.errors import BadValue, VitlabError

ISSUES = "https://github.com/vitlab/vitlab/issues"  # pyproject.toml's [project.urls] Issues
BUG_LINE = (
    "this looks like a bug, in vitlab or in your own code (model, dataset, transform): if the traceback above "
    f"ends in vitlab, please report it with that traceback at {ISSUES}"
)


class CommandModule(types.ModuleType):
    """A command's module that can be called as its function: `vitlab.train(cfg)` is `vitlab.train.train(cfg)`.

    The module stays a module (`python -m vitlab.train`, `from vitlab.train import train`); calling it is
    the first guess of someone who met `vitlab.create_model`, so it does what that guess means.
    """

    function_name = ""  # set by `callable_module`

    def __call__(self, *args, **kwargs):
        return getattr(self, self.function_name)(*args, **kwargs)


def callable_module(module_name: str, function_name: str) -> None:
    """Make the module `module_name` callable as its function `function_name` (see `CommandModule`)."""
    kind = type(f"{function_name}_module", (CommandModule,), {"function_name": function_name})
    sys.modules[module_name].__class__ = kind


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with its error as one line: `error: <what> (see <prog> --help)`."""

    def error(self, message: str):
        self.exit(2, f"error: {message}{self.guesses(message)} (see {self.prog} --help)\n")

    def guesses(self, message: str) -> str:
        """For "unrecognized arguments: --num_step 3": " (did you mean --num_steps?)", the closest flags."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        flags = [option for option in self._option_string_actions if option.startswith("--")]
        hints = []
        for typed in message.partition(":")[2].split():
            by_case = {flag.lower(): flag for flag in flags}
            near = difflib.get_close_matches(typed.partition("=")[0].lower(), by_case, n=2, cutoff=0.75)
            if typed.startswith("--") and near:
                hints.append(f"{typed.partition('=')[0]}: did you mean {' or '.join(by_case[n] for n in near)}?")
        return f" ({'; '.join(hints)})" if hints else ""


def check_device(spec: str):
    """The torch device named by `spec` ("cpu", "cuda", "cuda:1", ...); one that is not there is a ValueError."""
    import torch

    try:
        device = torch.device(spec)
    except RuntimeError:
        raise BadValue(f"unknown device {spec!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadValue(f"device {spec!r} was asked for but no CUDA GPU is visible: use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadValue(f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def at_least(low: int):
    """An argparse type: an integer >= `low`, e.g. `type=at_least(1)` for a batch size."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


WORKER_TRACEBACK = "Original Traceback (most recent call last):"  # how a DataLoader worker's error arrives


def describe(error: BaseException) -> str:
    """An exception as one line of text: its message, or its kind and file for a bare OSError.

    An error raised in a DataLoader worker process reaches the main process as "Caught ValueError in
    DataLoader worker process 0. Original Traceback ...": its last line is the worker's own message.
    """
    if isinstance(error, OSError) and error.strerror and error.filename is not None and str(error).startswith("["):
        text = f"{error.strerror}: {error.filename}"  # "[Errno 28] No space ..." -> "No space left on device: path"
    else:
        text = str(error) or type(error).__name__
    if WORKER_TRACEBACK in text:
        last = text.strip().splitlines()[-1]  # "vitlab.images.UnreadableImageError: image ... cannot be read"
        kind, sep, message = last.partition(": ")
        text = message if sep and kind.replace(".", "").replace("_", "").isalnum() else last
    return " ".join(text.split())


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for the command lines: `warning: <message>` on one line, no source line."""
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError or torch's OutOfMemoryError (a RuntimeError; torch is not imported for it here)."""
    return isinstance(error, MemoryError) or any(kind.__name__ == "OutOfMemoryError" for kind in type(error).__mro__)


def describe_out_of_memory(error: BaseException) -> str:
    """Running out of memory is the machine's limit for this input, not a bug: what ran out and what to change."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (
        f"out of memory ({first[:200]}): use a smaller batch size, image size or model; a training run keeps its "
        "batch with a larger --gradient_accumulation_steps"
    )


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Call `main(argv)`; vitlab's errors become `error: ...`, others a traceback and the bug line (see the module)."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            result = main(argv)
    except KeyboardInterrupt as interrupt:  # asked for, not an error; the trainer's says what it saved, how to resume
        print(f"stopped: {describe(interrupt) if interrupt.args else 'interrupted (Ctrl-C)'}", file=sys.stderr)
        return 130
    except VitlabError as error:
        if os.environ.get("VITLAB_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"error: {describe(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: its file and line are what the person who fixes it needs
        if out_of_memory(error):
            print(f"error: {describe_out_of_memory(error)}", file=sys.stderr)
            return 1
        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0
