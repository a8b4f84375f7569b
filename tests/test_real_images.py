"""Real CIFAR-10 photographs from ../shared/data/cifar10-train-subset (skipped where that folder is absent).

Quick by design: a tiny model, few steps and a few hundred images linked (not copied) into a
temporary folder. docs/real_data_cpu.md has the longer from-scratch measurement.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vitlab.configs import VITConfig
from vitlab.data import CIFAR10_CLASSES, build_datasets

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "cifar10-train-subset"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real images not found at {REAL}")


def link_subset(target: Path, start: int, per_class: int) -> Path:
    """`per_class` images of each class (from the `start`-th), as symbolic links in class folders under `target`."""
    for name in CIFAR10_CLASSES:
        (target / name).mkdir(parents=True)
        for image in sorted((REAL / name).iterdir())[start : start + per_class]:
            (target / name / image.name).symlink_to(image)
    return target


def test_the_real_subset_reads_as_cifar10():
    cfg = VITConfig(dataset="folder", data_dir=str(REAL), model_type="ViT-Test", img_size=32, val_split=0.2)
    train, val, test, names = build_datasets(cfg)
    assert names == list(CIFAR10_CLASSES) and test is None
    assert (len(train), len(val)) == (3728, 932)  # 4,660 images, 20% held out
    image, label = val[0]
    assert image.shape == (3, 32, 32) and names[label] in CIFAR10_CLASSES


def run(argv: list[str]) -> dict:
    from vitlab.train import main

    quiet = ["--TB_log", "false", "--progress", "false", "--log_every", "5"]
    return main(["--config", "smoke", "--dataset", "folder", *quiet, *argv])


def test_tiny_vit_learns_on_real_images_class_folders(tmp_path, capsys):
    from vitlab.evaluate import main as evaluate_main
    from vitlab.predict import main as predict_main

    data = link_subset(tmp_path / "photos", 0, 30)
    argv = ["--data_dir", str(data), "--val_split", "0.25", "--num_steps", "30", "--eval_every", "30",
            "--learning_rate", "2e-3", "--name", "real", "--output_dir", str(tmp_path / "Model")]  # fmt: skip
    result = run(argv)
    losses = [entry["loss"] for entry in result["history"]]
    assert losses[-1] < losses[0] - 0.05  # it learns: the training loss falls from ~ln(10)
    assert result["best_val_accuracy"] > 0.15  # above chance (10%) on 75 held-out photographs
    checkpoint = str(tmp_path / "Model" / "real" / "best.pt")
    held_out = evaluate_main(["--checkpoint", checkpoint])  # no test/ or val/: the run's held-out 25% of DIR
    assert held_out["num_samples"] == 75 and held_out["top1"] == pytest.approx(result["best_val_accuracy"])
    capsys.readouterr()
    assert predict_main([str(data / "cat"), "--checkpoint", checkpoint, "--top_k", "1"]) == 0
    assert capsys.readouterr().out.count("1. ") == 30


def test_real_images_in_the_imagenet_layout(tmp_path):
    from vitlab.evaluate import main as evaluate_main

    data = tmp_path / "cifar"
    link_subset(data / "train", 0, 20)
    link_subset(data / "val", 20, 5)
    argv = ["--data_dir", str(data), "--num_steps", "5", "--warmup_steps", "2", "--eval_every", "5", "--name", "layout",
            "--output_dir", str(tmp_path / "Model")]  # fmt: skip
    result = run(argv)
    assert result["class_names"] == list(CIFAR10_CLASSES) and "test_accuracy" not in result
    metrics = evaluate_main(["--checkpoint", str(tmp_path / "Model" / "layout" / "best.pt")])
    assert metrics["num_samples"] == 50 and metrics["top1"] == pytest.approx(result["best_val_accuracy"])
