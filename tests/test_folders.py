"""Image folders: both layouts, transforms for any image size, bad folders, class matching, the commands end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from messages import raises_naming
from PIL import Image
from torchvision.transforms import functional as TF

from vitlab.configs import VITConfig
from vitlab.data import (
    ImageFolder,
    build_datasets,
    build_folder_eval_set,
    build_transforms,
    folder_transforms,
    match_class_names,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
CLASSES = ("circle", "square", "stripes")


def make_image(label: int, size: tuple[int, int], rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    """A learnable image of class `label` (a bright disc, square or stripes on noise) of any size and mode."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    cy, cx = rng.uniform(0.3, 0.7, size=2) * (height / max(height, width), width / max(height, width))
    mask = [
        (yy - cy) ** 2 + (xx - cx) ** 2 < 0.06,
        (abs(yy - cy) < 0.2) & (abs(xx - cx) < 0.2),
        (np.floor(xx * 12) % 2) == 0,
    ][label]
    pixels = rng.integers(0, 90, size=(height, width, 3))
    pixels[mask] = (230, 200 - 80 * label, 40 + 90 * label)
    return Image.fromarray(pixels.astype(np.uint8)).convert(mode)


def write_folder(root: Path, per_class: int, seed: int = 0, classes=CLASSES) -> Path:
    """Class folders of made images in several sizes and modes (RGB, RGBA, greyscale, palette)."""
    rng = np.random.default_rng(seed)
    modes = ("RGB", "RGBA", "L", "P")
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (int(rng.integers(24, 64)), int(rng.integers(24, 64)))
            suffix = (".png", ".jpg")[i % 2] if modes[i % 4] in ("RGB", "L") else ".png"
            shape = CLASSES.index(name) if name in CLASSES else label
            make_image(shape, size, rng, modes[i % 4]).save(root / name / f"{i}{suffix}")
    return root


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("flat"), per_class=12)
    (root / "circle" / "notes.txt").write_text("not an image")
    (root / ".ipynb_checkpoints").mkdir()  # Jupyter's hidden folder is no class
    return root


@pytest.fixture(scope="module")
def imagenet_layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_layout")
    write_folder(root / "train", per_class=16, seed=1)
    write_folder(root / "val", per_class=4, seed=2)
    write_folder(root / "test", per_class=5, seed=3)
    return root


def folder_cfg(data_dir, **overrides) -> VITConfig:
    values = dict(dataset="folder", data_dir=str(data_dir), model_type="ViT-Test", img_size=32, augment="basic")
    return VITConfig(**{**values, **overrides})


# --- datasets -------------------------------------------------------------------------------------
def test_flat_folder_holds_out_val_split_reads_any_image_as_rgb(flat, capsys):
    train, val, test, names = build_datasets(folder_cfg(flat, val_split=0.25, augment="finetune", img_size=48))
    out = capsys.readouterr().out
    assert "skipped 1 non-image file(s)" in out and "notes.txt" in out
    assert names == list(CLASSES) and test is None
    assert (len(train), len(val)) == (27, 9)  # 36 images, 25% held out
    assert set(train.indices).isdisjoint(val.indices)
    assert isinstance(train.base, torchvision.datasets.ImageFolder)  # torchvision's reading code
    for dataset in (train, val):
        for index in range(4):  # RGB, RGBA, L and P images of different sizes
            image, label = dataset[index]
            assert image.shape == (3, 48, 48) and image.dtype == torch.float32
            assert -1.0 <= image.min() and image.max() <= 1.0 and 0 <= label < 3


def test_imagenet_layout_uses_val_and_test_folders(imagenet_layout):
    train, val, test, names = build_datasets(folder_cfg(imagenet_layout, val_split=0.5))
    assert names == list(CLASSES)
    assert (len(train), len(val), len(test)) == (48, 12, 15)  # val_split is not used: val/ is the split
    assert Path(val.base.root).name == "val" and Path(test.base.root).name == "test"
    assert sorted(test.base.targets) == [0] * 5 + [1] * 5 + [2] * 5


def test_folder_transforms_are_the_cifar_transforms_on_32px_images():
    image = make_image(0, (32, 32), np.random.default_rng(0))
    for augment in ("basic", "strong"):
        for seed in range(4):
            torch.manual_seed(seed)
            ours = folder_transforms(augment, 32, train=True)(image)
            torch.manual_seed(seed)
            torch.testing.assert_close(ours, build_transforms(augment, 32, train=True)(image), rtol=0, atol=0)
    torch.testing.assert_close(folder_transforms("none", 32, False)(image), build_transforms("none", 32, False)(image))


def test_folder_evaluation_resizes_the_shorter_side_and_centre_crops():
    image = make_image(1, (64, 48), np.random.default_rng(0))
    ours = folder_transforms("randaugment", 28, train=False, crop_pct=0.875, mean=(0.0,) * 3, std=(1.0,) * 3)(image)
    resized = TF.resize(image, 32)  # 28 / 0.875: shorter side 48 -> 32, longer 64 -> 42 (truncated)
    assert resized.size == (42, 32)
    torch.testing.assert_close(ours, TF.to_tensor(TF.center_crop(resized, 28)))
    train = folder_transforms("randaugment", 28, train=True)
    assert [type(t).__name__ for t in train.transforms][:3] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "RandAugment",
    ]
    assert train(image).shape == (3, 28, 28)


# --- bad folders ----------------------------------------------------------------------------------
def test_bad_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir .*nowhere is not a folder"):
        build_datasets(folder_cfg(tmp_path / "nowhere"))
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        make_image(0, (32, 32), np.random.default_rng(i)).save(loose / f"{i}.png")
    with raises_naming(ValueError, "loose", "no class folders", "3 images"):
        build_datasets(folder_cfg(loose))
    empty = write_folder(tmp_path / "empty", per_class=2)
    (empty / "zebra").mkdir()
    (empty / "zebra" / "readme.txt").write_text("no images here")
    with raises_naming(ValueError, "zebra", "empty", ".jpg"):
        ImageFolder(empty)
    differ = tmp_path / "differ"
    write_folder(differ / "train", per_class=2)
    write_folder(differ / "val", per_class=2, classes=("circle", "square", "triangle"))
    with pytest.raises(ValueError, match="only in the first: stripes; only in the second: triangle"):
        build_datasets(folder_cfg(differ))
    (differ / "train").rename(differ / "test")
    with raises_naming(ValueError, "differ", "no train/"):
        build_datasets(folder_cfg(differ))


def test_class_names_are_matched_by_name():
    model = ["cat", "dog", "bird"]
    assert match_class_names(["bird", "cat"], model) == [2, 0]  # a folder may hold fewer classes
    with raises_naming(ValueError, "zebra", "cat, dog, bird"):
        match_class_names(["cat", "zebra"], model)
    wnids = [f"n{i:08d}" for i in range(1000)]  # ImageNet's folders: sorted WordNet ids are the class order
    assert match_class_names(wnids, [f"name {i}" for i in range(1000)]) == list(range(1000))
    with pytest.raises(ValueError, match="name no class"):
        match_class_names(wnids[:10], [f"name {i}" for i in range(1000)])


def test_folder_eval_set_relabels_to_the_model_classes(imagenet_layout):
    dataset = build_folder_eval_set(imagenet_layout, 32, class_names=["stripes", "other", "circle", "square"])
    assert Path(dataset.base.root).name == "test"  # test/ before val/
    labels = [dataset[i][1] for i in range(len(dataset))]
    assert sorted(labels) == [0] * 5 + [2] * 5 + [3] * 5


# --- the commands end to end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder_run(imagenet_layout, tmp_path_factory):
    from vitlab.train import main

    work = tmp_path_factory.mktemp("folder_run")
    argv = ["--config", "smoke", "--dataset", "folder", "--data_dir", str(imagenet_layout), "--num_steps", "20",
            "--eval_every", "20", "--name", "shapes", "--output_dir", str(work / "Model"), "--TB_log", "false",
            "--progress", "false", "--learning_rate", "3e-3"]  # fmt: skip
    return main(argv), work


def test_train_evaluate_predict_on_the_imagenet_layout(folder_run, imagenet_layout, tmp_path, capsys):
    from vitlab.evaluate import main as evaluate_main
    from vitlab.predict import main as predict_main

    result, work = folder_run
    assert result["class_names"] == list(CLASSES)
    assert result["test_accuracy"] > 0.5  # 15 test images of 3 learnable classes
    checkpoint = str(work / "Model" / "shapes" / "best.pt")
    metrics = evaluate_main(["--checkpoint", checkpoint, "--data_dir", str(imagenet_layout)])
    assert metrics["top1"] == pytest.approx(result["test_accuracy"])  # the run's data set and test/ folder
    # Another folder with two of the classes, in another order on disk: matched by name.
    subset = write_folder(tmp_path / "subset", per_class=5, seed=3, classes=("square", "stripes"))
    on_subset = evaluate_main(["--checkpoint", checkpoint, "--dataset", "folder", "--data_dir", str(subset)])
    assert on_subset["num_samples"] == 10
    capsys.readouterr()
    assert predict_main([str(subset / "square"), "--checkpoint", checkpoint, "--top_k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("1. ") == 5 and "square" in out
    wrong = write_folder(tmp_path / "wrong", per_class=1, classes=("circle", "triangle"))
    with pytest.raises(ValueError, match=r"name no class of the model \(triangle\)"):
        evaluate_main(["--checkpoint", checkpoint, "--dataset", "folder", "--data_dir", str(wrong)])


def test_evaluate_published_torchvision_weights_with_imagenet_names(tmp_path):
    """torchvision's ViT layout and ImageNet-1k names, checked against torchvision's own model and preprocessing."""
    from torchvision.models import ViT_B_32_Weights
    from torchvision.models.vision_transformer import VisionTransformer

    from vitlab.evaluate import main as evaluate_main

    torch.manual_seed(0)
    reference = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                  mlp_dim=64, num_classes=1000).eval()  # fmt: skip
    with torch.no_grad():
        reference.heads.head.weight.normal_(0, 0.5)
    weights = tmp_path / "tiny_vit.pth"
    torch.save(reference.state_dict(), weights)
    names = ViT_B_32_Weights.IMAGENET1K_V1.meta["categories"]
    folders = ("goldfish", "tench", "tiger shark")  # class folders named as ImageNet's classes
    val = write_folder(tmp_path / "imagenet" / "val", per_class=3, classes=folders)
    for path in val.rglob("*.*"):  # 37 px on the shorter side: resize_size 37 leaves them as they are
        Image.open(path).convert("RGB").resize((37, 45)).save(path.with_suffix(".png"))
        if path.suffix != ".png":
            path.unlink()
    argv = ["--checkpoint", str(weights), "--model_type", "ViT-Test", "--data_dir", str(tmp_path / "imagenet"),
            "--crop_pct", str(32 / 37), "--precision", "fp32"]  # fmt: skip
    metrics = evaluate_main(argv)
    preprocess = ViT_B_32_Weights.IMAGENET1K_V1.transforms(crop_size=32, resize_size=37)  # torchvision's own
    images, labels = [], []
    for folder in folders:
        for path in sorted((val / folder).iterdir()):
            images.append(preprocess(Image.open(path).convert("RGB")))
            labels.append(names.index(folder))
    with torch.no_grad():
        logits = reference(torch.stack(images))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels)).item()
    top5 = (logits.topk(5).indices == torch.tensor(labels)[:, None]).any(1).float().mean().item()
    assert metrics["num_samples"] == 9
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
    assert metrics["top5"] == pytest.approx(top5)


def test_predict_knows_imagenet_names_for_1000_class_weights(tmp_path, capsys):
    from vitlab.factory import create_model
    from vitlab.predict import imagenet_class_names
    from vitlab.predict import main as predict_main

    model = create_model("ViT-Test", num_classes=1000)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[1] = 10.0  # goldfish
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    image = tmp_path / "fish.png"
    make_image(0, (40, 40), np.random.default_rng(0)).save(image)
    assert predict_main([str(image), "--checkpoint", str(tmp_path / "weights.pth"), "--model_type", "ViT-Test"]) == 0
    assert "1. goldfish" in capsys.readouterr().out
    names = imagenet_class_names()
    assert len(names) == 1000 and names[:2] == ["tench", "goldfish"]


def test_folder_errors_end_the_commands_with_one_line(tmp_path):
    write_folder(tmp_path / "data" / "train", per_class=1)
    write_folder(tmp_path / "data" / "val", per_class=1, classes=("circle", "square"))
    done = subprocess.run(
        [sys.executable, "-m", "vitlab.train", "--config", "smoke", "--dataset", "folder", "--data_dir", "data"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: the class folders of" in done.stderr and "only in the first: stripes" in done.stderr


# --- the ImageNet recipe's pieces on a tiny folder ------------------------------------------------
def test_mixup_cutmix_train_on_soft_labels():
    from vitlab.data import build_batch_mix
    from vitlab.factory import create_model
    from vitlab.train import train_step

    model = create_model("ViT-Test", num_classes=3)
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    cfg = VITConfig(gradient_accumulation_steps=1, label_smoothing=0.1, max_grad_norm=0.0)
    mix = build_batch_mix(0.8, 1.0, num_classes=3)
    torch.manual_seed(5)
    mixed, soft = mix(images, labels)
    assert soft.shape == (6, 3) and torch.allclose(soft.sum(1), torch.ones(6))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(mixed), soft, label_smoothing=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(5)  # the same draws: the trainer mixes from the global RNG it seeds and checkpoints
    loss, _ = train_step(model, iter([(images, labels)]), optimizer, scaler, cfg, "fp32", torch.device("cpu"), mix)
    torch.testing.assert_close(loss, expected)
    assert build_batch_mix(0.0, 0.0, 3) is None
    with pytest.raises(ValueError, match="mixup_alpha must be >= 0"):
        build_batch_mix(-1.0, 0.0, 3)


def test_imagenet_recipe_runs_scaled_down_on_a_tiny_folder(imagenet_layout, tmp_path):
    from vitlab.configs import get_experiment
    from vitlab.train import train
    from vitlab.training.build import checked_micro_batch_size

    recipe = get_experiment("imagenet")
    pieces = (recipe.augment, recipe.mixup_alpha, recipe.cutmix_alpha, recipe.crop_pct)
    assert pieces == ("randaugment", 0.8, 1.0, 0.875)
    assert recipe.model_overrides == {"dropout_rate": 0.1, "drop_path_rate": 0.1}
    assert recipe.train_batch_size // recipe.gradient_accumulation_steps == 256  # one micro-batch per pass
    cfg = recipe.replace(
        data_dir=str(imagenet_layout), model_type="ViT-Test", img_size=32, train_batch_size=8,
        gradient_accumulation_steps=2, num_steps=3, warmup_steps=1, eval_every=3, eval_batch_size=32,
        num_workers=0, precision="fp32", save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"),
        progress=False, name="recipe",
    )  # fmt: skip
    result = train(cfg)
    assert result["steps"] == 3 and result["class_names"] == list(CLASSES)
    assert result["model"].cfg.drop_path_rate == 0.1 and len(result["history"]) >= 1
    for bad, message in [
        (dict(crop_pct=1.5), "crop_pct must be in"),
        (dict(cutmix_alpha=-0.5), "cutmix_alpha must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            checked_micro_batch_size(cfg.replace(**bad))


def test_device_augmentation_gives_way_to_workers_for_image_folders(imagenet_layout, tmp_path, capsys):
    """`--config scratch --dataset folder` runs as typed: the folder's images are augmented by PIL workers."""
    import json

    from vitlab.configs import get_experiment
    from vitlab.train import train

    cfg = get_experiment(
        "scratch", dataset="folder", data_dir=str(imagenet_layout), model_type="ViT-Test", img_size=32,
        train_batch_size=8, num_steps=1, warmup_steps=0, eval_every=1, num_workers=0, precision="fp32",
        save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), progress=False, name="folder",
    )  # fmt: skip
    assert cfg.device_augment and cfg.augment == "strong"
    assert train(cfg)["steps"] == 1
    out = capsys.readouterr().out
    assert "image folders are augmented in DataLoader workers" in out
    assert f"from random weights on the image folders in {imagenet_layout}, 1 step of 8 images" in out
    saved = json.loads((tmp_path / "Model" / "folder" / "config.json").read_text())
    assert saved["device_augment"] is False and saved["augment"] == "strong"  # the config says what ran


def test_evaluate_on_the_folder_a_run_trained_on_scores_its_held_out_images(flat, tmp_path, capsys):
    """Class folders directly: the run held out val_split of them; evaluate rebuilds that split, or says it cannot."""
    import shutil

    from vitlab.evaluate import main as evaluate_main
    from vitlab.train import main as train_main

    data = shutil.copytree(flat, tmp_path / "photos")
    common = ["--config", "smoke", "--dataset", "folder", "--data_dir", str(data), "--num_steps", "2",
              "--TB_log", "false", "--progress", "false", "--output_dir", str(tmp_path / "Model")]  # fmt: skip
    result = train_main([*common, "--val_split", "0.25", "--name", "held"])
    capsys.readouterr()
    checkpoint = str(tmp_path / "Model" / "held" / "best.pt")
    metrics = evaluate_main(["--checkpoint", checkpoint])
    out, err = capsys.readouterr()
    assert metrics["num_samples"] == 9 and metrics["top1"] == pytest.approx(result["best_val_accuracy"])
    assert f"on {data.resolve()}: the run's held-out 25%, 9 of 36 images (not trained on)" in out and err == ""
    # A checkpoint written before runs recorded their folder: the split is rebuilt from its config, said so.
    import torch

    old = torch.load(checkpoint, weights_only=False)
    del old["held_out"]
    torch.save(old, tmp_path / "old.pt")
    assert evaluate_main(["--checkpoint", str(tmp_path / "old.pt")])["top1"] == pytest.approx(metrics["top1"])
    assert "held-out 25%, 9 of 36 images (not trained on); the checkpoint does not record" in capsys.readouterr().out
    # Another folder is scored whole, as before.
    other = write_folder(tmp_path / "other", per_class=2, seed=5)
    assert evaluate_main(["--checkpoint", checkpoint, "--data_dir", str(other)])["num_samples"] == 6
    capsys.readouterr()
    # The folder changed since the run: its split cannot be rebuilt, and the command says what it scores.
    make_image(0, (32, 32), np.random.default_rng(9)).save(data / "circle" / "new.png")
    assert evaluate_main(["--checkpoint", checkpoint])["num_samples"] == 37
    out, err = capsys.readouterr()
    assert err.startswith(f"warning: {data.resolve()} has changed since the run trained on it (36 images then, 37 now)")
    assert out.splitlines()[-1].endswith("(images the model trained on)")
    # A run that held nothing out trained on every image: said so.
    train_main([*common, "--val_split", "0", "--name", "all"])
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(tmp_path / "Model" / "all" / "best.pt")])["num_samples"] == 37
    assert capsys.readouterr().err.startswith(f"warning: the run trained on every image in {data.resolve()}")


def test_a_folder_run_starts_with_its_run_line_and_never_more_workers_than_cores(flat, tmp_path, capsys):
    """The scratch recipe asks for 8 DataLoader workers; a machine with fewer cores gets no more than it has."""
    import warnings

    from vitlab.configs import get_experiment
    from vitlab.train import train
    from vitlab.training.devices import data_workers, usable_cpus

    cfg = get_experiment(
        "scratch", dataset="folder", data_dir=str(flat), model_type="ViT-Test", img_size=32, train_batch_size=8,
        num_steps=2, warmup_steps=0, save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), progress=False,
        name="workers",
    )  # fmt: skip
    assert cfg.num_workers == 8 and data_workers(8) == min(8, usable_cpus())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert not [str(w.message) for w in caught if "worker" in str(w.message)]
    lines = capsys.readouterr().out.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if not line.startswith("note: skipped")) :]  # the folder's
    assert lines[0].startswith("run workers: ViT-Test") and lines[2].endswith("validation at the end (step 2)")
    assert "  note: image folders are augmented in DataLoader workers (device_augment needs CIFAR's uint8 arrays)" in (
        lines
    )
    capped = [line for line in lines if "data-loading worker" in line]
    note = f"  note: {min(8, usable_cpus())} data-loading workers instead of num_workers 8: no more than this machine's"
    assert capped == ([] if usable_cpus() >= 8 else [note + " cores"])
