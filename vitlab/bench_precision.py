"""float32 against bfloat16 autocast on this machine: `python -m vitlab.bench --precisions [--compile]`.

For the small ViT at 32 px (the `scratch` recipe's model) and DINOv2 ViT-S/14 at 112 px (the `transfer` and
`probe` recipes' model), in one process, in alternating rounds so that a machine getting busier or quieter
slows both sides of each ratio alike:

- a training step in a plain loop (forward, loss, backward, SGD) and an inference forward pass, fp32 against
  bf16 autocast, each also under `torch.compile` with `--compile`;
- a training step through `vitlab.train.train` with `precision="fp32"` against `precision="auto"` (the recipe
  itself, on synthetic CIFAR-format photos through its PIL workers);
- the linear probe's feature pass (`vitlab.training.features.compute_features`), fp32 against "auto".

A ratio is the median over rounds of fp32 time / other time: above 1, the other is faster.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile

import torch

from vitlab.factory import create_model
from vitlab.measure import alternate, inference_fn, machine_info, median_ratio, train_step_fn, trainer_seconds_per_step
from vitlab.precision import cpu_has_native_bf16, model_width, resolve_precision

# name: (preset, image size, training batch, the experiment whose train() step is timed)
SETUPS = {
    "small": ("ViT-CIFAR-3M", 32, 128, "scratch"),
    "transfer": ("dinov2_vits14", 112, 64, "transfer"),
}


def trainer_cfg(experiment: str, workdir: str, steps: int, workers: int, precision: str):
    """The experiment on synthetic CIFAR-format photos, `steps` steps, no evaluation, no files kept."""
    from vitlab.configs import get_experiment

    return get_experiment(
        experiment, dataset="synthetic", data_dir=os.path.join(workdir, "data"), pretrained_dir=None,
        num_steps=steps, warmup_steps=0, eval_every=10**9, val_split=0.0, TB_log=False, progress=False,
        device="cpu", precision=precision, save_dir=os.path.join(workdir, "Model"),
        log_dir=os.path.join(workdir, "TB"), num_workers=workers,
    )  # fmt: skip


def feature_seconds(model, images: torch.Tensor, cfg, precision: str) -> float:
    """Seconds per image of the probe's feature pass over `images`."""
    import time

    from torch.utils.data import TensorDataset

    from vitlab.training.features import compute_features

    dataset = TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
    start = time.perf_counter()
    compute_features(model, dataset, cfg, torch.device("cpu"), precision)
    return (time.perf_counter() - start) / len(images)


def measure_setup(name: str, repeats: int, steps: int, warmup: int, compile: bool, workers: int) -> dict:
    """Every figure of one setup: seconds per step (or per image) of each variant in each round, and ratios."""
    preset, img_size, batch, experiment = SETUPS[name]
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = create_model(preset, num_classes=10, img_size=img_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, img_size, img_size, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    kinds = [("fp32", False), ("bf16", False)] + ([("fp32", True), ("bf16", True)] if compile else [])
    names = [f"{p} compiled" if c else p for p, c in kinds]
    loop = alternate(
        {n: train_step_fn(copy.deepcopy(model), cpu, p, c) for n, (p, c) in zip(names, kinds)},
        images, labels, repeats=repeats, steps=steps, warmup=warmup, device=cpu,
    )  # fmt: skip
    inference = alternate(
        {n: inference_fn(copy.deepcopy(model), cpu, p, c) for n, (p, c) in zip(names, kinds)},
        images, labels, repeats=repeats, steps=steps, warmup=warmup, device=cpu,
    )  # fmt: skip
    trainer = {"fp32": [], "auto": []}
    features = {"fp32": [], "auto": []}
    probe_images = torch.randn(256, 3, img_size, img_size, generator=generator)
    auto, _ = resolve_precision("auto", cpu, model_width(model))
    with tempfile.TemporaryDirectory() as workdir:
        for round_index in range(repeats):
            for precision in trainer:
                cfg = trainer_cfg(experiment, workdir, warmup + steps + 1, workers, precision)  # steps intervals
                cfg = cfg.replace(name=f"{precision}_{round_index}")
                trainer[precision].append(trainer_seconds_per_step(cfg, copy.deepcopy(model), warmup))
                probe_cfg = cfg.replace(num_workers=0)  # the images are ready tensors: the backbone's time alone
                resolved = resolve_precision(precision, cpu, model_width(model))[0]
                features[precision].append(feature_seconds(model, probe_images, probe_cfg, resolved))
    per_image = {
        "training step, plain loop": {k: v / batch for k, v in _medians(loop).items()},
        f"training step, train() ({experiment} recipe)": {k: v / batch for k, v in _medians(trainer).items()},
        "inference": {k: v / batch for k, v in _medians(inference).items()},
        "probe feature pass": _medians(features),
    }
    ratios = {
        "training step, plain loop": {n: median_ratio(loop[n], loop["fp32"]) for n in names[1:]},
        f"training step, train() ({experiment} recipe)": {"auto": median_ratio(trainer["auto"], trainer["fp32"])},
        "inference": {n: median_ratio(inference[n], inference["fp32"]) for n in names[1:]},
        "probe feature pass": {"auto": median_ratio(features["auto"], features["fp32"])},
    }
    return {
        "model": preset, "img_size": img_size, "batch_size": batch, "auto": auto,
        "images_per_sec": {row: {k: 1 / v for k, v in cols.items()} for row, cols in per_image.items()},
        "speed_vs_fp32": ratios,
        "rounds": {"loop": loop, "inference": inference, "trainer": trainer, "features": features},
    }  # fmt: skip


def _medians(seconds: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in seconds.items()}


def run_precision_benchmark(
    setups: tuple[str, ...] | None = None,
    repeats: int = 3,
    steps: int = 3,
    warmup: int = 1,
    compile: bool = False,
    workers: int = 2,
) -> dict:
    """fp32 against bf16 autocast (and torch.compile) for each of `setups`, on the CPU (see the module docstring)."""
    machine = dict(machine_info(torch.device("cpu")), native_bf16=cpu_has_native_bf16())
    setups = tuple(SETUPS) if setups is None else setups
    config = dict(repeats=repeats, steps=steps, warmup=warmup, compile=compile, workers=workers)
    return {
        "config": config,
        "machine": machine,
        "setups": {name: measure_setup(name, repeats, steps, warmup, compile, workers) for name in setups},
    }


def format_precision_report(result: dict) -> str:
    """The figures as a table per setup: images/s of each variant and its speed against fp32."""
    machine = result["machine"]
    lines = [
        f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}; native bfloat16: "
        f"{'yes' if machine['native_bf16'] else 'no'}; medians of {result['config']['repeats']} alternating rounds"
    ]
    for setup in result["setups"].values():
        lines += [
            "",
            f"{setup['model']} at {setup['img_size']} px, batch {setup['batch_size']} (auto = {setup['auto']})",
        ]
        for row, speeds in setup["images_per_sec"].items():
            ratios = setup["speed_vs_fp32"][row]
            cells = [f"fp32 {speeds['fp32']:.1f}"]
            cells += [f"{name} {speeds[name]:.1f} ({ratios[name]:.2f}x)" for name in speeds if name != "fp32"]
            lines.append(f"  {row:<42} images/s: " + ", ".join(cells))
    return "\n".join(lines)
