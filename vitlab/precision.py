"""The number format a run computes in: the choice behind `--precision auto`, and the autocast that applies it.

Under `torch.autocast` the matrix products (Linear, attention, convolutions) run in bfloat16 or float16 while
the weights, their gradients, the optimiser's state, the residual stream, LayerNorm (on the fp32 residual
stream), softmax inside the fused attention kernel and the loss stay float32: autocast's own op lists decide
this, and tests/test_precision.py checks each of them on the CPU.
"""

from __future__ import annotations

import contextlib

import torch

from vitlab.configs.run import PRECISIONS
from vitlab.errors import BadValue


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX on x86, BF16 on Arm), as oneDNN sees it.

    Without it bfloat16 is emulated and slower than float32, so "auto" stays with float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


# On a CPU, bfloat16 pays only when the matrix products are big enough to repay autocast's casts: measured on
# 2 Zen 4 cores, a training step of ViT-S/14 (384 wide) runs 1.40x faster, of the 192-wide ViT-CIFAR-3M 0.84x
# (python -m vitlab.bench --precisions, docs/benchmarks.md).
CPU_BF16_MIN_WIDTH = 384


def resolve_precision(precision: str, device: torch.device, width: int | None = None) -> tuple[str, str]:
    """(the precision a run on `device` uses, why): "auto" -> bf16 on GPUs that have it, fp16 on older GPUs; on a
    CPU, bf16 where it has native bfloat16 and the model (`width`: its hidden size, if known) is at least
    `CPU_BF16_MIN_WIDTH` wide, else fp32. Any other value is used as given."""
    if precision not in PRECISIONS:
        raise BadValue(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision, "as asked"
    if device.type == "cuda":
        # bf16 needs Ampere (compute capability 8) or newer; older GPUs such as Colab's T4 only emulate it.
        if torch.cuda.get_device_capability(device)[0] >= 8:
            return "bf16", "auto: this GPU computes bfloat16 natively"
        return "fp16", "auto: this GPU has no native bfloat16, so float16 with a gradient scaler"
    if device.type != "cpu" or not cpu_has_native_bf16():
        return "fp32", f"auto: no native bfloat16 on this {device.type}"
    if width is not None and width < CPU_BF16_MIN_WIDTH:
        return (
            "fp32",
            f"auto: layers {width} wide are too small for bfloat16 to pay on a CPU (--precision bf16 forces it)",
        )
    return "bf16", "auto: this CPU computes bfloat16 natively (--precision fp32 turns it off)"


def model_width(model) -> int | None:
    """The hidden size of a vitlab model (ViT or CNN), for `resolve_precision`; None for any other module."""
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "hidden_size", None)


def autocast_context(device: torch.device, precision: str):
    """`torch.autocast` for bf16 / fp16, a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "auto":
        raise BadValue("resolve 'auto' first: vitlab.precision.resolve_precision(precision, device)")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
