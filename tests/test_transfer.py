"""Transfer to a new labelled set: the `transfer` experiment, a head with its own learning rate, the linear probe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from test_folders import write_folder
from torch.utils.data import TensorDataset

import vitlab
from vitlab.configs import VITConfig, get_experiment
from vitlab.train import train
from vitlab.training.build import build_optimizer, build_scheduler


def _cfg(tmp_path, **overrides) -> VITConfig:
    base = dict(
        model_type="ViT-Test", img_size=32, train_batch_size=16, eval_batch_size=64, num_steps=6, warmup_steps=1,
        eval_every=3, log_every=1, optimizer="adamw", learning_rate=1e-3, precision="fp32", num_workers=0,
        save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), name="run", progress=False, TB_log=False,
    )  # fmt: skip
    base.update(overrides)
    return VITConfig(**base)


def _data(n=48, seed=0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, 32, 32, generator=generator) * 2 - 1, torch.randint(0, 10, (n,)))


def test_the_transfer_experiment_fits_a_cpu_and_a_pretrained_backbone():
    cfg = get_experiment("transfer")
    model_cfg = vitlab.configs.get_model_config(cfg.model_type)
    assert cfg.model_type == "dinov2_vits14" and cfg.pretrained_dir.endswith("dinov2_vits14_pretrain.pth")
    assert cfg.img_size % model_cfg.patch_size == 0 and cfg.img_size <= 224
    assert cfg.head_learning_rate == 100 * cfg.learning_rate
    assert cfg.warmup_steps < cfg.num_steps and cfg.val_split > 0
    assert cfg.num_workers <= max(2, os.cpu_count() or 1)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_head_has_its_own_learning_rate_through_the_whole_schedule(tmp_path, optimizer):
    cfg = _cfg(tmp_path, optimizer=optimizer, learning_rate=3e-5, head_learning_rate=3e-3, num_steps=20, warmup_steps=5)
    model = vitlab.create_model("ViT-Test")
    optimizer = build_optimizer(cfg, model, torch.device("cpu"))
    scheduler = build_scheduler(cfg, optimizer)
    head = {id(p) for p in model.head.parameters()}
    for step in range(20):
        for group in optimizer.param_groups:
            is_head = {id(p) for p in group["params"]} <= head
            assert all((id(p) in head) == is_head for p in group["params"])  # no group mixes the two
            peak = 3e-3 if is_head else 3e-5
            factor = step / 5 if step < 5 else 0.5 * (1 + math.cos(math.pi * (step - 5) / 15))
            assert group["lr"] == pytest.approx(peak * factor, rel=1e-6, abs=1e-12)
        optimizer.step()
        scheduler.step()
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.parameters()}


def test_without_a_head_rate_the_groups_are_as_before(tmp_path):
    model = vitlab.create_model("ViT-Test")
    groups = build_optimizer(_cfg(tmp_path, weight_decay=0.05), model, torch.device("cpu")).param_groups
    assert len(groups) == 2 and [g["weight_decay"] for g in groups] == [0.05, 0.0]  # decay, then no decay


def test_a_frozen_backbone_stays_bitwise_and_only_the_head_learns(tmp_path):
    model = vitlab.create_model("ViT-Test")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _cfg(tmp_path, freeze_backbone=True, augment="basic", learning_rate=1e-2)
    result = train(cfg, train_set=_data(), val_set=_data(16, seed=1), model=model)
    after = result["model"].state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}


def test_a_linear_probe_reads_each_image_once(tmp_path):
    """Without augmentation the backbone's features are computed once: the encoder sees each image once."""
    model = vitlab.create_model("ViT-Test")
    seen = []
    model.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    train_set, val_set = _data(48), _data(16, seed=1)
    cfg = _cfg(tmp_path, freeze_backbone=True, augment="none", num_steps=30, eval_every=10, learning_rate=1e-2)
    result = train(cfg, train_set=train_set, val_set=val_set, model=model)
    assert sum(seen) == len(train_set) + len(val_set)  # 30 steps of 16 would be 480 images, plus 3 x 16 to validate
    assert result["best_val_accuracy"] is not None and result["history"][-1]["loss"] < result["history"][0]["loss"]
    probe = result["model"]  # the whole model, its head trained on the cached features
    features = probe.forward_head(probe.forward_features(val_set.tensors[0]), pre_logits=True)
    torch.testing.assert_close(probe(val_set.tensors[0]), probe.head(features))


def test_transfer_runs_from_a_dinov2_file_on_an_image_folder(tmp_path):
    """The command line: a (small) DINOv2 backbone in Meta's layout, a folder of photos, the transfer recipe."""
    weights, small, _ = _small_dinov2_file(tmp_path, mask_token=True)
    folder = write_folder(tmp_path / "photos", per_class=6)
    command = [
        sys.executable, "-m", "vitlab.train", "--config", "transfer", "--pretrained_dir",
        str(weights), "--data_dir", str(folder), "--num_steps", "4",
        "--warmup_steps", "1", "--img_size", "42", "--train_batch_size", "8", "--model_overrides", json.dumps(small),
        "--save_dir", str(tmp_path / "Model"), "--log_dir", str(tmp_path / "TB"), "--name", "t", "--progress", "false",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run t: dinov2_vits14") and "from dinov2_vits14_pretrain.pth" in lines[0]
    weights = next(i for i, line in enumerate(lines) if line.startswith("  weights: loaded "))
    assert any(line.startswith("    skipped  mask_token") for line in lines[weights:])  # under the run's line
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "TB" / "t")).Reload()
    backbone, head = ([e.value for e in events.Scalars(f"train/{tag}")] for tag in ("lr", "lr_head"))
    assert backbone and [pytest.approx(100 * rate) for rate in backbone] == head  # 3e-3 against 3e-5
    saved = VITConfig.from_json(tmp_path / "Model" / "t" / "config.json")
    from vitlab.data import image_normalization

    assert image_normalization(saved) == (vitlab.configs.IMAGENET_MEAN, vitlab.configs.IMAGENET_STD)


def _small_dinov2_file(tmp_path, mask_token=False):
    """A small DINOv2 backbone in Meta's layout (what the transfer recipe reads): (file, its shape, the model)."""
    small = dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
    backbone = vitlab.create_model("dinov2_vits14", num_classes=0, img_size=42, **small)
    state = {k.replace("encoder.blocks.", "blocks.").replace("encoder.norm.", "norm."): v
             for k, v in backbone.state_dict().items()}  # fmt: skip
    state = {k.replace(".to_qkv.", ".qkv.").replace(".to_out.", ".proj."): v for k, v in state.items()}
    if mask_token:  # Meta's files carry it; the loader skips it
        state["mask_token"] = torch.zeros(1, 32)
    torch.save(state, tmp_path / "dinov2_vits14_pretrain.pth")
    return tmp_path / "dinov2_vits14_pretrain.pth", small, backbone


def _transfer(tmp_path, weights, small, folder, **changes):
    tiny = dict(
        pretrained_dir=str(weights), data_dir=str(folder), num_steps=2, warmup_steps=1, img_size=42, train_batch_size=8,
        model_overrides=small, save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), progress=False,
        num_workers=0,
    )  # fmt: skip
    return get_experiment("transfer", **{**tiny, **changes})


def test_init_random_is_the_same_recipe_and_architecture_without_the_weights(tmp_path, capsys):
    weights, small, backbone = _small_dinov2_file(tmp_path)
    folder = write_folder(tmp_path / "photos", per_class=6)
    loaded = train(_transfer(tmp_path, weights, small, folder, name="pre", learning_rate=0.0,
                             head_learning_rate=0.0))  # fmt: skip
    first = capsys.readouterr().out.splitlines()[0]
    assert "from dinov2_vits14_pretrain.pth" in first
    pre = loaded["model"].encoder.blocks[0].attn.to_qkv.weight.detach()
    torch.testing.assert_close(pre, backbone.encoder.blocks[0].attn.to_qkv.weight)  # lr 0: the file's weights
    random = train(_transfer(tmp_path, weights, small, folder, name="rand", learning_rate=0.0,
                             head_learning_rate=0.0, init="random"))  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert "from random weights" in lines[0] and lines[0].startswith("run rand: dinov2_vits14")
    assert any(line.startswith("  init: random, the recipe's architecture without its weights") for line in lines)
    model = random["model"]
    assert model.encoder.blocks[0].attn.to_qkv.weight.shape == pre.shape  # the same architecture
    assert not torch.allclose(model.encoder.blocks[0].attn.to_qkv.weight, pre)  # not the file's weights
    state = torch.load(tmp_path / "Model" / "rand" / "best.pt", weights_only=True)
    assert state["config"]["init"] == "random" and state["config"]["learning_rate"] == 0.0
    from vitlab.training.logs import run_hparams

    hparams = run_hparams(VITConfig.from_dict(state["config"]), "fp32")
    assert hparams["init"] == "random" and hparams["pretrained"] is False
    # Without the weights' file the random control still runs: nothing asks for the file it does not read.
    weights.unlink()
    assert train(_transfer(tmp_path, weights, small, folder, name="rand2", init="random"))["steps"] == 2
    with pytest.raises(FileNotFoundError, match="dinov2_vits14_pretrain.pth"):
        train(_transfer(tmp_path, weights, small, folder, name="pre2"))
    with pytest.raises(ValueError, match="unknown init 'none'; valid names: pretrained, random"):
        _transfer(tmp_path, weights, small, folder, init="none")


@pytest.mark.parametrize("experiment", ["transfer", "probe"])
def test_the_first_command_repeated_with_resume_continues_for_the_transfer_recipes(tmp_path, experiment, capsys):
    from vitlab import commands
    from vitlab.train import main

    weights, small, _ = _small_dinov2_file(tmp_path)
    folder = write_folder(tmp_path / "photos", per_class=6)
    first = ["--config", experiment, "--pretrained_dir", str(weights), "--data_dir", str(folder), "--img_size", "42",
             "--train_batch_size", "8", "--model_overrides", json.dumps(small), "--save_dir", str(tmp_path / "Model"),
             "--log_dir", str(tmp_path / "TB"), "--name", "t", "--progress", "false", "--num_workers", "0",
             "--num_steps", "4"]  # fmt: skip
    assert commands.run(main, first) == 0
    assert commands.run(main, [*first, "--num_steps", "8", "--resume"]) == 0, capsys.readouterr().err
    assert torch.load(tmp_path / "Model" / "t" / "last.pt", weights_only=True)["step"] == 8
