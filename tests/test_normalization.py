"""Input normalisation: each model's image_mean/std reach the transforms, the device path, predict and loading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import randomize_
from PIL import Image
from torchvision import transforms

import vitlab.configs
from vitlab.augment import uint8_cifar
from vitlab.configs import (
    GOOGLE_MEAN,
    GOOGLE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    VITConfig,
    get_experiment,
    get_model_config,
    model_config_from,
)
from vitlab.data import build_datasets, build_test_set, build_transforms, image_normalization
from vitlab.factory import create_model
from vitlab.predict import load_image, predict
from vitlab.training.batches import build_device_batches, build_train_loader
from vitlab.training.build import follow_model_normalization
from vitlab.training.devices import Distributed
from vitlab.training.logs import log_samples, sample_indices
from vitlab.weights.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from vitlab.weights.load import load_pretrained

PIXEL = (255, 0, 51)  # one RGB pixel whose normalised values are worked out by hand below
# (pixel / 255 - mean) / std with ImageNet's statistics, written out number by number.
PIXEL_IMAGENET = ((1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225)
PIXEL_GOOGLE = (1.0, -1.0, 0.2 * 2 - 1)  # pixel / 127.5 - 1
# A shrunken vit_base_p16 (MAE's pooling, its preset's normalisation) so a forward pass takes milliseconds.
SMALL = dict(img_size=32, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, num_classes=7)


def _cfg(data_dir, **overrides) -> VITConfig:
    return VITConfig(dataset="cifar10", data_dir=str(data_dir), img_size=32, val_split=0.1, **overrides)


def _pixel_image(size: int = 4) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), PIXEL, dtype=np.uint8))


# --- configs ---------------------------------------------------------------------------------------
def test_each_normalisation_is_written_once():
    # Google's [-1, 1] and ImageNet's statistics are named in vitlab.configs; every other module imports them.
    package = Path(vitlab.configs.__file__).parent.parent
    for numbers in ("0.5, 0.5, 0.5", "0.485, 0.456, 0.406", "0.229, 0.224, 0.225"):
        places = [
            f"{path.relative_to(package)}:{number}"
            for path in sorted(package.rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if numbers in line
        ]
        assert len(places) == 1 and places[0].startswith(str(Path("configs", "models.py:"))), places
    assert GOOGLE_MEAN == GOOGLE_STD == (0.5, 0.5, 0.5)
    assert ModelConfig().image_mean == GOOGLE_MEAN and load_image.__defaults__ == (GOOGLE_MEAN, GOOGLE_STD)


def test_presets_carry_the_normalisation_their_weights_expect():
    assert get_model_config("vit_base_p16").image_mean == IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert get_model_config("ViT-B_16-MAE").image_std == IMAGENET_STD == (0.229, 0.224, 0.225)
    for name in ("ViT-B_16", "vit_b_16", "ViT-Test", "ViT-CIFAR-3M", "R50-ViT-B_16"):
        config = get_model_config(name)
        assert (config.image_mean, config.image_std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), name
    # JSON gives lists: they become tuples of floats, equal to the constants.
    config = model_config_from(json.loads(json.dumps(dataclasses.asdict(get_model_config("vit_base_p16")))))
    assert config.image_mean == IMAGENET_MEAN and isinstance(config.image_std, tuple)
    assert ModelConfig(image_mean=[0, 1, 1]).image_mean == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="image_std must hold positive numbers"):
        ModelConfig(image_std=(0.5, 0.0, 0.5))
    with pytest.raises(TypeError, match="image_mean must be a sequence"):
        ModelConfig(image_mean=0.5)


# --- PIL transforms ---------------------------------------------------------------------------------
def test_default_transforms_still_give_exactly_minus_one_to_one():
    image = Image.fromarray(np.array([[[0, 255, 51]]], dtype=np.uint8))  # one pixel: 0, 255, 51
    out = build_transforms("none", 32, train=False)(image.resize((32, 32)))
    assert out[0].unique().tolist() == [-1.0] and out[1].unique().tolist() == [1.0]
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    assert torch.equal(out, reference(image.resize((32, 32))))  # bit for bit what it was


def test_mae_preset_transforms_normalise_with_imagenet_statistics(synthetic_cifar):
    cfg = _cfg(synthetic_cifar, model_type="vit_base_p16", augment="none")
    assert image_normalization(cfg) == (IMAGENET_MEAN, IMAGENET_STD)
    train, val, test, _ = build_datasets(cfg)
    for dataset in (train, val, test, build_test_set(cfg)[0]):
        x = dataset[3][0]  # (3, 32, 32)
        raw = torch.from_numpy(dataset.base.data[dataset.indices[3]]).permute(2, 0, 1).float() / 255  # (3, 32, 32)
        expected = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    # The known pixel, through the transform the datasets use.
    out = build_transforms("none", 32, False, IMAGENET_MEAN, IMAGENET_STD)(_pixel_image(32))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(PIXEL_IMAGENET), atol=1e-6, rtol=0)


def test_model_overrides_set_the_normalisation_and_survive_json(synthetic_cifar):
    mean, std = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
    cfg = _cfg(synthetic_cifar, model_type="ViT-Test", augment="none", model_overrides={"image_mean": mean})
    cfg = VITConfig.from_json(cfg.replace(model_overrides={"image_mean": mean, "image_std": std}).to_json())
    assert cfg.model_overrides["image_mean"] == list(mean)  # JSON turned the tuple into a list
    assert image_normalization(cfg) == (mean, std)
    test_set, _ = build_test_set(cfg)
    pixels = torch.from_numpy(test_set.base.data[0]).permute(2, 0, 1).float() / 255  # (3, 32, 32)
    expected = (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(test_set[0][0], expected, atol=1e-6, rtol=0)


# --- the trainer's device path and TensorBoard samples ------------------------------------------------
def test_device_batches_normalise_like_the_pil_path(synthetic_cifar):
    # augment="none" at 32 px: both paths only normalise, and both follow the same sample stream.
    cfg = get_experiment(
        "smoke", dataset="cifar10", data_dir=str(synthetic_cifar), model_type="vit_base_p16", augment="none"
    )
    train_set = build_datasets(cfg)[0]
    processes = Distributed(rank=0, world_size=1, device=torch.device("cpu"), started_here=False)
    pil_images, pil_labels = next(iter(build_train_loader(cfg, train_set, 8, processes, 0)))
    device_images, device_labels = next(iter(build_device_batches(cfg, train_set, 8, processes, 0)))
    assert torch.equal(device_labels, pil_labels)
    torch.testing.assert_close(device_images, pil_images, atol=2e-6, rtol=0)
    # ImageNet's statistics, not [-1, 1]: black is -0.485 / 0.229 = -2.118 in the red channel.
    images, _ = uint8_cifar(train_set)
    assert images.min() == 0 and device_images.min() < -1.5


def test_log_samples_undoes_the_normalisation():
    pixels = torch.rand(4, 3, 8, 8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    dataset = torch.utils.data.TensorDataset((pixels - mean) / std, torch.zeros(4, dtype=torch.long))

    class Writer:
        def add_images(self, tag, images, step):
            self.images = images

    writer = Writer()
    log_samples(writer, dataset, seed=0, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    order = sample_indices(dataset, 16, seed=0)  # drawn at random, not the first items
    assert sorted(order) == [0, 1, 2, 3]
    torch.testing.assert_close(writer.images, pixels[order], atol=1e-6, rtol=0)


def test_training_follows_the_given_models_normalisation(tmp_path, synthetic_cifar, monkeypatch):
    import vitlab.data
    from vitlab.train import train

    built = []  # the normalisation of every set of datasets the trainer builds

    def build_datasets_once(cfg):
        built.append(image_normalization(cfg))
        return build_datasets(cfg)

    monkeypatch.setattr(vitlab.data, "build_datasets", build_datasets_once)  # the trainer imports it when it runs
    cfg = get_experiment(
        "smoke", dataset="cifar10", data_dir=str(synthetic_cifar), save_dir=str(tmp_path / "Model"),
        log_dir=str(tmp_path / "TB"), name="run", progress=False, num_steps=2, warmup_steps=1, eval_every=2,
        val_split=0.1,
    )  # fmt: skip
    model = create_model("ViT-Test", image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    train(cfg, model=model)
    assert built == [(IMAGENET_MEAN, IMAGENET_STD)]  # decided before the data, which are built once
    saved = json.loads((tmp_path / "Model" / "run" / "config.json").read_text())
    assert saved["model_overrides"] == {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    restored, _ = model_from_checkpoint(tmp_path / "Model" / "run" / "last.pt")
    assert (restored.cfg.image_mean, restored.cfg.image_std) == (IMAGENET_MEAN, IMAGENET_STD)
    # `python -m vitlab.evaluate` rebuilds the test set from the saved run config: the same statistics.
    run_cfg = VITConfig.from_dict(load_checkpoint(tmp_path / "Model" / "run" / "last.pt")["config"])
    assert image_normalization(run_cfg) == (IMAGENET_MEAN, IMAGENET_STD)
    assert follow_model_normalization(cfg, create_model("ViT-Test")) is cfg  # nothing to follow: unchanged


# --- predict -----------------------------------------------------------------------------------------
def test_load_image_with_a_mean_and_std(tmp_path):
    path = tmp_path / "pixel.png"
    _pixel_image(40).save(path)
    x = load_image(path, 32, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(x, torch.tensor(PIXEL_IMAGENET).view(3, 1, 1).expand(3, 32, 32), atol=1e-6, rtol=0)
    torch.testing.assert_close(load_image(path, 32), torch.tensor(PIXEL_GOOGLE).view(3, 1, 1).expand(3, 32, 32))


def test_predict_normalises_with_the_models_statistics():
    model = randomize_(create_model("vit_base_p16", **SMALL)).eval()
    assert model.cfg.image_mean == IMAGENET_MEAN
    image = torch.rand(3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    by_hand = (image - mean.view(3, 1, 1)) / std.view(3, 1, 1)  # (3, 32, 32)
    with torch.no_grad():
        probabilities = model(by_hand[None]).softmax(dim=-1)[0]
        google = model((image * 2 - 1)[None]).softmax(dim=-1)[0]
    assert (probabilities - google).abs().max() > 1e-3  # the two preprocessings really differ for this model
    values, indices = probabilities.topk(3)
    result = predict(model, image, top_k=3, precision="fp32")
    assert [label for label, _ in result] == [str(i) for i in indices.tolist()]
    torch.testing.assert_close(torch.tensor([p for _, p in result]), values, atol=1e-6, rtol=0)


# --- loading other libraries' weights ------------------------------------------------------------------
def _torchvision_file(tmp_path):
    reference = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=7
    )
    path = tmp_path / "vit_b_16.pth"
    torch.save(randomize_(reference).state_dict(), path)
    return path


def test_torchvision_weights_set_imagenet_normalisation_and_say_so(tmp_path, capsys):
    path = _torchvision_file(tmp_path)
    model = create_model("vit_b_16", **{**SMALL, "patch_size": 8})
    report = load_pretrained(model, path)
    assert (model.cfg.image_mean, model.cfg.image_std) == (IMAGENET_MEAN, IMAGENET_STD)
    notes = [note for note in report.notes if "mean/std" in note]  # the other one: the GELU set to the exact form
    assert len(notes) == 1 and "torchvision weights expect ImageNet mean/std" in notes[0]
    assert "model_overrides={'image_mean': (0.485, 0.456, 0.406)" in notes[0]
    assert "note: torchvision weights expect ImageNet" in capsys.readouterr().out  # printed with the summary
    # A model already set to some normalisation is left as it is, without a note.
    custom = create_model("vit_b_16", **{**SMALL, "patch_size": 8}, image_mean=(0.4, 0.4, 0.4))
    assert not [note for note in load_pretrained(custom, path, verbose=False).notes if "mean/std" in note]
    assert custom.cfg.image_mean == (0.4, 0.4, 0.4) and custom.cfg.image_std == (0.5, 0.5, 0.5)
    # A failed load changes nothing, the normalisation included.
    wrong = create_model("vit_b_16", **{**SMALL, "patch_size": 8, "hidden_size": 32})
    with pytest.raises(ValueError):
        load_pretrained(wrong, path, verbose=False)
    assert wrong.cfg.image_mean == (0.5, 0.5, 0.5)


def test_timm_layout_only_adds_a_note(tmp_path):
    import timm

    reference = timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=32, global_pool="avg", fc_norm=True,
        embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=7,
    )  # fmt: skip
    path = tmp_path / "mae.pth"
    torch.save({"model": reference.state_dict()}, path)
    google_normalised = create_model("ViT-B_16", **SMALL, classifier="gap", fc_norm=True)
    report = load_pretrained(google_normalised, path, verbose=False)
    assert google_normalised.cfg.image_mean == (0.5, 0.5, 0.5)  # timm's weights vary: not changed
    notes = [note for note in report.notes if "mean/std" in note]  # the other one: the GELU set to the exact form
    assert len(notes) == 1 and "ImageNet mean/std" in notes[0] and "[-1, 1]" in notes[0]
    mae = create_model("vit_base_p16", **SMALL)
    assert load_pretrained(mae, path, verbose=False).notes == []  # the preset already expects ImageNet's, exact GELU
    assert mae.cfg.image_mean == IMAGENET_MEAN


# --- checkpoints --------------------------------------------------------------------------------------
def test_checkpoints_without_the_fields_load_with_the_defaults(tmp_path):
    source = randomize_(create_model("ViT-Test")).eval()
    old_fields = dataclasses.asdict(source.cfg)
    del old_fields["image_mean"], old_fields["image_std"]  # a checkpoint written before the fields existed
    save_checkpoint(tmp_path / "old.pt", {"model": source.state_dict(), "model_config": old_fields})
    model, _ = model_from_checkpoint(tmp_path / "old.pt")
    assert (model.cfg.image_mean, model.cfg.image_std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    mae = randomize_(create_model("vit_base_p16", **SMALL)).eval()
    as_lists = {**dataclasses.asdict(mae.cfg), "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    save_checkpoint(tmp_path / "mae.pt", {"model": mae.state_dict(), "model_config": as_lists})
    model, _ = model_from_checkpoint(tmp_path / "mae.pt")
    assert (model.cfg.image_mean, model.cfg.image_std) == (IMAGENET_MEAN, IMAGENET_STD)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), mae(x), atol=0, rtol=0)
