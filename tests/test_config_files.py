"""Config files: YAML and JSON round trips of every experiment, comments, and clear errors."""

from __future__ import annotations

import json

import pytest
import yaml

from vitlab.configs import EXPERIMENTS, VITConfig, export_config, get_experiment, load_config


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_every_experiment_round_trips_through_a_file(tmp_path, experiment, fmt):
    cfg = get_experiment(experiment, learning_rate=3e-5, model_overrides={"drop_path_rate": 0.1}, name="x: y")
    path = tmp_path / f"{experiment}.{fmt}"
    path.write_text(export_config(cfg, fmt, title=experiment))
    loaded = load_config(path)
    assert loaded == cfg.replace(test_cycles=loaded.test_cycles)  # a fresh run name for each run from the file
    assert "test_cycles" not in (yaml.safe_load if fmt == "yaml" else json.loads)(path.read_text())


def test_yaml_export_comments_every_field_and_reads_as_plain_yaml():
    text = export_config(get_experiment("scratch"))
    values = yaml.safe_load(text)
    assert values["learning_rate"] == 1e-3 and values["model_type"] == "ViT-CIFAR-3M"
    assert "learning_rate: 0.001  # peak learning rate, reached at the end of warmup" in text.splitlines()
    field_lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(field_lines) == len(values) and all("  # " in line for line in field_lines)


def test_yaml_written_by_hand(tmp_path):
    path = tmp_path / "mine.yml"
    # What a MindCV or timm user writes: YAML 1.1 reads 1e-3 and 5e-2 as strings, vitlab as numbers.
    path.write_text("dataset: folder\ndata_dir: photos\nlearning_rate: 1e-3\nweight_decay: 5e-2\nnum_steps: 300\n")
    cfg = load_config(path)
    assert (cfg.dataset, cfg.data_dir, cfg.num_steps) == ("folder", "photos", 300)
    assert cfg.learning_rate == 1e-3 and cfg.weight_decay == 0.05
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml").dataset == VITConfig().dataset


def test_bad_config_files_say_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [cifar10\n")
    with pytest.raises(ValueError, match="config file .*bad.yaml is not valid YAML"):
        load_config(bad)
    (tmp_path / "bad.json").write_text("{'dataset': 1}")
    with pytest.raises(ValueError, match="config file .*bad.json is not valid JSON"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping of VITConfig fields, got list"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("learning_rte: 0.1\n")
    with pytest.raises(TypeError, match="unknown VITConfig field"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="config file .*latin1.yaml is not UTF-8 text"):
        load_config(tmp_path / "latin1.yaml")
    with pytest.raises(FileNotFoundError, match="config file .*nowhere.yaml does not exist"):
        load_config(tmp_path / "nowhere.yaml")
    with pytest.raises(ValueError, match=r"must end in .yaml, .yml, .json"):
        load_config(tmp_path / "config.txt")


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_print_config_writes_a_file_the_command_line_reads_back(tmp_path, capsys, fmt):
    from vitlab.train import main
    from vitlab.training.flags import config_from_args

    main(["--config", "imagenet", "--data_dir", "/data/imagenet", "--print_config", fmt])
    path = tmp_path / f"imagenet.{fmt}"
    path.write_text(capsys.readouterr().out)
    cfg = config_from_args(["--config", str(path), "--num_steps", "10"])
    expected = get_experiment("imagenet", data_dir="/data/imagenet", num_steps=10, test_cycles=cfg.test_cycles)
    assert cfg == expected
    assert not (tmp_path / "Model").exists()  # printing trains nothing
