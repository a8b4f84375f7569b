"""The public names of design.md are what they say, however the package was imported."""

import subprocess
import sys

import vitlab
import vitlab.download
import vitlab.evaluate
import vitlab.predict
import vitlab.train  # importing the submodules must not hide the functions of the same name

FUNCTIONS = ["create_model", "list_models", "load_pretrained", "save_npz", "download", "predict", "train", "evaluate"]


def test_public_functions_are_functions():
    for name in FUNCTIONS:
        assert callable(getattr(vitlab, name)), name
        assert getattr(vitlab, name).__name__ == name
    cfg = vitlab.VITConfig(dataset="cifar10", model_type="ViT-B_16", num_steps=500)
    assert cfg.num_steps == 500 and cfg.log_dir == "./TB_log/"


def test_module_cli_runs_without_runpy_warning():
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "vitlab.download", "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "imagenet21k_ViT-B_16.npz" in result.stdout
    assert "RuntimeWarning" not in result.stderr
