"""Throughput of vitlab against timm's VisionTransformer, and of the data pipelines.

    python -m vitlab.bench --model ViT-S_16 --img_size 224 --batch_size 32 --precision bf16 [--compile]
                           [--device cpu|cuda] [--repeats 5] [--steps 5] [--data]

Both models are built with the same architecture in the same process and measured in turns
(vitlab fused, vitlab manual, timm fused, timm manual, then again), after warm-up; each figure is
the median of `repeats` rounds and each ratio the median of the per-round ratios, so a machine
that gets busier or quieter during the run affects both sides alike. The fastest round of each
variant is reported too: on a machine shared with other jobs, interference only adds time. A training step is forward,
cross-entropy, backward and an SGD step; inference is a forward pass under `torch.inference_mode`.

Model FLOPs are counted analytically (`vitlab.measure.vit_flops`): per image, every weight matrix costs
2 FLOPs per token it multiplies, attention adds 2 * 2 * T^2 * D per layer (Q K^T and probs @ V),
and a training step costs 3x the forward pass (the backward pass computes gradients for both the
activations and the weights). Model FLOPs utilisation (MFU) divides the achieved FLOP/s by the
GPU's dense bf16 peak (`vitlab.measure.PEAK_TFLOPS`).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitlab import commands
from vitlab.configs import ModelConfig, get_model_config
from vitlab.errors import BadValue, IsAFolder, MissingPackage
from vitlab.factory import create_model
from vitlab.files import atomic_write
from vitlab.measure import (
    alternate,
    device_images_per_sec,
    inference_fn,
    machine_info,
    median_ratio,
    peak_tflops,
    pil_images_per_sec,
    synchronize,
    train_step_fn,
    trainer_seconds_per_step,
    vit_flops,
)

PRECISIONS = ("fp32", "bf16")


# --- the two models ------------------------------------------------------------------------------
def timm_twin_check(cfg: ModelConfig) -> None:
    """The architectures `timm_twin` can copy: plain ViTs without a pre-logits layer."""
    if cfg.representation_size or getattr(cfg, "resnet_layers", None) or cfg.classifier == "token_gap":
        raise BadValue("the timm twin is a plain ViT without pre-logits or token_gap: benchmark a preset without them")


def timm_twin(cfg: ModelConfig) -> nn.Module:
    """timm's VisionTransformer with the same architecture as a vitlab model built from `cfg`."""
    try:
        from timm.models.vision_transformer import VisionTransformer as TimmViT
    except ImportError:
        raise MissingPackage("bench compares with timm, which is not installed: pip install timm") from None
    timm_twin_check(cfg)
    return TimmViT(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        global_pool="token" if cfg.classifier == "token" else "avg",
        class_token=cfg.class_token,
        fc_norm=cfg.fc_norm,
        embed_dim=cfg.hidden_size,
        depth=cfg.num_layers,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_dim / cfg.hidden_size,
        act_layer="gelu_tanh" if getattr(cfg, "gelu_approximate", "none") == "tanh" else "gelu",
    )


def set_fused(model: nn.Module, enabled: bool) -> None:
    """Switch fused attention on or off in a vitlab or a timm model (both use a `fused_attn` flag)."""
    found = False
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = enabled
            found = True
    if not found:
        raise BadValue(f"{type(model).__name__} has no attention module with a `fused_attn` flag")


# --- the benchmark -------------------------------------------------------------------------------
def run_benchmark(
    model: str = "ViT-S_16",
    img_size: int = 224,
    batch_size: int = 32,
    precision: str = "fp32",
    compile: bool = False,
    device: str = "cpu",
    repeats: int = 5,
    steps: int = 5,
    warmup: int = 2,
    data: bool = False,
    data_batches: int = 10,
    workers: int = 2,
    num_classes: int | None = None,
) -> dict:
    """Measure vitlab against timm (training and inference images/s, fused vs manual attention)."""
    if precision not in PRECISIONS:
        raise BadValue(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    device = commands.check_device(str(device))
    timm_twin_check(get_model_config(model, **({} if num_classes is None else {"num_classes": num_classes})))
    torch.manual_seed(0)
    ours = create_model(model, num_classes=num_classes, img_size=img_size).to(device)
    theirs = timm_twin(ours.cfg).to(device)
    images = torch.randn(batch_size, ours.cfg.in_chans, img_size, img_size, device=device)
    labels = torch.randint(0, max(ours.cfg.num_classes, 1), (batch_size,), device=device)
    flops = vit_flops(ours.cfg)
    result = {
        "config": dict(
            model=model,
            img_size=img_size,
            batch_size=batch_size,
            precision=precision,
            compile=compile,
            device=str(device),
            repeats=repeats,
            steps=steps,
        ),
        "machine": machine_info(device),
        "params": {"vitlab": ours.get_num_params(), "timm": sum(p.numel() for p in theirs.parameters())},
        "flops_per_image": {"forward": flops, "train": 3 * flops},
    }
    for mode, make in (("train", train_step_fn), ("inference", inference_fn)):
        result[mode] = measure_mode(ours, theirs, make, images, labels, precision, compile, repeats, steps, warmup)
        if device.type == "cuda":
            add_gpu_figures(result[mode], ours, theirs, make, images, labels, precision, compile, flops, mode)
    if data:
        result["data"] = measure_data(ours.cfg, img_size, batch_size, data_batches, workers, device)
        result["data"]["augment_vs_train"] = result["data"]["device_augment"] / result["train"]["vitlab"]
    return result


def measure_mode(ours, theirs, make, images, labels, precision, compile, repeats, steps, warmup) -> dict:
    """Images/s of both models, fused and manual, in one mode (train or inference), measured in turns."""
    device = images.device
    # Each variant flips the flags on its first call, so one model serves both attention paths.
    variants = {}
    for name, model in (("vitlab", ours), ("timm", theirs)):
        for fused in (True, False):
            step = make(model, device, precision, compile)
            variants[f"{name}{'' if fused else '_manual'}"] = with_fused(model, fused, step)
    seconds = alternate(variants, images, labels, repeats=repeats, steps=steps, warmup=warmup, device=device)
    batch = images.shape[0]
    out = {name: batch / statistics.median(values) for name, values in seconds.items()}
    out["vitlab_vs_timm"] = median_ratio(seconds["vitlab"], seconds["timm"])
    out["fused_vs_manual_vitlab"] = median_ratio(seconds["vitlab"], seconds["vitlab_manual"])
    out["fused_vs_manual_timm"] = median_ratio(seconds["timm"], seconds["timm_manual"])
    # On a shared machine other jobs only ever add time: the fastest round is the least disturbed one.
    fastest = {name: min(values) for name, values in seconds.items()}
    out["fastest"] = {name: batch / value for name, value in fastest.items()}
    out["fastest_vitlab_vs_timm"] = fastest["timm"] / fastest["vitlab"]
    out["fastest_fused_vs_manual_vitlab"] = fastest["vitlab_manual"] / fastest["vitlab"]
    out["fastest_fused_vs_manual_timm"] = fastest["timm_manual"] / fastest["timm"]
    out["seconds_per_step"] = seconds  # every round, for a look at the spread
    return out


def with_fused(model: nn.Module, fused: bool, step: Callable) -> Callable:
    def run(images, labels):
        set_fused(model, fused)
        step(images, labels)

    return run


def add_gpu_figures(out, ours, theirs, make, images, labels, precision, compile, flops, mode) -> None:
    """Peak memory of one step and model FLOPs utilisation of each model (fused attention)."""
    device = images.device
    per_image = 3 * flops if mode == "train" else flops
    peak = peak_tflops(torch.cuda.get_device_name(device))
    for name, model in (("vitlab", ours), ("timm", theirs)):
        set_fused(model, True)
        step = make(model, device, precision, compile)
        step(images, labels)
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(images, labels)
        synchronize(device)
        out[f"peak_memory_gib_{name}"] = torch.cuda.max_memory_allocated(device) / 2**30
        achieved = out[name] * per_image / 1e12  # TFLOP/s
        out[f"tflops_{name}"] = achieved
        out[f"mfu_{name}"] = achieved / peak if peak else None


def measure_data(cfg: ModelConfig, img_size: int, batch_size: int, batches: int, workers: int, device) -> dict:
    """Images/s of the PIL pipeline in DataLoader workers and of DeviceAugment, on 32 x 32 images."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (max(batch_size * (batches + 1), 1024), 32, 32, cfg.in_chans), dtype=np.uint8)
    pil = pil_images_per_sec(data, img_size, batch_size, batches, workers)
    on_device = device_images_per_sec(data, img_size, batch_size, batches, device)
    return {"pil_workers": pil, "workers": workers, "device_augment": on_device, "device_vs_pil": on_device / pil}


# --- the trainer against a bare loop -------------------------------------------------------------
TRAINER_PIPELINES = {  # name -> VITConfig fields of the trainer's input pipeline
    "device_strong": dict(augment="strong", device_augment=True),  # the scratch recipe's default
    "device_none": dict(augment="none", device_augment=True),
    "pil_strong": dict(augment="strong", device_augment=False),
}


def trainer_config(model: str, img_size: int, batch_size: int, overrides: dict, steps: int, workdir: str, **fields):
    """The `scratch` experiment on synthetic CIFAR-format data, for `steps` steps, no evaluation on the way."""
    from vitlab.configs import get_experiment

    return get_experiment(
        "scratch", dataset="synthetic", data_dir=os.path.join(workdir, "data"), model_type=model,
        model_overrides=dict(overrides), img_size=img_size, train_batch_size=batch_size, num_steps=steps,
        warmup_steps=0, eval_every=10**9, val_split=0.0, TB_log=False, progress=False, device="cpu",
        precision="fp32", save_dir=os.path.join(workdir, "Model"), log_dir=os.path.join(workdir, "TB"), **fields,
    )  # fmt: skip


def bare_loop_seconds_per_step(
    model: nn.Module, images, labels, batch_size: int, steps: int, warmup: int, cfg
) -> float:
    """Median seconds per step of a plain loop: ready batches, forward, loss, backward, clip, AdamW.

    With `cfg.head_learning_rate` the head has its rate in a group of its own, as in the transfer recipe.
    """
    params = model.parameters()
    if cfg.head_learning_rate is not None:
        head = [p for n, p in model.named_parameters() if n.startswith("head.")]
        backbone = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        params = [{"params": backbone}, {"params": head, "lr": cfg.head_learning_rate}]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(images[index]), labels[index], label_smoothing=cfg.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def run_trainer_benchmark(
    model: str = "ViT-CIFAR-3M",
    img_size: int = 32,
    batch_size: int = 128,
    overrides: dict | None = None,
    pipelines: tuple[str, ...] = tuple(TRAINER_PIPELINES),
    repeats: int = 5,
    steps: int = 10,
    warmup: int = 3,
    workers: int = 2,
) -> dict:
    """Seconds per step of `vitlab.train` (each input pipeline) and of a bare loop, alternating, on the CPU.

    Same model (the same initial weights), data (synthetic CIFAR-format images, normalised ready
    tensors for the bare loop), batch, AdamW, clipping and label smoothing. Each round runs every
    variant once; a ratio is the median over rounds of bare time / trainer time (1.0: no overhead).
    """
    import copy
    import tempfile

    from vitlab.augment import uint8_cifar
    from vitlab.data import build_datasets

    overrides = dict(overrides or {})
    unknown = sorted(set(pipelines) - set(TRAINER_PIPELINES))
    if unknown:
        raise BadValue(f"unknown pipeline(s) {unknown}; valid names: {', '.join(TRAINER_PIPELINES)}")
    seconds = {name: [] for name in ("bare", *pipelines)}
    with tempfile.TemporaryDirectory() as workdir:
        cfg = trainer_config(model, img_size, batch_size, overrides, warmup + steps, workdir, num_workers=workers)
        torch.manual_seed(0)
        initial = create_model(model, num_classes=10, img_size=img_size, **overrides)
        images, labels = uint8_cifar(build_datasets(cfg)[0])
        ready = (images.float() / 255 - 0.5) / 0.5  # what the model sees without augmentation
        for round_index in range(repeats):
            seconds["bare"].append(
                bare_loop_seconds_per_step(copy.deepcopy(initial), ready, labels, batch_size, steps, warmup, cfg)
            )
            for name in pipelines:
                run_cfg = cfg.replace(name=f"{name}_{round_index}", **TRAINER_PIPELINES[name])
                seconds[name].append(trainer_seconds_per_step(run_cfg, copy.deepcopy(initial), warmup))
    setup = dict(model=model, img_size=img_size, batch_size=batch_size, overrides=overrides)
    config = dict(setup, repeats=repeats, steps=steps, warmup=warmup, workers=workers)
    return trainer_result(config, initial.get_num_params(), seconds, timed=pipelines, against="bare")


def run_transfer_benchmark(
    repeats: int = 5, steps: int = 5, warmup: int = 2, workers: int = 2, batch_size: int | None = None
) -> dict:
    """Seconds per step of `vitlab.train` with the `transfer` experiment, and of a plain loop over timm's
    `vit_small_patch14_dinov2` with the same weights, alternating, on the CPU.

    Both train DINOv2 ViT-S/14 at the experiment's size and batch with its two learning rates, clipping and
    label smoothing; the trainer reads synthetic CIFAR-format photos through its PIL workers (crop, flip,
    resize), the plain loop ready tensors. A ratio is the median over rounds of loop time / trainer time.
    """
    import copy
    import tempfile

    import timm

    from vitlab.augment import uint8_cifar
    from vitlab.configs import get_experiment
    from vitlab.data import build_datasets
    from vitlab.weights.convert import vitlab_to_timm

    seconds = {"timm loop": [], "vitlab.train": []}
    with tempfile.TemporaryDirectory() as workdir:
        cfg = get_experiment(
            "transfer", dataset="synthetic", data_dir=os.path.join(workdir, "data"), pretrained_dir=None,
            num_steps=warmup + steps, eval_every=10**9, val_split=0.0, TB_log=False, progress=False, device="cpu",
            precision="fp32", save_dir=os.path.join(workdir, "Model"), log_dir=os.path.join(workdir, "TB"),
            num_workers=workers, **({"train_batch_size": batch_size} if batch_size else {}),
        )  # fmt: skip
        torch.manual_seed(0)
        ours = create_model(cfg.model_type, num_classes=10, img_size=cfg.img_size)
        theirs = timm.create_model("vit_small_patch14_dinov2", num_classes=10, img_size=cfg.img_size)
        theirs.load_state_dict(vitlab_to_timm(ours.state_dict()))
        images, labels = uint8_cifar(build_datasets(cfg)[0])
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (ours.cfg.image_mean, ours.cfg.image_std))
        ready = F.interpolate(images.float() / 255, size=cfg.img_size, mode="bilinear")
        ready = (ready - mean) / std  # what the model sees without augmentation
        for round_index in range(repeats):
            seconds["timm loop"].append(
                bare_loop_seconds_per_step(
                    copy.deepcopy(theirs), ready, labels, cfg.train_batch_size, steps, warmup, cfg
                )
            )
            run_cfg = cfg.replace(name=f"transfer_{round_index}")
            seconds["vitlab.train"].append(trainer_seconds_per_step(run_cfg, copy.deepcopy(ours), warmup))
    model = f"{cfg.model_type} (timm: vit_small_patch14_dinov2)"
    setup = dict(model=model, img_size=cfg.img_size, batch_size=cfg.train_batch_size, overrides={})
    config = dict(setup, repeats=repeats, steps=steps, warmup=warmup, workers=workers)
    return trainer_result(config, ours.get_num_params(), seconds, timed=["vitlab.train"], against="timm loop")


def trainer_result(config: dict, params: int, seconds: dict, timed: list[str], against: str) -> dict:
    """What `--trainer` reports: the settings, the machine, the median seconds per step of each variant, and
    the median ratio of each `timed` variant's speed to that of the `against` loop over the alternating rounds."""
    return {
        "config": config,
        "machine": machine_info(torch.device("cpu")),
        "params": params,
        "seconds_per_step": {name: statistics.median(values) for name, values in seconds.items()},
        "speed_vs_bare": {name: median_ratio(seconds[name], seconds[against]) for name in timed},
        "rounds": seconds,
    }


def recipe_pipelines(batch_size: int, batches: int, workers: int, device) -> dict:
    """Images/s of both recipes' input pipelines: PIL in DataLoader workers and on the device, at their sizes."""
    data = np.random.default_rng(0).integers(0, 256, (max(batch_size * (batches + 1), 1024), 32, 32, 3), dtype=np.uint8)
    out = {}
    for recipe, augment, img_size in (("finetune", "finetune", 224), ("scratch", "strong", 32)):
        pil = pil_images_per_sec(data, img_size, batch_size, batches, workers, augment)
        on_device = device_images_per_sec(data, img_size, batch_size, batches, torch.device(device), augment)
        out[recipe] = {"augment": augment, "img_size": img_size, "pil_workers": pil, "device": on_device}
    return out


# --- the report ----------------------------------------------------------------------------------
def format_report(result: dict) -> str:
    """The printable table of `run_benchmark`'s result."""
    cfg, machine = result["config"], result["machine"]
    lines = [
        f"{cfg['model']} at {cfg['img_size']}, batch {cfg['batch_size']}, {cfg['precision']}"
        f"{', compiled' if cfg['compile'] else ''}, {cfg['device']}"
        f" ({machine.get('gpu', machine['cpu'])}, {machine['torch_threads']} threads)",
        f"torch {machine['torch']}, torchvision {machine['torchvision']}, timm {machine['timm']}; "
        f"median of {cfg['repeats']} rounds x {cfg['steps']} steps",
        f"forward {result['flops_per_image']['forward'] / 1e9:.2f} GFLOP/image, training step 3x that",
        "",
        f"{'images/s':<10} {'vitlab':>10} {'timm':>10} {'vitlab/timm':>12} {'fused/manual vitlab':>20} "
        f"{'fused/manual timm':>18}",
    ]
    for mode in ("train", "inference"):
        r = result[mode]
        lines.append(
            f"{mode:<10} {r['vitlab']:>10.1f} {r['timm']:>10.1f} {r['vitlab_vs_timm']:>12.3f} "
            f"{r['fused_vs_manual_vitlab']:>20.3f} {r['fused_vs_manual_timm']:>18.3f}"
        )
    lines.append("fastest round of each (the least disturbed on a shared machine):")
    for mode in ("train", "inference"):
        r, f = result[mode], result[mode]["fastest"]
        lines.append(
            f"{mode:<10} {f['vitlab']:>10.1f} {f['timm']:>10.1f} {r['fastest_vitlab_vs_timm']:>12.3f} "
            f"{r['fastest_fused_vs_manual_vitlab']:>20.3f} {r['fastest_fused_vs_manual_timm']:>18.3f}"
        )
    for mode in ("train", "inference"):
        r = result[mode]
        if "peak_memory_gib_vitlab" in r:
            mfu = [f"{r[f'mfu_{name}']:.1%}" if r[f"mfu_{name}"] is not None else "n/a" for name in ("vitlab", "timm")]
            lines.append(
                f"{mode}: {r['tflops_vitlab']:.0f} / {r['tflops_timm']:.0f} TFLOP/s, MFU {mfu[0]} / {mfu[1]}, "
                f"peak memory {r['peak_memory_gib_vitlab']:.2f} / {r['peak_memory_gib_timm']:.2f} GiB (vitlab / timm)"
            )
    if "data" in result:
        d = result["data"]
        lines += [
            "",
            f"data pipeline, 32x32 -> {cfg['img_size']}: PIL in {d['workers']} workers {d['pil_workers']:.0f} "
            f"images/s, DeviceAugment {d['device_augment']:.0f} images/s ({d['device_vs_pil']:.1f}x); "
            f"DeviceAugment / vitlab training = {d['augment_vs_train']:.1f}x",
        ]
    return "\n".join(lines)


def format_trainer_report(result: dict) -> str:
    """The printable table of `run_trainer_benchmark`'s result."""
    cfg, machine = result["config"], result["machine"]
    reference = "timm loop" if "timm loop" in result["rounds"] else "bare loop"
    against = "a plain timm loop" if reference == "timm loop" else "a bare loop"
    lines = [
        f"vitlab.train against {against}: {cfg['model']} {cfg['overrides'] or ''} at {cfg['img_size']}, "
        f"batch {cfg['batch_size']}, {result['params']:,} parameters, cpu ({machine['cpu']}, "
        f"{machine['torch_threads']} threads)",
        f"median of {cfg['repeats']} alternating rounds x {cfg['steps']} steps (after {cfg['warmup']}); "
        f"PIL pipelines in {cfg['workers']} DataLoader workers",
        "",
        f"{'variant':<16} {'ms/step':>9} {'images/s':>9} {'speed vs ' + reference:>19}",
    ]
    for name, seconds in result["seconds_per_step"].items():
        ratio = f"{result['speed_vs_bare'][name]:.3f}" if name in result["speed_vs_bare"] else "1"
        lines.append(f"{name:<16} {1000 * seconds:>9.1f} {cfg['batch_size'] / seconds:>9.0f} {ratio:>19}")
    if "pipelines" in result:
        lines += ["", "input pipelines alone, images/s:"]
        for recipe, r in result["pipelines"].items():
            lines.append(
                f"{recipe:<9} ({r['augment']}, 32 -> {r['img_size']}): PIL {r['pil_workers']:.0f}, "
                f"device {r['device']:.0f} ({r['device'] / r['pil_workers']:.1f}x)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = commands.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m vitlab.bench")
    parser.add_argument("--model", default=None, help="a preset or alias (default ViT-S_16; --trainer: ViT-CIFAR-3M)")
    parser.add_argument("--img_size", type=commands.at_least(1), default=None, help="default 224; --trainer: 32")
    parser.add_argument("--batch_size", type=commands.at_least(1), default=None, help="default 32; --trainer: 128")
    parser.add_argument(
        "--trainer", action="store_true",
        help="time vitlab.train's steps (device and PIL input pipelines) against a bare loop, on the CPU",
    )  # fmt: skip
    parser.add_argument(
        "--transfer", action="store_true",
        help="with --trainer: time the transfer experiment's step against a plain loop over timm's DINOv2 ViT-S/14",
    )  # fmt: skip
    parser.add_argument(
        "--precisions", action="store_true",
        help="fp32 against bf16 autocast (and --compile): plain steps, train() steps, inference and the probe's "
        "feature pass, for the small ViT at 32 px and DINOv2 ViT-S/14 at 112 px, on the CPU",
    )  # fmt: skip
    parser.add_argument("--overrides", type=json.loads, default=None, help="--trainer: ModelConfig fields, JSON")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16 = autocast to bfloat16")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=commands.at_least(1), default=5, help="rounds; figures are medians over them")
    parser.add_argument("--steps", type=commands.at_least(1), default=5, help="steps timed per round and variant")
    parser.add_argument("--warmup", type=commands.at_least(0), default=2, help="untimed steps per variant first")
    parser.add_argument("--data", action="store_true", help="also time the PIL and the on-device data pipelines")
    parser.add_argument("--data_batches", type=commands.at_least(1), default=10)
    parser.add_argument(
        "--workers", type=commands.at_least(0), default=2, help="DataLoader workers for the PIL pipeline"
    )
    parser.add_argument("--num_classes", type=commands.at_least(1), default=None, help="default: the preset's")
    parser.add_argument(
        "--threads", type=commands.at_least(1), default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--json", default=None, help="also write the result dict to this JSON file")
    args = vars(parser.parse_args(argv))
    threads, json_path = args.pop("threads"), args.pop("json")
    commands.check_device(args["device"])
    if json_path and Path(json_path).is_dir():  # found out now, not after minutes of measuring
        raise IsAFolder(f"--json {json_path} is a directory: give a file name such as {json_path}/bench.json")
    if threads:
        torch.set_num_threads(threads)
    trainer, overrides, transfer = args.pop("trainer"), args.pop("overrides"), args.pop("transfer")
    if args.pop("precisions"):
        from vitlab.bench_precision import format_precision_report, run_precision_benchmark

        keep = ("repeats", "steps", "warmup", "compile", "workers")
        result = run_precision_benchmark(**{k: args[k] for k in keep})
        print(format_precision_report(result))
        if json_path:
            write_json(result, json_path)
        return result
    if transfer and not trainer:
        parser.error("--transfer times the trainer: use it with --trainer")
    if trainer:  # the trainer benchmark runs vitlab.train's scratch recipe on the CPU, in fp32, eager
        given = {
            "--precision": args["precision"] != "fp32",
            "--compile": args["compile"],
            "--num_classes": args["num_classes"] is not None,
            "--device": args["device"] not in ("cpu", parser.get_default("device")),
        }
        ignored = [flag for flag, is_given in given.items() if is_given]
        if ignored:
            parser.error(f"{', '.join(ignored)} cannot be used with --trainer (it times fp32 steps on the CPU)")
    elif overrides is not None:
        parser.error("--overrides is for --trainer; other benchmarks take a preset with --model")
    defaults = (
        dict(model="ViT-CIFAR-3M", img_size=32, batch_size=128)
        if trainer
        else dict(model="ViT-S_16", img_size=224, batch_size=32)
    )
    args.update({k: v for k, v in defaults.items() if args[k] is None})
    if transfer:
        keep = ("repeats", "steps", "warmup", "workers")
        result = run_transfer_benchmark(**{k: args[k] for k in keep})
        print(format_trainer_report(result))
    elif trainer:
        keep = ("model", "img_size", "batch_size", "repeats", "steps", "warmup", "workers")
        result = run_trainer_benchmark(overrides=overrides, **{k: args[k] for k in keep})
        if args["data"]:
            result["pipelines"] = recipe_pipelines(args["batch_size"], args["data_batches"], args["workers"], "cpu")
        print(format_trainer_report(result))
    else:
        result = run_benchmark(**args)
        print(format_report(result))
    if json_path:
        write_json(result, json_path)
    return result


def write_json(result: dict, path: str) -> None:
    """Write atomically: a temporary name, then a rename."""
    with atomic_write(path, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    sys.exit(commands.run(main))
