"""The numeric answers of the exercises of notebooks 4 and 5, computed with vitlab.

Notebooks 1-3, 6 and 7 check their answers in a cell after each exercise, so their smoke run fails when an answer
goes wrong. Notebooks 4 and 5 are committed with the outputs of half-hour runs that a new cell would invalidate, so
their answers are checked here, each against the number written in the notebook's folded answer.
"""

import math
from pathlib import Path

import nbformat
import pytest
import torch

import vitlab

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CPU_MODEL = dict(hidden_size=128, num_layers=4, num_heads=4, mlp_dim=256)  # notebook 4's CPU recipe


def exercises(name: str) -> str:
    """The markdown of the notebook's Exercises section."""
    cells = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4).cells
    start = next(i for i, cell in enumerate(cells) if cell.source.startswith("## Exercises"))
    return "\n".join(cell.source for cell in cells[start:] if cell.cell_type == "markdown")


@pytest.mark.parametrize(("patch_size", "tokens"), [(4, 65), (8, 17), (2, 257)])
def test_notebook_4_tokens_of_the_cpu_model(patch_size, tokens):
    with torch.device("meta"):
        model = vitlab.create_model("ViT-CIFAR-3M", num_classes=10, img_size=32, **CPU_MODEL, patch_size=patch_size)
    assert model.pos_embed.shape[1] == tokens == model.patch_embed.num_patches + 1
    assert f"**{tokens} tokens**" in exercises("04_train_from_scratch")


def test_notebook_4_parameters_and_passes_over_the_photos():
    with torch.device("meta"):
        model = vitlab.create_model("ViT-CIFAR-3M", num_classes=10, img_size=32, **CPU_MODEL)
    block = sum(p.numel() for p in model.encoder.blocks[0].parameters())
    text = exercises("04_train_from_scratch")
    assert model.get_num_params() == 546_186 and "**546,186**" in text
    assert block == 132_480 and "132{,}480" in text
    assert round(1_500 * 64 / 3_355, 1) == 28.6 and "**about 28.6 passes**" in text


def test_notebook_4_the_least_loss_label_smoothing_allows():
    smoothing, classes = 0.1, 10
    right = 1 - smoothing + smoothing / classes  # 0.91
    wrong = smoothing / classes  # 0.01 for each of the other nine
    entropy = -right * math.log(right) - (classes - 1) * wrong * math.log(wrong)
    assert round(entropy, 2) == 0.50 and "0.50" in exercises("04_train_from_scratch")


def test_notebook_5_tokens_and_parameters_at_112_px():
    with torch.device("meta"):
        model = vitlab.create_model("dinov2_vits14", num_classes=10, img_size=112)
    text = exercises("05_finetune_pretrained")
    assert model.patch_embed.grid_size == 8 and model.pos_embed.shape[1] == 65 and "**65 tokens**" in text
    assert round((257 / 65) ** 2) == 16 and "about 16 times" in text
    head = sum(p.numel() for p in model.head.parameters())
    assert model.get_num_params() == 21_558_922 and "**21,558,922**" in text
    assert head == 3_850 and "**3,850**" in text and f"{100 * head / model.get_num_params():.3f}%" in text


def test_notebook_5_the_zero_heads_accuracy_is_the_share_of_one_class():
    assert f"{100 * 97 / 932:.2f}%" == "10.41%" and "97 of the 932 test photos, 10.41%" in exercises(
        "05_finetune_pretrained"
    )
