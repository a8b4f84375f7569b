"""Bad input ends every command with one `error:` line (exit 1 or 2, no traceback), and the API refuses it.

The table runs each command's `main` in this process through `vitlab.commands.run`, exactly what
`python -m vitlab.<command>` does (a few real processes at the end check that wiring).
"""

import importlib
import os
import runpy
import sys

import numpy as np
import pytest
import torch
from messages import raises_naming
from PIL import Image

from vitlab import commands
from vitlab.configs import ModelConfig, VITConfig, get_experiment
from vitlab.factory import create_model


class _Evil:  # a pickle that would run a command when loaded without weights_only
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad inputs side by side: images, checkpoints, folders and files where folders belong."""
    work = tmp_path_factory.mktemp("bad_input")
    (work / "afile.txt").write_text("hello\n")
    (work / "adir").mkdir()
    Image.new("RGB", (40, 40), "red").save(work / "ok.png")
    (work / "notimage.png").write_text("not an image")
    (work / "empty.png").write_bytes(b"")
    (work / "truncated.png").write_bytes((work / "ok.png").read_bytes()[:60])
    Image.new("1", (20000, 20000)).save(work / "bomb.png")  # 4e8 pixels, 50 kB on disk
    torch.manual_seed(0)
    model = create_model("ViT-Test", num_classes=10)
    model_config = dict(vars(model.cfg))
    config = get_experiment("smoke").to_dict()
    torch.save({"model": model.state_dict(), "model_config": model_config, "config": config,
                "class_names": [str(i) for i in range(10)], "step": 1}, work / "good.pt")  # fmt: skip
    torch.save({"model": _Evil()}, work / "evil.pt")
    torch.save({"model": model.state_dict(), "model_config": {**model_config, "hidden_size": 64}}, work / "mismatch.pt")
    (work / "html.pt").write_text("<html><body>Not Found</body></html>")
    good = (work / "good.pt").read_bytes()
    (work / "truncated.pt").write_bytes(good[: len(good) // 2])  # torch's reader: "[Errno 22] Invalid argument"
    np.savez(work / "other.npz", weights=np.zeros(3))
    _bad_data(work)
    return work


def _bad_data(work):
    """Data folders with one fault each: a CIFAR label beyond the classes, a damaged CIFAR batch, image folders
    with a single class or two images in all."""
    import pickle

    from vitlab.data import write_synthetic_cifar

    for name in ("cifar_label15", "cifar_damaged"):
        write_synthetic_cifar(work / name, num_train=20, num_test=10, seed=0)  # 4 images per training batch
    batch = work / "cifar_label15" / "cifar-10-batches-py" / "data_batch_2"
    entry = pickle.loads(batch.read_bytes(), encoding="latin1")
    entry["labels"][1] = 15  # training image 5
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    (work / "cifar_damaged" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    for folder, classes in (("one_class", ("cat",)), ("two_images", ("cat", "dog"))):
        for name in classes:
            (work / folder / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), "red").save(work / folder / name / "0.png")
    Image.new("RGB", (32, 32), "blue").save(work / "one_class" / "cat" / "1.png")


def _run(module: str, argv: list[str], capsys) -> tuple[int, str]:
    """`python -m vitlab.<module> argv` in this process: (exit status, stderr)."""
    main = importlib.import_module(f"vitlab.{module}").main
    try:
        code = commands.run(main, [str(a) for a in argv])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    return code, capsys.readouterr().err


BAD_INPUT = [
    # (command, arguments, exit status, words the message must hold); {w} is the folder of `files`
    ("evaluate", [], 2, "required: --checkpoint"),
    ("evaluate", ["--checkpoint", "{w}/evil.pt"], 1, "evil.pt contains a pickled Python object (posix.system)"),
    ("evaluate", ["--checkpoint", "{w}/adir"], 1, "adir is a folder: give a checkpoint file"),
    ("evaluate", ["--checkpoint", "{w}/truncated.pt"], 1, "truncated.pt cannot be read ("),
    ("evaluate", ["--checkpoint", "{w}/mismatch.pt"], 1, "mismatch.pt: its weights do not fit its own model_config"),
    ("predict", ["{w}/ok.png", "--checkpoint", "{w}/html.pt"], 1, "html.pt is a web page (HTML)"),
    ("predict", ["{w}/ok.png", "--checkpoint", "{w}/other.npz"], 1, "other.npz is not a Google ViT .npz: it lacks"),
    ("evaluate", ["--checkpoint", "{w}/good.pt", "--batch_size", "0"], 2, "--batch_size: must be at least 1, got 0"),
    ("evaluate", ["--checkpoint", "{w}/good.pt", "--img_size", "0"], 2, "--img_size: must be at least 1"),
    ("evaluate", ["--checkpoint", "{w}/good.pt", "--img_size", "x"], 2, "expected an integer, got 'x'"),
    ("evaluate", ["--checkpoint", "{w}/good.pt", "--img_size", "30"], 1, "img_size 30 is not divisible by patch_size"),
    ("evaluate", ["--checkpoint", "{w}/good.pt", "--model_type", "ViT-B_16"], 1,
     "--model_type ViT-B_16 disagrees with {w}/good.pt, the checkpoint of a ViT-Test run"),
    ("evaluate", ["--checkpoint", "{w}/good.pt", "--device", "tpu"], 1, "unknown device 'tpu'"),
    ("evaluate", ["--checkpoint", "{w}/good.pt", "--dataset", "cifar10", "--data_dir", "{w}/afile.txt"], 1,
     "afile.txt is a file, not a folder"),
    ("predict", ["{w}/notimage.png", "--checkpoint", "{w}/good.pt"], 1,
     "notimage.png cannot be read (not an image format Pillow reads)"),
    ("predict", ["{w}/empty.png", "--checkpoint", "{w}/good.pt"], 1, "empty.png cannot be read (empty file)"),
    ("predict", ["{w}/truncated.png", "--checkpoint", "{w}/good.pt"], 1, "truncated.png cannot be read"),
    ("predict", ["{w}/bomb.png", "--checkpoint", "{w}/good.pt"], 1, "bomb.png is refused"),
    ("predict", ["{w}/adir", "--checkpoint", "{w}/good.pt"], 1, "folder {w}/adir holds no images"),
    ("predict", ["{w}/nope.png", "--checkpoint", "{w}/good.pt"], 1, "nope.png does not exist"),
    ("predict", ["{w}/ok.png", "--checkpoint", "{w}/good.pt", "--top_k", "0"], 2, "--top_k: must be at least 1"),
    ("predict", ["{w}/ok.png", "--checkpoint", "{w}/good.pt", "--labels", "{w}/adir"], 1,
     "label file {w}/adir is a directory"),
    ("predict", ["{w}/ok.png", "--checkpoint", "{w}/good.pt", "--labels", "{w}/notimage.png"], 1,
     "1 class names for a model with 10 classes"),
    ("predict", ["{w}/ok.png"], 2, "required: --checkpoint"),
    ("bench", ["--model", "nope"], 1, "unknown model 'nope'; valid names: ViT-Ti_16"),
    ("bench", ["--batch_size", "0"], 2, "--batch_size: must be at least 1"),
    ("bench", ["--trainer", "--precision", "bf16", "--compile"], 2, "--precision, --compile cannot be used with"),
    ("bench", ["--overrides", "[]"], 2, "--overrides is for --trainer"),
    ("bench", ["--model", "ViT-Test", "--img_size", "30"], 1, "img_size 30 is not divisible by patch_size 8"),
    ("bench", ["--model", "ViT-Test", "--img_size", "32", "--device", "cuda:99"], 1, "cuda:99"),
    ("bench", ["--model", "ViT-Test", "--img_size", "32", "--repeats", "0"], 2, "--repeats: must be at least 1"),
    ("bench", ["--model", "ViT-Test", "--img_size", "32", "--json", "{w}/adir"], 1, "adir is a directory"),
    ("bench", ["--model", "R50-ViT-B_16"], 1, "the timm twin is a plain ViT"),
    ("bench", ["--precision", "fp64"], 2, "argument --precision: invalid choice: 'fp64'"),
    ("bench", ["--steps", "-3"], 2, "--steps: must be at least 1, got -3"),
    ("factory", ["--bogus"], 2, "unrecognized arguments: --bogus"),
    ("download", [], 2, "give a checkpoint name (e.g. ViT-B_16) or --list"),
    ("download", ["ViT-B_16", "--dest", "{w}/afile.txt"], 1, "download folder {w}/afile.txt is a file"),
    ("download", ["ViT-B_16", "--timeout", "-1"], 2, "expected a positive number of seconds, got '-1'"),
    ("download", ["ViT-B_16", "--variant", "jft"], 2, "argument --variant: invalid choice: 'jft'"),
]  # fmt: skip


def facts(message: str | tuple) -> tuple:
    """What an error line must say: a phrase, or the facts (flag, value, file, the fix) in any wording."""
    return message if isinstance(message, tuple) else (message,)


TRAIN = ["--config", "smoke", "--num_steps", "2", "--progress", "false"]
BAD_TRAINING = [
    (["--model_overrides", '{"num_layerz": 1}'], 1, ("'num_layerz'", "num_layers?", "model_overrides")),
    (["--model_overrides", '{"num_layers": "two"}'], 1, "model_overrides.num_layers must be an integer, got 'two'"),
    (["--model_overrides", '{"num_classes": 5}'], 1, "model_overrides.num_classes is 5, but the data have 10 classes"),
    (["--model_overrides", "num_layers=2"], 1, "--model_overrides expects JSON such as"),
    (["--set", "num_steps=abc"], 1, "--num_steps expects an integer, got 'abc'"),
    (["--num_steps", "1.5"], 1, "--num_steps expects an integer, got '1.5'"),
    (["--set", "nonsense"], 1, "--set expects FIELD=VALUE, got 'nonsense'"),
    (["--set", "lr=0.1"], 1, ("unknown VITConfig field 'lr'", "valid VITConfig fields: TB_log, augment")),
    (["--set", "learning_rte=0.1"], 1, ("'learning_rte'", "learning_rate?")),
    (["--img_size", "0"], 1, "VITConfig.img_size must be >= 1, got 0"),
    (["--img_size", "30"], 1, "img_size 30 is not divisible by patch_size 8"),
    (["--model_overrides", '{"classifier": "cls"}'], 1, "unknown classifier 'cls': choose one of token, gap"),
    (["--model_overrides", '{"num_heads": 3}'], 1, "hidden_size 32 is not divisible by num_heads 3"),
    (["--model_overrides", '{"resnet_layers": [0]}'], 1, "resnet_layers must be a non-empty tuple of unit counts"),
    (["--label_smoothing", "2"], 1, "VITConfig.label_smoothing must be in [0, 1), got 2.0"),
    (["--max_grad_norm", "nan"], 1, "VITConfig.max_grad_norm must be >= 0, got nan"),
    (["--learning_rate", "inf"], 1, "VITConfig.learning_rate must be >= 0, got inf"),
    (["--TB_log", "maybe"], 1, "--TB_log expects true or false, got 'maybe'"),
    (["--device", "tpu"], 1, "unknown device 'tpu'"),
    (["--device", "cuda:99"], 1, "cuda:99"),
    (["--name", "../../escape"], 1, "run name '../../escape' is not a plain folder name"),
    (["--config", "{w}/adir"], 1, "adir' is a directory, not an experiment"),
    (["--config", "{w}/notimage.png"], 1, "notimage.png must end in .yaml, .yml, .json"),
    (["--dataset", "cifar10", "--data_dir", "{w}/afile.txt"], 1, "afile.txt is a file, not a folder"),
    (["--dataset", "imagenet"], 1, "unknown dataset 'imagenet'; valid names: cifar10"),
    (["--model_type", "ViT-X_99"], 1, ("'ViT-X_99'", "ViT-Ti_16, ")),
    (["--pretrained_dir", "nowhere.npz"], 1, "nowhere.npz does not exist"),
    (["--name", "x", "--resume"], 1, "cannot resume: Model/x/last.pt does not exist"),
    (["--resume", "{w}/evil.pt"], 1, "contains a pickled Python object (posix.system) besides tensors and was refused"),
    (["--resume", "{w}/html.pt"], 1, "html.pt is a web page (HTML), not a PyTorch checkpoint"),
    (["--resume", "{w}/adir"], 1, "adir is a folder: give a checkpoint file"),
    (["--resume", "{w}/truncated.pt"], 1, "the file is truncated or not a PyTorch checkpoint; copy it again"),
    (["--train_batch_size", "33", "--gradient_accumulation_steps", "2"], 1, "train_batch_size 33 is not divisible"),
    (["--bogus_flag", "1"], 2, "unrecognized arguments: --bogus_flag 1"),
    (["--warmup_step", "1"], 2, ("--warmup_step", "--warmup_steps?")),
    (["--dataset", "cifar10", "--data_dir", "{w}/cifar_label15"], 1,
     "training sample 5 (image 5 of the files in {w}/cifar_label15/cifar-10-batches-py) has label 15, but the data "
     "have 10 classes (labels 0 to 9)"),
    (["--dataset", "cifar10", "--data_dir", "{w}/cifar_damaged"], 1,
     "cifar10 files in {w}/cifar_damaged/cifar-10-batches-py are damaged "
     "({w}/cifar_damaged/cifar-10-batches-py/data_batch_3 cannot be read, UnpicklingError"),
    (["--dataset", "folder", "--data_dir", "{w}/two_images", "--val_split", "0.9"], 1,
     "the training set is empty: --val_split 0.9 holds out 2 of the 2 image(s) of the image folders in "
     "{w}/two_images for validation, which leaves none to train on; lower --val_split or add images"),
    (["--dataset", "folder", "--data_dir", "{w}/one_class"], 1,
     "the image folders in {w}/one_class have one class (cat): a classifier cannot learn anything from one class"),
]  # fmt: skip


@pytest.mark.parametrize("module, argv, status, message", BAD_INPUT)
def test_bad_input_ends_with_one_error_line(files, capsys, module, argv, status, message):
    code, err = _run(module, [a.format(w=files) for a in argv], capsys)
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(fact.format(w=files) in lines[0] for fact in facts(message))
    assert "weights_only" not in err


@pytest.mark.parametrize("argv, status, message", BAD_TRAINING)
def test_bad_training_input_ends_with_one_error_line_and_writes_nothing(
    files, tmp_path, monkeypatch, capsys, argv, status, message
):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{w}", str(files)) for a in argv]
    code, err = _run("train", [*TRAIN, "--data_dir", str(tmp_path / "data"), *argv], capsys)
    assert code == status, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(fact.replace("{w}", str(files)) in lines[0] for fact in facts(message))
    assert "weights_only" not in err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["data"])  # no run folder, no TensorBoard folder


@pytest.mark.filterwarnings("ignore:.*found in sys.modules")  # runpy runs an imported module again
@pytest.mark.parametrize("module", ["train", "evaluate", "predict", "download", "bench", "factory"])
def test_every_command_line_runs_its_main_through_cli_run(tmp_path, monkeypatch, capsys, module):
    """`python -m vitlab.<module> --no_such_flag`, its `__main__` block run here (runpy) to save a process start."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [module, "--no_such_flag"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module(f"vitlab.{module}", run_name="__main__")
    assert exit.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and line.endswith(f"(see python -m vitlab.{module} --help)")
    assert list(tmp_path.iterdir()) == []  # nothing written


def _offline(monkeypatch) -> None:
    """No network: every address fails as on a machine without one (DNS cannot resolve it)."""
    import urllib.error
    import urllib.request

    def no_network(*args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def test_offline_finetune_names_the_checkpoint_and_cifar_in_one_message_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    _offline(monkeypatch)
    monkeypatch.chdir(tmp_path)
    code, err = _run("train", ["--config", "finetune"], capsys)
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith(
        "error: this run needs 2 inputs that are not here and cannot be downloaded from here (no connection: "
    )
    assert (
        "(1) the ViT-B_16 checkpoint Pretrained/imagenet21k_ViT-B_16.npz does not exist: download "
        "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz and place it at "
        "Pretrained/imagenet21k_ViT-B_16.npz" in line
    )
    assert (
        "(2) CIFAR-10 is not in data/: download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and put "
        "cifar-10-python.tar.gz in data/" in line
    )
    assert "Nothing was written" in line and list(tmp_path.iterdir()) == []
    # One of them missing: the same message for it alone; a folder that is not there is named beside it.
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    code, err = _run("train", ["--config", "finetune"], capsys)
    assert code == 1 and err.startswith("error: the ViT-B_16 checkpoint Pretrained/imagenet21k_ViT-B_16.npz does not")
    code, err = _run("train", ["--config", "finetune", "--dataset", "folder", "--data_dir", "photos"], capsys)
    assert code == 1 and "(2) data_dir photos is not a folder: give a folder of class folders" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing of the runs


def test_missing_files_that_can_be_downloaded_are_fetched_by_the_run(tmp_path, monkeypatch):
    """Online (the server answers), check_inputs lets the run go on to download; only unreachable files stop it."""
    import urllib.request

    from vitlab.training.inputs import check_inputs

    class Answer:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    asked = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: asked.append(request.full_url) or Answer())
    check_inputs(get_experiment("finetune", data_dir=str(tmp_path / "data")))
    assert asked == [
        "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ]


def test_evaluate_offline_names_the_published_weights_and_the_folder_at_once(tmp_path, monkeypatch, capsys):
    _offline(monkeypatch)
    monkeypatch.chdir(tmp_path)
    argv = ["--checkpoint", "Pretrained/imagenet21k+imagenet2012_ViT-B_16-224.npz", "--model_type", "ViT-B_16",
            "--data_dir", "imagenet"]  # fmt: skip
    code, err = _run("evaluate", argv, capsys)
    assert code == 1 and err.startswith("error: this command needs 2 inputs that are not here")
    assert "(1) the ViT-B_16-224 checkpoint" in err and "(2) data_dir imagenet is not a folder" in err
    assert list(tmp_path.iterdir()) == []


# --- the Python API --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"img_size": 0}, "VITConfig.img_size must be >= 1, got 0"),
        ({"label_smoothing": 2}, r"VITConfig.label_smoothing must be in [0, 1), got 2.0"),
        ({"max_grad_norm": float("nan")}, "VITConfig.max_grad_norm must be >= 0, got nan"),
        ({"learning_rate": float("inf")}, "VITConfig.learning_rate must be >= 0, got inf"),
        ({"num_steps": "abc"}, "VITConfig.num_steps must be an integer, got 'abc' (str)"),
        ({"num_steps": 10.0}, "VITConfig.num_steps must be an integer, got 10.0 (float)"),
        ({"TB_log": 1}, "VITConfig.TB_log must be true or false, got 1 (int)"),
        ({"pretrained_dir": 3}, "VITConfig.pretrained_dir must be a string or None, got 3 (int)"),
        ({"model_overrides": [1]}, "VITConfig.model_overrides must be a dict (JSON object), got [1] (list)"),
        ({"model_overrides": {"num_layerz": 1}}, ("'num_layerz'", "num_layers?", "model_overrides")),
        ({"learning_rte": 0.1}, ("'learning_rte'", "learning_rate?")),
        ({"model_overrides": {"num_layers": "2"}}, "model_overrides.num_layers must be an integer, got '2' (str)"),
        ({"model_overrides": {"img_size": 64}}, "model_overrides.img_size 64 differs from img_size 224"),
        ({"optimizer": "adam"}, "unknown optimizer 'adam'; valid names: sgd, nesterov, adamw"),
        ({"val_split": 1.0}, "VITConfig.val_split must be in [0, 1), got 1.0"),
        ({"warmup_steps": -1}, "VITConfig.warmup_steps must be >= 0, got -1"),
        ({"name": "../../x"}, "run name '../../x' is not a plain folder name"),
        ({"name": "runs/a"}, "run name 'runs/a' is not a plain folder name"),
    ],
)
def test_vitconfig_checks_types_and_ranges(fields, message):
    for make in (
        lambda: VITConfig(**fields),
        lambda: VITConfig.from_dict(fields),
        lambda: VITConfig().replace(**fields),
    ):
        with pytest.raises((TypeError, ValueError)) as raised:
            make()
        assert all(fact in str(raised.value) for fact in facts(message))
    # numbers that are whole are fine where a float is expected; they become floats
    assert VITConfig(learning_rate=1).learning_rate == 1.0 and isinstance(
        VITConfig(learning_rate=1).learning_rate, float
    )


def test_config_json_errors_name_the_file(tmp_path):
    cases = {
        "broken.json": ("{not json", "broken.json is not valid JSON (Expecting property name"),
        "list.json": ("[1, 2]", "list.json: a VITConfig is a dict of fields, got list"),
        "typo.json": ('{"learning_rte": 0.1}', ("typo.json", "'learning_rte'", "learning_rate?")),
        "type.json": ('{"num_steps": "abc"}', "type.json: VITConfig.num_steps must be an integer, got 'abc'"),
        "binary.json": (b"\xff\xfe\x00", "binary.json is not valid JSON"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ValueError) as raised:
            VITConfig.from_json(path)
        assert all(fact in str(raised.value) for fact in facts(message))
    with pytest.raises(IsADirectoryError, match="is a directory: give a config.json file"):
        VITConfig.from_json(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_classes": -1}, "ModelConfig.num_classes must be >= 0, got -1"),
        ({"img_size": 0}, "ModelConfig.img_size must be >= 1, got 0"),
        ({"patch_size": 0}, "ModelConfig.patch_size must be >= 1, got 0"),
        ({"patch_size": -16}, "ModelConfig.patch_size must be >= 1, got -16"),
        ({"num_layers": 2.5}, "ModelConfig.num_layers must be an integer, got 2.5"),
        ({"classifier": "cls"}, "unknown classifier 'cls': choose one of token, gap"),
        ({"dropout_rate": 1.5}, "ModelConfig.dropout_rate must be in [0, 1), got 1.5"),
        ({"img_size": 30}, "img_size 30 is not divisible by patch_size 8"),
        ({"num_heads": 3}, "hidden_size 32 is not divisible by num_heads 3"),
        ({"hidden_sise": 3}, ("'hidden_sise'", "hidden_size?")),
    ],
)
def test_create_model_refuses_bad_arguments(overrides, message):
    with pytest.raises((TypeError, ValueError)) as raised:
        create_model("ViT-Test", **overrides)
    assert all(fact in str(raised.value) for fact in facts(message))


def test_model_config_accepts_json_lists():
    assert ModelConfig(resnet_layers=[3, 4, 9]).resnet_layers == (3, 4, 9)


def test_damaged_cifar_files_are_reported_as_damaged(tmp_path):
    from vitlab.data import load_cifar, write_synthetic_cifar

    write_synthetic_cifar(tmp_path, num_train=20, num_test=10, seed=0)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(ValueError) as damaged:
        load_cifar("cifar10", tmp_path, train=True, download=False)
    message = str(damaged.value)
    assert message.startswith(f"cifar10 files in {folder} are damaged ({folder / 'data_batch_1'} cannot be read, ")
    assert message.endswith(
        "): delete that folder to download them again, or extract cifar-10-python.tar.gz there anew"
    )
    (folder / "data_batch_1").unlink()
    for train in (True, False):  # torchvision wants every file for either split
        with raises_naming(ValueError, folder / "data_batch_1", "missing"):
            load_cifar("cifar10", tmp_path, train=train, download=False)


def test_an_error_in_a_dataloader_worker_is_its_own_one_line():
    caught = ValueError(
        "Caught UnreadableImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n    read()\n'
        "vitlab.images.UnreadableImageError: image a/b.jpg cannot be read (empty file): the run stops\n"
    )
    assert commands.describe(caught) == "image a/b.jpg cannot be read (empty file): the run stops"


def test_predict_refuses_top_k_below_one():
    from vitlab.predict import predict

    model = create_model("ViT-Test", num_classes=10)
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        predict(model, torch.zeros(3, 32, 32), top_k=0)
    assert len(predict(model, torch.zeros(3, 32, 32), top_k=20)) == 10  # more than there are classes: all of them


@pytest.mark.parametrize(
    "label, shown",
    [("cat", "'cat' (str)"), (2.5, "2.5 (float)"), (None, "None (NoneType)"), (-1, "-1 (int)"), (True, "True (bool)"),
     (torch.tensor(1.0), "1.0 (float)")],
)  # fmt: skip
def test_training_refuses_labels_that_are_not_class_indices(label, shown):
    from vitlab.training.batches import SeededSamples, class_index

    assert class_index(torch.tensor(3), 0) == 3 and class_index(np.int64(4), 0) == 4
    samples = SeededSamples([(torch.zeros(3, 8, 8), 1)] * 5 + [(torch.zeros(3, 8, 8), label)], seed=0)
    with raises_naming(ValueError, "training sample 5", f"label {shown}"):
        samples[(0, 5)]


def test_atomic_write_honours_the_umask(tmp_path):
    from vitlab.files import atomic_write

    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "out.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o640


def test_a_torchrun_job_waits_ddp_timeout_for_a_hung_process(monkeypatch):
    import torch.distributed as dist

    from vitlab.training.devices import setup_distributed

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    setup_distributed(VITConfig(device="cpu", ddp_timeout=90))
    assert seen == {"backend": "gloo", "timeout": __import__("datetime").timedelta(seconds=90)}
    with pytest.raises(ValueError, match="VITConfig.ddp_timeout must be >= 1, got 0"):
        VITConfig(ddp_timeout=0)


@pytest.mark.parametrize("flag", ["--log_dir", "--output_dir"])
def test_an_output_folder_that_is_a_file_is_refused_before_any_work(tmp_path, flag, capsys, monkeypatch):
    from vitlab import commands
    from vitlab.train import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    argv = ["--config", "smoke", "--name", "r", flag, "taken", "--progress", "false"]
    assert commands.run(main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {flag} taken is a file, not a folder: give a folder (it is made when missing) or move the "
                   "file away; nothing was written"]  # fmt: skip
    assert not (tmp_path / "Model" / "r").exists() and not (tmp_path / "TB_log" / "r").exists()
    assert not (tmp_path / "data").exists()  # refused before the synthetic data were written
