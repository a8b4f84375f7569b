"""What a run reads: the recipe's DINOv2 file found in any layout at hand, or named with the ways to get it."""

from pathlib import Path

import pytest

from vitlab.configs import get_experiment
from vitlab.training.inputs import missing_checkpoint, weights_at_hand


@pytest.mark.parametrize(
    "name",
    [
        "dinov2-small-hf.safetensors",  # the offline tool's file (Hugging Face's layout)
        "vit_small_patch14_dinov2.lvd142m.safetensors",  # timm's
        "dinov2-small/model.safetensors",  # Hugging Face's facebook/dinov2-small, downloaded as a folder
        "dinov2_vits14_other.pth",  # Meta's under another name
    ],
)
def test_the_transfer_recipe_takes_the_same_weights_in_another_layout(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pretrained" / name).parent.mkdir(parents=True)
    (tmp_path / "Pretrained" / name).write_bytes(b"")
    (tmp_path / "Pretrained" / "dinov2_vits14_reg4_pretrain.pth").write_bytes(b"")  # another model: registers
    notes = []
    cfg = weights_at_hand(get_experiment("transfer"), notes)
    assert Path(cfg.pretrained_dir) == Path("Pretrained") / name
    assert str(Path("Pretrained") / name) in notes[0] and "dinov2_vits14_pretrain.pth" in notes[0]
    assert "pretrained_dir" not in cfg.fields_set  # found, not typed: a resumed run compares what was typed


def test_a_pretrained_dir_given_is_taken_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pretrained").mkdir()
    (tmp_path / "Pretrained" / "dinov2-small-hf.safetensors").write_bytes(b"")
    cfg = get_experiment("transfer", pretrained_dir="Pretrained/dinov2_vits14_pretrain.pth")
    assert weights_at_hand(cfg, []) is cfg


def test_without_them_the_message_names_what_it_looked_for_and_both_ways_to_get_them(tmp_path):
    missing = missing_checkpoint(tmp_path / "dinov2_vits14_pretrain.pth")
    assert "python -m vitlab.download dinov2_vits14" in missing.how  # online
    assert "dinov2_small_weights.py --out Pretrained/dinov2-small-hf.safetensors" in missing.how  # offline
    assert f"{tmp_path}/*dinov2*small*" in missing.how
