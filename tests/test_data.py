"""Data: the synthetic CIFAR files read by torchvision, the split, the transforms, clear errors."""

import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from messages import raises_naming
from torchvision import transforms

from vitlab.configs import VITConfig
from vitlab.data import (
    CIFAR10_CLASSES,
    build_datasets,
    build_transforms,
    load_cifar,
    split_indices,
    write_image_folders,
    write_synthetic_cifar,
)


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # how torchvision reads the real (Python 2) files


def test_synthetic_files_have_the_real_cifar10_layout(synthetic_cifar):
    folder = synthetic_cifar / "cifar-10-batches-py"
    names = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".txt"))
    assert names == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                     "test_batch"]  # fmt: skip
    total = 0
    for name in names[1:]:
        entry = _unpickle(folder / name)
        assert set(entry) == {"batch_label", "labels", "data", "filenames"}
        assert entry["data"].dtype == np.uint8 and entry["data"].shape == (len(entry["labels"]), 3072)
        assert all(type(label) is int for label in entry["labels"]) and isinstance(entry["filenames"][0], str)
        total += len(entry["labels"])
    assert total == 2500
    meta = _unpickle(folder / "batches.meta")
    assert set(meta) == {"num_cases_per_batch", "label_names", "num_vis"}
    assert meta["label_names"] == list(CIFAR10_CLASSES) and meta["num_vis"] == 3072


def test_torchvision_reads_synthetic_cifar(synthetic_cifar):
    train = load_cifar("cifar10", synthetic_cifar, train=True, download=False)
    test = load_cifar("cifar10", synthetic_cifar, train=False, download=False)
    assert isinstance(train, torchvision.datasets.CIFAR10)  # torchvision's own reading code
    assert len(train) == 2000 and len(test) == 500 and train.classes == list(CIFAR10_CLASSES)
    assert np.bincount(train.targets).tolist() == [200] * 10  # balanced classes
    # Row layout of the real files: 1024 red values, then green, then blue, each row-major.
    raw = _unpickle(synthetic_cifar / "cifar-10-batches-py" / "data_batch_1")
    image, label = train[3]
    np.testing.assert_array_equal(np.asarray(image), raw["data"][3].reshape(3, 32, 32).transpose(1, 2, 0))
    assert label == raw["labels"][3]


def test_synthetic_writer_is_seeded(tmp_path):
    a = write_synthetic_cifar(tmp_path / "a", num_train=50, num_test=10, seed=3)
    b = write_synthetic_cifar(tmp_path / "b", num_train=50, num_test=10, seed=3)
    c = write_synthetic_cifar(tmp_path / "c", num_train=50, num_test=10, seed=4)
    first = [_unpickle(d / "data_batch_1")["data"] for d in (a, b, c)]
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.array_equal(first[0], first[2])


def test_image_folders_from_cifar_files_hold_the_first_images_of_each_class(tmp_path):
    write_synthetic_cifar(tmp_path / "data" / "synthetic", num_train=200, num_test=50)
    dest = write_image_folders("synthetic", tmp_path / "data", tmp_path / "photos", train_per_class=3, test_per_class=2)
    train = torchvision.datasets.ImageFolder(str(dest / "train"))
    test = torchvision.datasets.ImageFolder(str(dest / "test"))
    assert train.classes == test.classes == sorted(CIFAR10_CLASSES)
    assert len(train) == 30 and len(test) == 20
    assert (dest / "SYNTHETIC.txt").is_file(), "a folder made from synthetic files says so"
    cifar = load_cifar("cifar10", tmp_path / "data" / "synthetic", train=True)
    first = next(i for i, label in enumerate(cifar.targets) if cifar.classes[label] == "bird")
    png = np.asarray(train.loader(str(dest / "train" / "bird" / f"train_{first:05d}.png")))
    np.testing.assert_array_equal(png, cifar.data[first])  # lossless: the same pixels
    assert not list(tmp_path.glob(".photos*")), "no partial folder is left behind"
    assert write_image_folders("synthetic", tmp_path / "data", dest, 5, 5) == dest  # reused, not rewritten
    assert len(list((dest / "train").rglob("*.png"))) == 30
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError, match="without train/ and test/"):
        write_image_folders("synthetic", tmp_path / "data", tmp_path / "other", 1, 1)


def test_validation_split_is_seeded_disjoint_and_two_percent():
    train, val = split_indices(1000, 0.02, seed=42)
    assert len(val) == 20 and len(train) == 980
    assert sorted(train + val) == list(range(1000))
    assert split_indices(1000, 0.02, seed=42) == (train, val)
    assert split_indices(1000, 0.02, seed=43)[1] != val


def test_build_datasets_uses_test_transform_for_validation(synthetic_cifar):
    cfg = VITConfig(dataset="cifar10", data_dir=str(synthetic_cifar), img_size=48, augment="finetune", val_split=0.1)
    train, val, test, names = build_datasets(cfg)
    assert (len(train), len(val), len(test)) == (1800, 200, 500) and names == list(CIFAR10_CLASSES)
    assert not set(train.indices) & set(val.indices)
    # Validation images: resize + scale to [-1, 1], deterministic; reference built from torchvision directly.
    pil, label = train.base[val.indices[0]]
    reference = transforms.Compose([transforms.Resize((48, 48)), transforms.ToTensor()])(pil) * 2 - 1
    image, val_label = val[0]
    torch.testing.assert_close(image, reference)
    torch.testing.assert_close(val[0][0], image)
    assert val_label == label
    # Training images: inception crop at 48 px, in [-1, 1].
    sample, _ = train[0]
    assert sample.shape == (3, 48, 48) and sample.min() >= -1 and sample.max() <= 1


def test_finetune_transform_is_google_inception_crop():
    image = transforms.ToPILImage()(torch.rand(3, 32, 32))
    torch.manual_seed(7)
    ours = build_transforms("finetune", 64, train=True)(image)
    torch.manual_seed(7)
    reference = transforms.Compose(
        [
            transforms.RandomResizedCrop(64, scale=(0.05, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )(image)
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("augment", ["strong", "basic", "none"])
def test_scratch_transforms_give_32px_images_in_range(augment):
    image = transforms.ToPILImage()(torch.rand(3, 32, 32))
    out = build_transforms(augment, 32, train=True)(image)
    assert out.shape == (3, 32, 32) and out.min() >= -1 and out.max() <= 1


def test_dataset_synthetic_is_written_once_under_data_dir(tmp_path):
    cfg = VITConfig(dataset="synthetic", data_dir=str(tmp_path), img_size=32, augment="none")
    train, val, test, names = build_datasets(cfg)
    marker = tmp_path / "synthetic" / "cifar-10-batches-py" / "SYNTHETIC.txt"
    stamp = marker.stat().st_mtime_ns
    assert len(train) + len(val) == 5000 and len(test) == 1000 and names == list(CIFAR10_CLASSES)
    build_datasets(cfg)
    assert marker.stat().st_mtime_ns == stamp


def test_unknown_dataset_lists_valid_names(tmp_path):
    with raises_naming(ValueError, "'imagenet'", "cifar10, cifar100, synthetic"):
        build_datasets(VITConfig(dataset="imagenet", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown augmentation 'autoaug'.*finetune"):
        build_transforms("autoaug", 32, train=True)


def test_no_network_and_no_data_says_where_to_put_the_archive(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz.*cifar-10-batches-py"):
        load_cifar("cifar10", tmp_path, train=True)
    with pytest.raises(FileNotFoundError, match="cifar-100-python.tar.gz"):
        load_cifar("cifar100", tmp_path, train=True)


def test_a_cifar_download_into_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    import errno

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_space)
    with pytest.raises(OSError) as full:
        load_cifar("cifar10", tmp_path, train=True)
    assert str(full.value).startswith(
        f"the disk is full (No space left on device): could not write the cifar10 download "
        f"{tmp_path / 'cifar-10-python.tar.gz'} ("
    )
    assert str(full.value).endswith("free there); free some space there, or choose another --data_dir")


def test_a_train_fraction_is_class_balanced_nested_and_leaves_the_held_out_photos_alone(tmp_path):
    from test_folders import write_folder

    from vitlab.data import build_datasets, class_balanced_subset

    targets = [i % 4 for i in range(400)]  # 100 of each of 4 classes
    indices = list(range(0, 400, 2)) + list(range(1, 200, 4))  # 100 of classes 0 and 2, 50 of class 1, none of 3
    tenth = class_balanced_subset(indices, targets, 0.1, seed=3)
    assert [sum(targets[i] == c for i in tenth) for c in range(4)] == [10, 5, 10, 0]  # a tenth of each class
    assert set(tenth) <= set(indices) and tenth == class_balanced_subset(indices, targets, 0.1, seed=3)
    assert set(tenth) <= set(class_balanced_subset(indices, targets, 0.5, seed=3))  # nested: 0.1 within 0.5
    assert class_balanced_subset(indices, targets, 1.0, seed=3) == indices
    assert len(class_balanced_subset(indices, targets, 0.001, seed=3)) == 3  # at least one of each class there

    folder = write_folder(tmp_path / "photos", per_class=20)
    base = VITConfig(dataset="folder", data_dir=str(folder), img_size=32, val_split=0.25, augment="none")
    full_train, full_val, _, _ = build_datasets(base)
    part_train, part_val, _, _ = build_datasets(base.replace(train_fraction=0.25))
    assert part_val.indices == full_val.indices  # exactly the same held-out photos
    assert set(part_train.indices) <= set(full_train.indices) and not set(part_train.indices) & set(part_val.indices)
    labels = [full_train.base.targets[i] for i in part_train.indices]
    per_class = [labels.count(c) for c in range(len(full_train.classes))]
    assert max(per_class) - min(per_class) <= 1 and abs(len(labels) - 0.25 * len(full_train)) <= len(per_class)


@pytest.mark.parametrize("value", [0, -0.5, 1.5, float("nan")])
def test_a_train_fraction_outside_zero_to_one_is_refused_in_one_line(value):
    from vitlab import commands
    from vitlab.train import main

    with pytest.raises(ValueError, match=r"VITConfig.train_fraction must be in \(0, 1\], got"):
        VITConfig(train_fraction=value)
    assert commands.run(main, ["--config", "smoke", "--train_fraction", str(value)]) == 1
