"""Run checkpoints: atomic writes, clear errors for damaged files, the model rebuilt exactly."""

import dataclasses
import pickle

import pytest
import torch
from conftest import randomize_

import vitlab
from vitlab.weights.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint


def _run_checkpoint(tmp_path):
    model = randomize_(vitlab.create_model("ViT-Test", num_classes=3)).eval()
    state = {
        "model": model.state_dict(),
        "model_config": dataclasses.asdict(model.cfg),
        "class_names": ["a", "b", "c"],
        "step": 7,
    }
    return model, save_checkpoint(tmp_path / "run" / "best.pt", state)


def test_gelu_choice_is_saved_and_old_checkpoints_keep_the_exact_gelu(tmp_path):
    model = randomize_(vitlab.create_model("ViT-Test", num_classes=3, gelu_approximate="tanh")).eval()
    fields = dataclasses.asdict(model.cfg)
    save_checkpoint(tmp_path / "tanh.pt", {"model": model.state_dict(), "model_config": fields})
    rebuilt, _ = model_from_checkpoint(tmp_path / "tanh.pt")
    assert rebuilt.cfg.gelu_approximate == "tanh"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt(x), model(x), atol=0, rtol=0)
    del fields["gelu_approximate"]  # written before the field existed, when every model used the exact GELU
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "model_config": fields})
    assert model_from_checkpoint(tmp_path / "old.pt")[0].cfg.gelu_approximate == "none"


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model, path = _run_checkpoint(tmp_path)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary file left behind
    rebuilt, names = model_from_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt(x), model(x), atol=0, rtol=0)
    assert names == ["a", "b", "c"] and load_checkpoint(path)["step"] == 7


def test_failed_write_keeps_the_old_file(tmp_path):
    _, path = _run_checkpoint(tmp_path)
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError)):
        save_checkpoint(path, {"bad": lambda: None})  # not picklable: fails mid-write
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.unlink(), "does not exist"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated or not a PyTorch checkpoint"),
    ],
)
def test_damaged_checkpoints_give_clear_errors(tmp_path, damage, message):
    _, path = _run_checkpoint(tmp_path)
    damage(path)
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        model_from_checkpoint(path)


def test_plain_state_dict_is_not_a_run_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "weights.pt", vitlab.create_model("ViT-Test").state_dict())
    with pytest.raises(ValueError, match="not a vitlab run checkpoint"):
        model_from_checkpoint(path)


def test_a_model_config_vitlab_cannot_build_names_the_file_and_the_field(tmp_path):
    model = vitlab.create_model("ViT-Test")
    fields = {**dataclasses.asdict(model.cfg), "rotary": True}  # a field this vitlab does not know
    save_checkpoint(tmp_path / "new.pt", {"model": model.state_dict(), "model_config": fields})
    with pytest.raises(ValueError) as raised:
        model_from_checkpoint(tmp_path / "new.pt")
    assert "new.pt" in str(raised.value) and "'rotary'" in str(raised.value)  # the file and the field
