"""vitlab.configs: which fields a config was given, the experiments, what a resumed run may change, and runs
named after what they are and found by their saved config rather than by their names."""

import copy
import os
import pickle

import pytest
from messages import raises_naming

from vitlab.configs import (
    EXPERIMENTS,
    TRANSFER,
    ConfigError,
    VITConfig,
    find_runs,
    get_experiment,
    get_model_config,
    resume_config,
)


def test_a_config_records_the_fields_it_was_given():
    assert VITConfig().fields_set == frozenset()
    cfg = VITConfig(learning_rate=0.03, num_steps=100)  # 0.03 is the default, and it was still given
    assert cfg.fields_set == {"learning_rate", "num_steps"}
    assert cfg.replace(seed=1).fields_set == {"learning_rate", "num_steps", "seed"}
    assert cfg.fields_set == {"learning_rate", "num_steps"}  # replace() makes a copy
    assert VITConfig.from_dict({"dataset": "synthetic"}).fields_set == {"dataset"}
    assert VITConfig.from_json(cfg.to_json()).fields_set == set(cfg.to_dict())  # a saved config sets every field
    for same in (copy.copy(cfg), copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert same == cfg and same.fields_set == cfg.fields_set
    scratch = get_experiment("scratch", num_steps=1000)
    # The recipe's values and the warm-up scaled to 1,000 steps are not the user's: a resume never compares them.
    assert scratch.fields_set == {"num_steps"} and scratch.warmup_steps == 50 and scratch.optimizer == "adamw"


def test_experiments_hold_only_what_differs_from_the_defaults():
    defaults = VITConfig().to_dict()
    for name, values in EXPERIMENTS.items():
        inherited = TRANSFER if name == "probe" else {}
        repeated = {k for k, v in values.items() if v == defaults[k] and inherited.get(k, v) == v}
        assert not repeated, f"experiment {name!r} sets fields to VITConfig's defaults: {sorted(repeated)}"
    assert EXPERIMENTS["probe"]["log_every"] == defaults["log_every"] != TRANSFER["log_every"]  # undoes transfer's


def test_a_resumed_run_compares_the_fields_set_not_those_that_differ_from_the_defaults():
    saved = get_experiment("smoke", name="run", learning_rate=0.1).to_dict()
    cfg, changes = resume_config(saved, VITConfig(name="run", resume="last", num_steps=40))
    assert (cfg.learning_rate, cfg.num_steps, changes) == (0.1, 40, {"num_steps": (20, 40)})
    # learning_rate given as VITConfig's default, 0.03: a change asked for, refused, not silently dropped.
    with raises_naming(ConfigError, "learning_rate", "0.1", "0.03"):  # the field and both values
        resume_config(saved, VITConfig(name="run", resume="last", learning_rate=0.03))
    # The experiment's own fields are set too, and equal to the saved run's: no change.
    cfg, changes = resume_config(saved, get_experiment("smoke", name="run", resume="last", learning_rate=0.1))
    assert changes == {} and cfg.to_dict() == {**saved, "resume": "last"}


def test_automatic_run_name_follows_experiment_model_and_dataset():
    cfg = get_experiment("scratch", dataset="synthetic", model_type="ViT-Test", test_cycles="20261121_080312")
    assert cfg.run_name == "scratch_ViT-Test_synthetic_20261121_080312"
    finetune = get_experiment("finetune", test_cycles="20261121_080312")
    assert finetune.run_name == "finetune_ViT-B_16_cifar10_20261121_080312"
    assert VITConfig(test_cycles="t").run_name == "vit_ViT-B_16_cifar10_t"
    assert cfg.replace(name="mine").run_name == "mine"


def test_find_runs_selects_by_saved_config_newest_first(tmp_path):
    # A synthetic-data run named like a real one must not be taken for it.
    runs = {
        "scratch_real": VITConfig(dataset="cifar10"),
        "Scratch_VIT_Cifar10_CIFAR3M_x": VITConfig(dataset="synthetic"),
        "finetune_real": VITConfig(dataset="cifar10", pretrained_dir="Pretrained/imagenet21k_ViT-B_16.npz"),
        "newer_scratch_real": VITConfig(dataset="cifar10"),
    }
    for age, (name, cfg) in enumerate(runs.items()):
        cfg.to_json(tmp_path / name / "config.json")
        os.utime(tmp_path / name / "config.json", (1_000_000 + age, 1_000_000 + age))
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")

    from_scratch = find_runs(tmp_path, lambda cfg: cfg.dataset == "cifar10" and not cfg.pretrained_dir)
    assert [folder.name for folder, _ in from_scratch] == ["newer_scratch_real", "scratch_real"]
    fine_tuned = find_runs(tmp_path, lambda cfg: bool(cfg.pretrained_dir))
    assert [(folder.name, cfg.dataset) for folder, cfg in fine_tuned] == [("finetune_real", "cifar10")]
    assert len(find_runs(tmp_path)) == 4
    assert find_runs(tmp_path / "missing") == []


@pytest.mark.parametrize(
    "typed, meant", [("ViT-B16", "ViT-B_16"), ("resnet_20", "ResNet-20"), ("dinov2_vits", "dinov2_vits14")]
)
def test_a_mistyped_model_name_gets_the_closest_valid_one(typed, meant):
    with pytest.raises(ValueError) as raised:
        get_model_config(typed)
    assert repr(typed) in str(raised.value) and f"did you mean {meant}?" in str(raised.value)
    with pytest.raises(ValueError) as raised:
        get_model_config("nope")
    assert "'nope'" in str(raised.value) and "did you mean" not in str(raised.value)  # nothing close: no guess
    assert "ViT-Ti_16" in str(raised.value)  # then the valid names


def test_model_names_are_found_without_regard_to_case():
    assert get_model_config("vit-b_16") == get_model_config("ViT-B_16")
    assert get_model_config("RESNET-20") == get_model_config("ResNet-20")
    assert get_model_config("DINOv2_ViTS14") == get_model_config("dinov2_vits14")


def test_a_mistyped_field_gets_the_closest_valid_one():
    with pytest.raises(TypeError) as raised:
        VITConfig(num_step=3)
    assert "'num_step'" in str(raised.value) and "num_steps" in str(raised.value)
    assert "eval_every" not in str(raised.value)  # the guess, not the 43 fields
    with pytest.raises(ConfigError) as raised:
        VITConfig(model_overrides={"hiden_size": 64})
    assert "'hiden_size'" in str(raised.value) and "hidden_size" in str(raised.value)


# --- model_config_from: a checkpoint's or a preset's fields as a ModelConfig -----------------------------
def test_model_config_from_fields_a_checkpoint_or_a_preset_records():
    import dataclasses
    import json

    from vitlab.configs import ModelConfig, model_config_from
    from vitlab.errors import BadType
    from vitlab.model import ModelConfig as ViTFields

    preset = get_model_config("R50-ViT-B_16")
    saved = json.loads(json.dumps(dataclasses.asdict(preset)))  # as a checkpoint or config.json holds it: lists
    rebuilt = model_config_from(saved)
    assert rebuilt == preset and isinstance(rebuilt, ModelConfig) and rebuilt.resnet_layers == (3, 4, 9)
    assert isinstance(rebuilt, ViTFields)  # the model's own fields, extended
    older = {k: v for k, v in saved.items() if k not in ("image_mean", "image_std", "gelu_approximate")}
    assert (model_config_from(older).image_mean, model_config_from(older).gelu_approximate) == ((0.5,) * 3, "none")
    assert model_config_from({"num_layers": 2}, preset="vit_b_16") == get_model_config("ViT-B_16", num_layers=2)
    assert model_config_from({}, preset="ViT-Test") == get_model_config("ViT-Test")
    with pytest.raises(TypeError) as raised:
        model_config_from({"hidden": 5})
    assert "'hidden'" in str(raised.value) and "hidden_size" in str(raised.value)  # the field, and the valid one
    with pytest.raises(BadType, match="a dict of its fields, got list"):
        model_config_from([("hidden_size", 5)])
    with pytest.raises(ValueError, match="not divisible by num_heads 5"):
        model_config_from({"num_heads": 5}, preset="ViT-Test")
