"""The package's public names are what they say, however the package was imported."""

import subprocess
import sys

import pytest

import vitlab

FUNCTIONS = ["create_model", "list_models", "load_pretrained", "save_npz"]
COMMANDS = ["download", "predict", "train", "evaluate"]  # modules: the command and the function of that name


def test_public_functions_are_functions():
    for name in FUNCTIONS:
        assert callable(getattr(vitlab, name)), name
        assert getattr(vitlab, name).__name__ == name
    cfg = vitlab.VITConfig(dataset="cifar10", model_type="ViT-B_16", num_steps=500)
    assert cfg.num_steps == 500 and cfg.log_dir == "./TB_log/"


def test_command_modules_hold_the_function_of_their_name_however_imported():
    code = (
        "import importlib, sys, types, vitlab\n"
        f"names = {COMMANDS!r}\n"
        "before = [getattr(vitlab, name) for name in names]\n"  # a bare `import vitlab`: found on first use
        "after = [importlib.import_module(f'vitlab.{name}') for name in names]\n"
        "assert before == after and all(isinstance(m, types.ModuleType) for m in after)\n"
        "assert all(getattr(m, name).__name__ == name for m, name in zip(after, names))\n"
        "assert vitlab.predict.load_image is importlib.import_module('vitlab.predict').load_image\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_a_command_module_called_is_its_function():
    # `vitlab.train(cfg)` is the first guess of someone who met `vitlab.create_model(...)`: it works.
    import torch

    model = vitlab.create_model("ViT-Test", num_classes=3)
    images, labels = torch.zeros(4, 3, 32, 32), [0, 1, 2, 0]
    scores = vitlab.evaluate(model, list(zip(images, labels)), batch_size=2)
    assert scores == vitlab.evaluate.evaluate(model, list(zip(images, labels)), batch_size=2)
    assert {"top1", "top5", "loss"} <= set(scores)
    code = (
        "import vitlab, vitlab.train\n"
        "vitlab.train.train = lambda *args, **kwargs: (args, kwargs)\n"  # the call goes through the module's function
        "assert vitlab.train('cfg', model=1) == (('cfg',), {'model': 1})\n"
        "assert callable(vitlab.download) and callable(vitlab.predict)\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_module_cli_runs_without_runpy_warning():
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "vitlab.download", "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "imagenet21k_ViT-B_16.npz" in result.stdout
    assert "RuntimeWarning" not in result.stderr


def test_import_and_command_modules_load_only_what_they_need():
    # `import vitlab` is lazy (names load on first use) and the training and download commands do
    # not import torchvision (whose import pulls in torch._dynamo), TensorBoard or matplotlib
    # before they need them: `--help` and `--list` answer in about the time `import torch` takes.
    code = (
        "import sys, vitlab\n"
        "assert 'torch' not in sys.modules, 'import vitlab imported torch'\n"
        "vitlab.VITConfig, vitlab.list_models, vitlab.create_model\n"
        "import vitlab.train, vitlab.download, vitlab.evaluate\n"
        "heavy = ['torch._dynamo', 'torchvision', 'tensorboard', 'matplotlib', 'timm']\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_public_name_is_importable_and_listed():
    assert len(vitlab.__all__) == len(set(vitlab.__all__)) == 17
    for name in vitlab.__all__:
        assert getattr(vitlab, name) is not None, name
        assert name in dir(vitlab)
    namespace = {}
    exec("from vitlab import *", namespace)
    assert set(vitlab.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        getattr(vitlab, "nothing_here")  # noqa: B009 (the attribute access is what is tested)
