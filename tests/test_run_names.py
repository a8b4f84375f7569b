"""Runs are named after what they are, and found by their saved config rather than by their names."""

import os

from vitlab.configs import VITConfig, find_runs, get_experiment


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
