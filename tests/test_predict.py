"""Prediction: preprocessing, top-k labels and probabilities, and the CLI with .npz and .pt checkpoints."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import randomize_
from npz_helpers import Arch, write_google_npz
from PIL import Image

from vitlab.data import CIFAR10_CLASSES
from vitlab.factory import create_model
from vitlab.predict import load_image, main, predict
from vitlab.weights.checkpoint import save_checkpoint

# Logits set through the head bias alone (zero head weight): the probabilities are softmax(bias).
PROBABILITIES = [0.05, 0.02, 0.08, 0.50, 0.03, 0.20, 0.04, 0.03, 0.03, 0.02]  # "cat", then "dog"


def model_with_known_head() -> torch.nn.Module:
    model = randomize_(create_model("ViT-Test", num_classes=10))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(PROBABILITIES).log())
    return model.train()  # predict must switch to eval and back


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(np.full((40, 48, 3), (255, 0, 51), dtype=np.uint8)).save(path)
    return path


def test_load_image_resizes_and_scales_to_minus_one_one(png):
    x = load_image(png, 32)
    assert x.shape == (3, 32, 32)
    expected = torch.tensor([1.0, -1.0, 51 / 127.5 - 1]).view(3, 1, 1).expand(3, 32, 32)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(load_image(Image.open(png), 32), x)
    tensor = torch.rand(3, 32, 32)
    torch.testing.assert_close(load_image(tensor, 32), tensor * 2 - 1)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        load_image(torch.rand(1, 3, 32, 32), 32)


def test_predict_top_labels_and_probabilities(png):
    model = model_with_known_head()
    result = predict(model, png, top_k=3, class_names=CIFAR10_CLASSES, precision="fp32")
    assert [label for label, _ in result] == ["cat", "dog", "bird"]
    for (_, probability), expected in zip(result, [0.50, 0.20, 0.08]):
        assert math.isclose(probability, expected, rel_tol=1e-5)
    assert model.training  # the caller's mode is restored
    assert [label for label, _ in predict(model, torch.rand(3, 64, 64), top_k=2)] == ["3", "5"]
    with pytest.raises(ValueError, match="3 class names for a model with 10 classes"):
        predict(model, png, class_names=["a", "b", "c"])


def test_cli_with_a_run_checkpoint(tmp_path, png, capsys):
    model = model_with_known_head()
    checkpoint = save_checkpoint(
        tmp_path / "best.pt",
        {
            "model": model.state_dict(),
            "model_config": dataclasses.asdict(model.cfg),
            "config": {},
            "class_names": list(CIFAR10_CLASSES),
            "step": 10,
            "best_accuracy": 0.5,
        },
    )
    argv = [str(png), str(png), "--model_type", "ViT-Test", "--checkpoint", str(checkpoint), "--top_k", "2"]
    assert main([*argv, "--precision", "fp32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(png) and lines[3] == str(png)
    assert lines[1].split() == ["1.", "cat", "50.00%"]
    assert lines[2].split() == ["2.", "dog", "20.00%"]


def test_cli_with_a_google_npz(tmp_path, png, capsys):
    """A gap model at 48 px: pooling, image size and class count come from the file."""
    arch = Arch(patch=8, width=32, depth=2, heads=2, mlp=64, img_size=48, num_classes=4, cls=False)
    path = write_google_npz(tmp_path / "imagenet2012.npz", arch)
    labels = tmp_path / "labels.txt"
    labels.write_text("tench\ngoldfish\nshark\nhen\n")
    argv = [str(png), "--model_type", "ViT-Test", "--checkpoint", str(path), "--top_k", "4", "--labels", str(labels)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()[1:]
    # the same model built by hand and loaded through load_pretrained
    from vitlab.weights.load import load_pretrained

    reference = create_model("ViT-Test", img_size=48, num_classes=4, classifier="gap", class_token=False)
    load_pretrained(reference, path, verbose=False)
    expected = predict(reference, png, top_k=4, class_names=["tench", "goldfish", "shark", "hen"])
    assert [line.split()[1] for line in printed] == [label for label, _ in expected]
    assert [line.split()[2] for line in printed] == [f"{100 * p:.2f}%" for _, p in expected]


def test_cli_errors_are_clear(tmp_path, png, capsys):
    assert main([str(png), "--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
    npz = write_google_npz(tmp_path / "w.npz", Arch(patch=8, width=32, depth=2, heads=2, mlp=64, img_size=32))
    assert main([str(png), str(tmp_path / "nope.png"), "--model_type", "ViT-Test", "--checkpoint", str(npz)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [f"error: image {tmp_path / 'nope.png'} does not exist"]  # one line
    assert main([str(png), "--model_type", "ViT-B_16", "--checkpoint", str(npz)]) == 1  # 768 wide, file 32
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        f"error: checkpoint {npz} does not fit the preset ViT-B_16: its weights have width 32, 2 blocks, MLP 64, "
        "patch 8, the preset width 768, 12 blocks, MLP 3072, patch 16; it fits ViT-Test: give --model_type ViT-Test"
    )


def test_a_state_dict_of_another_width_names_the_assumed_preset_and_those_that_fit(tmp_path, png, capsys):
    path = tmp_path / "small.pth"
    torch.save(create_model("ViT-Ti_16", num_classes=10, img_size=32).state_dict(), path)
    assert main([str(png), "--checkpoint", str(path)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: checkpoint {path} does not fit the preset ViT-B_16 (assumed: no --model_type was ")
    assert "its weights have width 192, 12 blocks, MLP 768, patch 16" in line
    assert line.endswith("it fits ViT-Ti_16: give --model_type ViT-Ti_16")
    assert main([str(png), "--checkpoint", str(path), "--model_type", "ViT-Ti_16"]) == 0  # the fix works
    torch.save(create_model("ViT-Test", num_classes=10, num_layers=3).state_dict(), path)  # no preset has 3 blocks
    assert main([str(png), "--checkpoint", str(path), "--model_type", "ViT-Test"]) == 1
    assert "no preset has its sizes: build the model in Python" in capsys.readouterr().err


def test_presets_of_shape_compare_width_depth_mlp_and_patch():
    from vitlab.configs import presets_of_shape

    assert presets_of_shape(384, 12, 1536, 16) == ["ViT-S_16"]
    assert presets_of_shape(384, 12, 1536, 14) == ["dinov2_vits14", "dinov2_vits14_reg"]
    assert presets_of_shape(768, 12, 3072, None) == ["R50-ViT-B_16"]  # None: tokens from a ResNet stem
    assert presets_of_shape(384, 7, 1536, 16) == []


def test_evaluate_refuses_a_model_type_that_disagrees_with_the_runs_checkpoint(tmp_path, capsys):
    from vitlab import commands
    from vitlab.configs import get_experiment
    from vitlab.evaluate import main as evaluate_main

    model = create_model("ViT-Test", num_classes=10)
    checkpoint = save_checkpoint(tmp_path / "best.pt", {
        "model": model.state_dict(), "model_config": dataclasses.asdict(model.cfg), "step": 2,
        "config": get_experiment("smoke", data_dir=str(tmp_path / "none")).to_dict(),
    })  # fmt: skip
    assert commands.run(evaluate_main, ["--checkpoint", str(checkpoint), "--model_type", "ViT-B_16"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        f"error: --model_type ViT-B_16 disagrees with {checkpoint}, the checkpoint of a ViT-Test run: leave "
        "--model_type out (a run's checkpoint records its model) or give a checkpoint of that model"
    )
