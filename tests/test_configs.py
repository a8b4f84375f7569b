"""vitlab.configs: which fields a config was given, the experiments, and what a resumed run may change."""

import copy
import pickle

import pytest

from vitlab.configs import EXPERIMENTS, TRANSFER, ConfigError, VITConfig, get_experiment, resume_config


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
    assert scratch.fields_set == set(EXPERIMENTS["scratch"]) | {"num_steps", "warmup_steps"}  # warm-up scaled


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
    with pytest.raises(
        ConfigError, match=r"learning_rate cannot change \(learning_rate: the run has 0.1, given 0.03\)"
    ):
        resume_config(saved, VITConfig(name="run", resume="last", learning_rate=0.03))
    # The experiment's own fields are set too, and equal to the saved run's: no change.
    cfg, changes = resume_config(saved, get_experiment("smoke", name="run", resume="last", learning_rate=0.1))
    assert changes == {} and cfg.to_dict() == {**saved, "resume": "last"}
