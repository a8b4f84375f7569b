"""The ready-made experiments (named starting points: finetune, scratch, imagenet, transfer, probe, cnn, smoke),
`get_experiment`, and `find_runs`, the runs saved under a folder."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from vitlab.configs.run import VITConfig
from vitlab.errors import BadValue

# A pre-trained backbone adapted to a new labelled set on a CPU in minutes: DINOv2 ViT-S/14 (Meta's file;
# timm's, Hugging Face's or any other ViT's weights work too) at 112 px (8 x 8 patches of 14), AdamW with
# a small rate for the backbone and a 100x larger one for the new zero head, crop + flip, label smoothing.
# 150 steps of 64 are about two passes over 4,000 photos (docs/results.md).
TRANSFER = dict(
    dataset="folder",
    data_dir="./data/photos",
    model_type="dinov2_vits14",
    pretrained_dir="./Pretrained/dinov2_vits14_pretrain.pth",
    record_algo="transfer",
    img_size=112,
    train_batch_size=64,
    eval_batch_size=128,
    eval_every=50,
    optimizer="adamw",
    learning_rate=3e-5,
    head_learning_rate=3e-3,
    weight_decay=0.05,
    num_steps=150,
    warmup_steps=10,
    label_smoothing=0.1,
    augment="basic",
    val_split=0.1,
    log_every=10,
)


# Each experiment holds only what differs from VITConfig's defaults (`python -m vitlab.train --config NAME
# --print_config` shows all of a run's fields).
EXPERIMENTS: dict[str, dict] = {
    # Google's fine-tuning protocol, which VITConfig's defaults are (CIFAR-10, ViT-B_16 at 224 px, SGD momentum
    # 0.9, no weight decay, 500 warmup steps, cosine decay, clip 1, batch 512, 10,000 steps), from the ImageNet-21k
    # checkpoint. 8 accumulation steps of 64 images fit a 16 GB GPU; use fewer on bigger GPUs.
    "finetune": dict(
        pretrained_dir="./Pretrained/imagenet21k_ViT-B_16.npz",
        record_algo="finetune",
        gradient_accumulation_steps=8,
        # Crop, flip and the 32 -> 224 resize on the GPU in batches: a few CPU cores running PIL
        # cannot feed a GPU at 224 (docs/benchmarks.md); statistically the same augmentation.
        device_augment=True,
    ),
    # From scratch on 32 x 32 CIFAR-10 in about a GPU-hour: a 2.7 M-parameter patch-4 ViT (Lee et al.),
    # AdamW with warmup-cosine, strong augmentation and label smoothing; 20k steps of 512 are ~200 epochs.
    "scratch": dict(
        model_type="ViT-CIFAR-3M",
        record_algo="scratch",
        img_size=32,
        eval_batch_size=512,
        eval_every=500,
        optimizer="adamw",
        learning_rate=1e-3,
        weight_decay=0.05,
        num_steps=20000,
        warmup_steps=1000,
        label_smoothing=0.1,
        augment="strong",
        # Crop, flip and TrivialAugmentWide per image, in batches on the device (vitlab.augment): the
        # same augmentation as the PIL transforms, which cap a GPU run at a few thousand images/s.
        device_augment=True,
        num_workers=8,  # for device_augment=False
    ),
    # ViT-B/32 from scratch on ImageNet-1k at 224 (train/ and val/ folders of class folders in data_dir), the
    # DeiT / AugReg-style recipe of MindCV's vit_b32_224_ascend.yaml, which reports 75.86% top-1 / 92.08% top-5
    # (torchvision documents 75.912 / 92.466 for its vit_b_32 with a similar recipe): AdamW at 1.6e-3 for a
    # global batch of 4096, weight decay 0.3, 30 warm-up epochs then cosine decay to epoch 300, label smoothing
    # 0.1, RandAugment(2, 9), Mixup 0.8 / CutMix 1.0, dropout 0.1, stochastic depth 0.1, evaluation at 224 of
    # the 256 px resize. One epoch is 1,281,167 / 4096 = 313 steps. 16 passes of 256 images make one step on one
    # GPU; with torchrun divide the accumulation by the number of GPUs (8 GPUs: 2, 16 GPUs on 2 nodes: 1).
    "imagenet": dict(
        dataset="folder",
        data_dir="./data/imagenet",
        model_type="ViT-B_32",
        record_algo="imagenet",
        crop_pct=0.875,
        train_batch_size=4096,
        gradient_accumulation_steps=16,
        eval_batch_size=256,
        eval_every=3130,  # every 10 epochs
        optimizer="adamw",
        learning_rate=1.6e-3,
        weight_decay=0.3,
        num_steps=93_836,  # 300 epochs
        warmup_steps=9_384,  # 30 epochs
        label_smoothing=0.1,
        augment="randaugment",
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        val_split=0.0,  # ImageNet's val/ folder is the validation set
        model_overrides={"dropout_rate": 0.1, "drop_path_rate": 0.1},
        num_workers=8,
    ),
    # The linear probe: the same backbone frozen, only the new head trains, on features computed once (no
    # augmentation) and kept on disk, so the steps cost next to nothing and 1,500 of them (about 23 passes) take
    # seconds. Its features are DINOv2's own linear evaluation's: the CLS token beside the mean patch token.
    "transfer": TRANSFER,
    "probe": dict(
        TRANSFER,
        record_algo="probe",
        model_overrides={"classifier": "token_gap"},
        freeze_backbone=True,
        augment="none",
        num_steps=1500,
        warmup_steps=50,
        eval_every=500,
        log_every=50,
        label_smoothing=0.1,
    ),  # fmt: skip
    # The CNN a small ViT from scratch is compared with, on the same photos at the same 32 px: ResNet-20 (He et al.
    # 2016, 0.27 M parameters) with the usual CIFAR recipe, SGD with momentum 0.9 at 0.1 for batch 128, weight decay
    # 5e-4, crop + flip, label smoothing 0.1; a warm-up of 30% then cosine decay is one-cycle's shape. 1,000 steps of
    # 128 are about 30 passes over 4,194 photos, minutes on a CPU (docs/results.md). `--optimizer nesterov` (SGD with
    # Nesterov momentum) reached 71.67% on the same 466 held-out photos, against 70.39%: within one standard error.
    "cnn": dict(
        dataset="folder",
        data_dir="./data/photos",
        model_type="ResNet-20",
        record_algo="cnn",
        img_size=32,
        train_batch_size=128,
        eval_batch_size=256,
        eval_every=250,
        learning_rate=0.1,
        weight_decay=5e-4,
        num_steps=1000,
        warmup_steps=300,
        label_smoothing=0.1,
        augment="basic",
        val_split=0.1,
    ),
    # Seconds on a CPU: the tiny ViT-Test model on synthetic CIFAR-format data (tests, smoke mode).
    "smoke": dict(
        dataset="synthetic",
        model_type="ViT-Test",
        record_algo="smoke",
        img_size=32,
        train_batch_size=32,
        eval_batch_size=128,
        eval_every=10,
        optimizer="adamw",
        learning_rate=1e-3,
        num_steps=20,
        warmup_steps=5,
        augment="basic",
        precision="fp32",
        num_workers=0,
        log_every=5,
    ),
}


def get_experiment(experiment: str, /, **overrides) -> VITConfig:
    """The ready-made experiment (a name of `EXPERIMENTS`: "finetune", "scratch", "transfer", ...) with `overrides`.

    Another `num_steps` without a `warmup_steps` keeps the recipe's warm-up as the same fraction of the run
    (`scaled_warmup`), except for a resumed run, which keeps its own. Only `overrides` count as set by the user
    (`VITConfig.fields_set`), so a resumed run is never refused over a recipe's value or a derived warm-up.
    """
    if experiment not in EXPERIMENTS:
        raise BadValue(f"unknown experiment {experiment!r}; valid names: {', '.join(EXPERIMENTS)}")
    # The recipe's values are its defaults, not the user's choices: a resumed run compares only `overrides`.
    recipe = VITConfig().derive(**copy.deepcopy(EXPERIMENTS[experiment]))  # model_overrides: a copy
    cfg = recipe.replace(**overrides)
    steps = overrides.get("num_steps")
    if "warmup_steps" not in overrides and not overrides.get("resume") and type(steps) is int and steps >= 1:
        cfg = cfg.derive(warmup_steps=scaled_warmup(recipe, steps))
    return cfg


def scaled_warmup(recipe: VITConfig, num_steps: int) -> int:
    """The warm-up of `recipe` as the same fraction of a run of `num_steps`: finetune's 500 of 10,000 -> 25 of 500.

    A recipe's warm-up is sized for its own length; kept in a shorter run it would only ever raise the
    learning rate.
    """
    if num_steps == recipe.num_steps:
        return recipe.warmup_steps
    return max(0, min(round(recipe.warmup_steps * num_steps / recipe.num_steps), num_steps - 1))


def find_runs(save_dir: str | os.PathLike, where=None) -> list[tuple[Path, VITConfig]]:
    """(run folder, its VITConfig) of every run under `save_dir` with a config.json, newest first.

    `where(cfg)` keeps the runs it returns True for, e.g. real CIFAR-10 runs from scratch:
    `find_runs("Model", lambda cfg: cfg.dataset == "cifar10" and not cfg.pretrained_dir)`.
    A run's TensorBoard events are in `<log_dir>/<folder name>`.
    """
    found = []
    for path in Path(save_dir).glob("*/config.json"):
        try:
            cfg = VITConfig.from_json(path)
        except (ValueError, TypeError):  # not a vitlab run's config
            continue
        if where is None or where(cfg):
            found.append((path.stat().st_mtime, path.parent, cfg))
    return [(folder, cfg) for _, folder, cfg in sorted(found, key=lambda item: item[0], reverse=True)]
