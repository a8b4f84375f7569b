"""How a run stops early and cleanly: Ctrl-C or SIGTERM at a step boundary, a loss that is no longer a number."""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading

from vitlab.errors import BadValue


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run after `last.pt` was saved; the message says how to resume."""


class NonFiniteLossError(BadValue):
    """The loss became NaN or infinite; the run stopped without saving the broken weights."""


class StopRequests:
    """Catches Ctrl-C (SIGINT) and SIGTERM while the loop runs, so the loop can stop at a step boundary.

    The first signal only sets `signal_name`; the loop saves and stops at the end of the step. A second
    one raises KeyboardInterrupt at once (no save: the previous checkpoint stays). Signal handlers can
    only be installed from the main thread; elsewhere signals keep their usual effect.
    """

    def __init__(self):
        self.signal_name: str | None = None

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            raise KeyboardInterrupt(f"{self.signal_name} again: stopped at once, without saving")
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def resume_command(cfg) -> str:
    """The command line that continues run `cfg` from its last.pt."""
    from vitlab.configs import VITConfig

    default = VITConfig()
    parts = ["python -m vitlab.train", f"--name {shlex.quote(cfg.run_name)}"]
    if cfg.save_dir != default.save_dir:
        parts.append(f"--output_dir {shlex.quote(str(cfg.save_dir))}")
    if cfg.log_dir != default.log_dir:
        parts.append(f"--log_dir {shlex.quote(str(cfg.log_dir))}")
    return " ".join([*parts, "--resume"])


def non_finite_message(value: float | None, step: int, first_step: int, cfg, kept: str) -> str:
    """What went wrong, what was kept, and the usual causes, for a loss of `value` (None: non-finite weights)
    in steps first_step..step."""
    steps = f"step {step}" if first_step >= step else f"steps {first_step}-{step}"
    what = "some weights became inf or nan" if value is None else f"the training loss became {value}"
    return (
        f"{what} ({steps}): the run stopped, and {kept}. Usual causes: a learning "
        f"rate too high for this model and batch (learning_rate {cfg.learning_rate:g}, warmup_steps "
        f"{cfg.warmup_steps}), fp16 overflow (precision {cfg.precision}: try bf16 or fp32), no gradient clipping "
        f"(max_grad_norm {cfg.max_grad_norm:g}), or NaN in the input images. Start a new run with those changed"
    )
