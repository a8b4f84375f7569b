"""The command lines: ViT-pytorch's train.py command end to end, TensorBoard tags, evaluate, config files."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from messages import raises_naming
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vitlab.configs import VITConfig, get_experiment
from vitlab.factory import create_model
from vitlab.train import main
from vitlab.training.flags import config_from_args

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # tiny models: one thread is fastest


def _run(*args, cwd):
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _reference_lr(step, base, warmup, total):
    if step < warmup:
        return base * step / warmup
    return base * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * (step - warmup) / (total - warmup))).item())


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory, synthetic_cifar):
    """ViT-pytorch's train.py command, pointed at synthetic CIFAR-10 and a synthetic Google-format checkpoint."""
    from vitlab.weights.npz import save_npz

    work = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    save_npz(create_model("ViT-Test", num_classes=10), work / "checkpoint" / "ViT-B_16.npz")
    stdout = _run(
        "-m", "vitlab.train", "--name", "cifar10-100_500", "--dataset", "cifar10", "--model_type", "ViT-Test",
        "--pretrained_dir", "checkpoint/ViT-B_16.npz", "--train_batch_size", "64", "--fp16_opt_level", "01",
        "--num_steps", "6",
        # CI-sized: tiny image size, few steps, the synthetic data folder, everything inside `work`
        "--img_size", "32", "--eval_every", "3", "--warmup_steps", "2", "--learning_rate", "0.01",
        "--eval_batch_size", "256", "--log_every", "1", "--num_workers", "0", "--data_dir", str(synthetic_cifar),
        "--output_dir", "Model", "--log_dir", "TB_log", "--progress", "false",
        cwd=work,
    )  # fmt: skip
    return work, stdout


def test_seed_command_runs_and_writes_every_tensorboard_tag(seed_run):
    work, stdout = seed_run
    assert "--fp16_opt_level is ignored" in stdout
    run_dir = work / "TB_log" / "cifar10-100_500"
    assert f"TensorBoard run: {Path('TB_log') / 'cifar10-100_500'}" in stdout
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    expected = {"train/loss", "train/lr", "train/grad_norm", "train/images_per_sec", "val/loss", "val/accuracy",
                "val/best_accuracy", "test/top1", "test/top5"}  # fmt: skip
    assert expected <= set(tags["scalars"])
    assert "weights/pos_embed" in tags["histograms"] and "train/samples" in tags["images"]
    assert "config/text_summary" in tags["tensors"]
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(events.PluginTagToContent("hparams"))
    assert [e.step for e in events.Scalars("val/accuracy")] == [3, 6]
    assert len(events.Histograms("weights/pos_embed")) == 2
    learning_rates = [(e.step, e.value) for e in events.Scalars("train/lr")]
    assert [s for s, _ in learning_rates] == [1, 2, 3, 4, 5, 6]
    for step, value in learning_rates:  # logged at the end of step `step`, with the rate of step - 1
        assert value == pytest.approx(_reference_lr(step - 1, 0.01, 2, 6), rel=1e-6, abs=1e-9)
    saved = VITConfig.from_json(work / "Model" / "cifar10-100_500" / "config.json")
    assert saved.train_batch_size == 64 and saved.pretrained_dir == "checkpoint/ViT-B_16.npz"


def test_evaluate_cli_reproduces_the_test_accuracy(seed_run, synthetic_cifar):
    work, stdout = seed_run
    trained = float(re.search(r"test accuracy: top-1 ([\d.]+)%", stdout).group(1))
    out = _run("-m", "vitlab.evaluate", "--checkpoint", "Model/cifar10-100_500/best.pt", "--dataset", "cifar10",
               "--data_dir", str(synthetic_cifar), "--device", "cpu", cwd=work)  # fmt: skip
    top1, top5, loss = re.search(r"top-1 ([\d.]+)%\s+top-5 ([\d.]+)%\s+loss ([\d.]+)", out).groups()
    assert float(top1) == pytest.approx(trained, abs=0.01)
    assert 0 <= float(top1) <= float(top5) <= 100 and float(loss) > 0
    # At another resolution the position embeddings are resized (the run trained at 32).
    out = _run("-m", "vitlab.evaluate", "--checkpoint", "Model/cifar10-100_500/best.pt", "--dataset", "cifar10",
               "--data_dir", str(synthetic_cifar), "--device", "cpu", "--img_size", "48", cwd=work)  # fmt: skip
    assert re.search(r"top-1 [\d.]+%", out)


def test_config_flags_and_overrides(tmp_path):
    cfg = config_from_args(
        ["--config", "smoke", "--model_overrides", '{"num_layers": 1}', "--set", "learning_rate=0.5", "--fp16",
         "--local-rank", "1", "--TB_log", "false", "--pretrained_dir", "none", "--output_dir", "out"]
    )  # fmt: skip
    expected = get_experiment("smoke").replace(
        model_overrides={"num_layers": 1}, learning_rate=0.5, precision="fp16", local_rank=1, TB_log=False,
        save_dir="out", test_cycles=cfg.test_cycles,
    )  # fmt: skip
    assert cfg == expected
    path = tmp_path / "saved.json"
    cfg.to_json(path)
    assert json.loads(path.read_text())["model_overrides"] == {"num_layers": 1}
    assert config_from_args(["--config", str(path)]) == cfg
    assert config_from_args(["--config", str(path), "--seed", "7"]).seed == 7
    assert config_from_args(["--local_rank", "3"]).local_rank == 3


def test_cli_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="neither an experiment"):
        config_from_args(["--config", "nonexistent"])
    with pytest.raises(ValueError, match="expects JSON"):
        config_from_args(["--model_overrides", "num_layers=2"])
    with pytest.raises(ValueError) as raised:
        config_from_args(["--set", "lr=0.1"])
    assert "'lr'" in str(raised.value) and "learning_rate" in str(raised.value)  # the field and the valid ones
    with raises_naming(ValueError, "'imagenet'", "cifar10, cifar100, synthetic"):
        main(["--config", "smoke", "--dataset", "imagenet", "--data_dir", str(tmp_path)])
    with pytest.raises(TypeError, match="unknown VITConfig field"):
        VITConfig.from_dict({"learning_rte": 0.1})


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "vitlab.train", "--config", "smoke", "--model_type", "ViT-X_99"], "valid names: ViT-Ti_16"),
        (["-m", "vitlab.train", "--config", "smoke", "--pretrained_dir", "nowhere.npz"], "nowhere.npz does not exist"),
        (["-m", "vitlab.evaluate", "--checkpoint", "nowhere.pt"], "nowhere.pt does not exist"),
    ],
)
def test_bad_input_ends_the_command_with_its_message_not_a_traceback(tmp_path, args, message):
    done = subprocess.run([sys.executable, *args], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "error: " in done.stderr and message in done.stderr
    assert "Traceback" not in done.stderr
