"""The sweep over the size of the labelled set: one run per approach and share, resumable, a table and a figure."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_folders import write_folder

from vitlab import commands, sweep

TINY = dict(train_batch_size=8, eval_batch_size=32, num_steps=2, warmup_steps=1, eval_every=2, num_workers=0,
            model_overrides={"num_layers": 1})  # fmt: skip


@pytest.fixture
def tiny_approaches(monkeypatch):
    monkeypatch.setitem(sweep.APPROACHES, "cnn", ("ResNet-20 (tiny)", "cnn", TINY))
    monkeypatch.setitem(sweep.APPROACHES, "scratch", ("ViT (tiny)", "smoke", dict(
        TINY, dataset="folder", val_split=0.1, model_overrides={}, TB_log=False)))  # fmt: skip


def test_the_sweep_writes_a_table_and_a_figure_and_skips_finished_runs(tmp_path, tiny_approaches, capsys, monkeypatch):
    photos = write_folder(tmp_path / "photos", per_class=20)
    folders = ["--out", str(tmp_path / "out"), "--save_dir", str(tmp_path / "Model"), "--log_dir", str(tmp_path / "TB")]
    argv = ["--data_dir", str(photos), "--approaches", "cnn", "scratch", "--fractions", "1", "0.5", *folders]
    assert commands.run(sweep.main, argv) == 0
    out = capsys.readouterr().out
    assert "[1/4] cnn at 1 of the training photos: training (sweep_cnn_f1)" in out
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["approach"], r["fraction"]) for r in rows] == [
        ("cnn", 1),
        ("scratch", 1),
        ("cnn", 0.5),
        ("scratch", 0.5),
    ]
    full, half = rows[0], rows[2]
    best = torch.load(tmp_path / "Model" / "sweep_cnn_f1" / "best.pt", weights_only=True)
    assert full["accuracy"] == best["best_accuracy"] and 0 <= full["accuracy"] <= 1  # best.pt's, as a fraction
    assert full["val_images"] == half["val_images"] > 0  # the same held-out photos at every share
    assert half["train_images"] < full["train_images"] and full["parameters"] > 0 and full["flops_per_image"] > 0
    assert full["standard_error"] == pytest.approx(
        (full["accuracy"] * (1 - full["accuracy"]) / full["val_images"]) ** 0.5
    )
    assert (
        full["command"].startswith("python -m vitlab.train --config cnn --data_dir ")
        and "--train_fraction 1" in (full["command"])
    )
    with open(tmp_path / "out" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert (tmp_path / "out" / "accuracy_vs_photos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def must_not_train(*args):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweep, "one_run", must_not_train)
    assert commands.run(sweep.main, argv) == 0
    again = capsys.readouterr().out
    assert again.count("done before") == 4 and "[4/4] scratch at 0.5 of the training photos: done before" in again
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == rows


def test_the_sweep_refuses_bad_input_in_one_line(tmp_path, capsys):
    photos = write_folder(tmp_path / "photos", per_class=2)
    assert commands.run(sweep.main, ["--data_dir", str(photos), "--fractions", "0"]) == 1
    assert capsys.readouterr().err.startswith("error: --fractions must each be in (0, 1], got 0")
    assert commands.run(sweep.main, ["--data_dir", str(tmp_path / "none")]) == 1
    assert "is not a folder of class folders" in capsys.readouterr().err
    argv = ["--data_dir", str(photos), "--pretrained_dir", str(tmp_path / "missing.safetensors")]
    assert commands.run(sweep.main, argv) == 1
    assert "the probe and the fine-tuning need the DINOv2 ViT-S/14 weights" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("{not json")
    argv = ["--data_dir", str(photos), "--approaches", "cnn", "--out", str(tmp_path / "out")]
    assert commands.run(sweep.main, argv) == 1
    assert "is not a sweep's results file" in capsys.readouterr().err


def test_the_sweeps_precision_reaches_every_run_and_its_command(tmp_path):
    args = sweep.build_parser().parse_args(["--data_dir", str(tmp_path), "--precision", "fp32"])
    for approach in sweep.APPROACHES:
        assert sweep.run_config(approach, 0.5, args).precision == "fp32"
        assert "--precision fp32 --name" in sweep.command_line(approach, 0.5, args)
    default = sweep.build_parser().parse_args(["--data_dir", str(tmp_path)])
    assert sweep.run_config("probe", 1.0, default).precision == "auto"
    assert "--precision" not in sweep.command_line("probe", 1.0, default)
