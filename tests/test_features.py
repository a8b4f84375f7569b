"""The linear probe's features: computed once, kept on disk under a name that changes with anything they depend on."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_
from test_transfer import _cfg as transfer_cfg
from test_transfer import _data
from torch.utils.data import TensorDataset

import vitlab
from vitlab.configs import VITConfig
from vitlab.train import train
from vitlab.training.features import backbone_features, cache_folder, compute_features


def _cfg(tmp_path, **overrides) -> VITConfig:
    """test_transfer's small run, as a linear probe on fixed features."""
    probe = dict(eval_batch_size=20, num_steps=20, eval_every=10, log_every=5, learning_rate=1e-2,
                 freeze_backbone=True, augment="none")  # fmt: skip
    return transfer_cfg(tmp_path, **{**probe, **overrides})


def _model(classifier="token_gap"):
    torch.manual_seed(1)
    return randomize_(vitlab.create_model("ViT-Test", classifier=classifier, num_classes=10))


def _features(model, data, cfg, lines=None):
    said = [] if lines is None else lines
    out = backbone_features(model, data, cfg, torch.device("cpu"), cfg.precision, said.append)
    return out.tensors, said[-1]


def test_a_second_pass_reads_the_features_it_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "cache"))
    cfg, model, data = _cfg(tmp_path), _model(), _data()
    (features, labels), first = _features(model, data, cfg)
    assert "computed in" in first and str(tmp_path / "cache" / "features") in first
    assert features.shape == (48, 2 * model.cfg.hidden_size)  # CLS beside the mean patch token
    expected = compute_features(model, data, cfg, torch.device("cpu"), "fp32")
    torch.testing.assert_close(features, expected[0], rtol=0, atol=0)
    assert torch.equal(labels, data.tensors[1])
    calls = []
    monkeypatch.setattr(model, "forward_features", lambda x: calls.append(x) or 1 / 0)
    (again, labels_again), second = _features(model, data, cfg)
    assert "read from the cache" in second and not calls  # the backbone did not run
    assert torch.equal(again, features) and torch.equal(labels_again, labels)


@pytest.mark.parametrize("change", ["a photo", "a label", "a weight", "the pooling", "the precision", "the size"])
def test_anything_the_features_depend_on_gives_another_file(tmp_path, monkeypatch, change):
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "cache"))
    cfg, model, data = _cfg(tmp_path), _model(), _data()
    _features(model, data, cfg)
    images, labels = data.tensors[0].clone(), data.tensors[1].clone()
    precision = "fp32"
    if change == "a photo":
        images[7, 0, 3, 3] += 0.01
    elif change == "a label":
        labels[0] = (labels[0] + 1) % 10
    elif change == "a weight":
        with torch.no_grad():
            model.encoder.blocks[0].attn.to_qkv.weight[0, 0] += 1e-3
    elif change == "the pooling":
        state = model.state_dict()
        model = _model("token")
        model.head = torch.nn.Linear(model.cfg.hidden_size, 10)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=False)
    elif change == "the precision":
        precision = "bf16"
    else:
        images = torch.nn.functional.interpolate(images, size=40)
        model = randomize_(vitlab.create_model("ViT-Test", classifier="token_gap", num_classes=10, img_size=40))
    (features, _), line = _features(model, TensorDataset(images, labels), cfg.replace(precision=precision))
    assert "computed in" in line, change
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 2
    if change == "a label":  # the features are the same images' features, the labels follow the data
        assert torch.equal(_features(model, TensorDataset(images, labels), cfg)[0][1], labels)


def test_a_damaged_or_unwritable_cache_costs_only_the_feature_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "cache"))
    cfg, model, data = _cfg(tmp_path), _model(), _data()
    (features, _), _ = _features(model, data, cfg)
    (kept,) = (tmp_path / "cache" / "features").glob("*.pt")
    kept.write_bytes(kept.read_bytes()[:100])  # cut short, as by a full disk in an older version
    (again, _), line = _features(model, data, cfg)
    assert "computed in" in line and torch.equal(again, features)
    assert torch.load(kept, weights_only=True)["features"].shape == features.shape  # written whole again
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("VITLAB_CACHE", str(blocked))
    (third, _), line = _features(model, data, cfg)
    assert "not kept" in line and "the next probe computes them again" in line and torch.equal(third, features)


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("VITLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == tmp_path / "xdg" / "vitlab" / "features"
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "mine"))
    assert cache_folder() == tmp_path / "mine" / "features"


def test_a_second_probe_run_starts_from_the_kept_features_and_trains_the_same(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "cache"))
    train_set, val_set = _data(48), _data(20, seed=1)
    results, outputs = [], []
    for name in ("first", "second"):
        model = _model()
        seen = []
        model.encoder.register_forward_hook(lambda module, args, out, seen=seen: seen.append(args[0].shape[0]))
        results.append(train(_cfg(tmp_path, name=name), train_set=train_set, val_set=val_set, model=model))
        outputs.append(capsys.readouterr().out)
        results[-1]["encoder_images"] = sum(seen)
    assert outputs[0].count("computed in") == 2 and outputs[1].count("read from the cache") == 2
    assert results[0]["encoder_images"] == len(train_set) + len(val_set) and results[1]["encoder_images"] == 0
    assert [h["loss"] for h in results[0]["history"]] == [h["loss"] for h in results[1]["history"]]
    assert results[0]["best_val_accuracy"] == results[1]["best_val_accuracy"]
    head = results[1]["model"].head
    assert head.in_features == 2 * results[1]["model"].cfg.hidden_size


def test_a_long_feature_pass_says_how_far_it_is(tmp_path, monkeypatch):
    import vitlab.training.features as features_module

    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(features_module, "PROGRESS_SECONDS", 0)  # every batch counts as a minute
    lines = []
    _features(_model(), _data(48), _cfg(tmp_path), lines)
    assert lines[0].startswith("  features: 20 of 48 images, ") and lines[1].startswith("  features: 40 of 48 images")
    assert "computed in" in lines[-1]
