"""Data: CIFAR-10/100 through torchvision, the transforms, the validation split; synthetic CIFAR in vitlab.synthetic.

Images are normalised with the mean and std of the run's model (`ModelConfig.image_mean/std`):
[-1, 1] (Normalize(0.5, 0.5)) as in Google's ViT code for most presets, ImageNet's statistics for
weights trained with them (MAE's ViT-B/16, torchvision's). The validation split is carved out of the training set with a
seeded permutation and uses the test transforms; the test set is only for the final number.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import urllib.error
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from vitlab.configs import AUGMENTATIONS, DATASET_NAMES, GOOGLE_MEAN, GOOGLE_STD, VITConfig, get_model_config
from vitlab.errors import AlreadyExists, BadValue, MissingFile, NotAFolder, preview_names
from vitlab.files import disk_full_cause, disk_full_error
from vitlab.images import read_image
from vitlab.synthetic import CIFAR10_CLASSES as CIFAR10_CLASSES  # CIFAR-10's class names, public here too
from vitlab.synthetic import SYNTHETIC_MARKER, write_synthetic_cifar

_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", datasets.CIFAR10),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", datasets.CIFAR100),
}


# --- transforms ----------------------------------------------------------------------------------
def image_normalization(cfg: VITConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the run's model: its preset's `image_mean/std`, or those in `cfg.model_overrides`."""
    model_cfg = get_model_config(cfg.model_type, **cfg.model_overrides)
    return model_cfg.image_mean, model_cfg.image_std


def _pad_crop(img_size: int, any_size: bool) -> list:
    """A crop shifted by up to 1/8 of the side, borders reflected: CIFAR's 4 pixels at 32 x 32 (resized after the
    other steps); for images of any size, of their central img_size square."""
    if not any_size:
        return [transforms.RandomCrop(32, padding=4, padding_mode="reflect")]
    square = [transforms.Resize(img_size), transforms.CenterCrop(img_size)]
    return square + [transforms.RandomCrop(img_size, padding=img_size // 8, padding_mode="reflect")]


# The steps of configs.AUGMENTATIONS' recipes as torchvision transforms: step(img_size, any_size) -> transforms.
PIL_STEPS = {
    "pad_crop": _pad_crop,
    "flip": lambda img_size, any_size: [transforms.RandomHorizontalFlip()],
    "trivial_augment": lambda img_size, any_size: [transforms.TrivialAugmentWide()],
    "inception_crop": lambda img_size, any_size: [transforms.RandomResizedCrop(img_size, scale=(0.05, 1.0))],
    "imagenet_crop": lambda img_size, any_size: [transforms.RandomResizedCrop(img_size, scale=(0.08, 1.0))],
    "randaugment": lambda img_size, any_size: [transforms.RandAugment(num_ops=2, magnitude=9)],
}
_RESIZING_STEPS = ("inception_crop", "imagenet_crop")  # their output is img_size whatever the input's size


def _image_transform(
    augment: str, img_size: int, train: bool, any_size: bool, crop_pct: float, mean, std
) -> transforms.Compose:
    if augment not in AUGMENTATIONS:
        raise BadValue(f"unknown augmentation {augment!r}; valid names: {', '.join(AUGMENTATIONS)}")
    if not 0.0 < crop_pct <= 1.0:
        raise BadValue(f"crop_pct must be in (0, 1], got {crop_pct}")
    to_tensor = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if any_size:  # the shorter side to img_size / crop_pct, then the central square
        resize = [transforms.Resize(round(img_size / crop_pct)), transforms.CenterCrop(img_size)]
    else:
        resize = [transforms.Resize((img_size, img_size))] if img_size != 32 else []
    steps = AUGMENTATIONS[augment] if train else ()
    if not steps:
        return transforms.Compose(resize + to_tensor)
    pil = [t for step in steps for t in PIL_STEPS[step](img_size, any_size)]
    resized = any_size or any(step in _RESIZING_STEPS for step in steps)
    return transforms.Compose(pil + ([] if resized else resize) + to_tensor)


def build_transforms(
    augment: str, img_size: int, train: bool, mean: tuple[float, ...] = GOOGLE_MEAN, std: tuple[float, ...] = GOOGLE_STD
) -> transforms.Compose:
    """PIL image (CIFAR's 32 x 32) -> (tensor - mean) / std at `img_size` ([-1, 1] by default).

    `train=True`: the steps of the recipe `augment` (configs.AUGMENTATIONS), then a resize when they keep
    32 x 32; `train=False`: the resize only.
    """
    return _image_transform(augment, img_size, train, False, 1.0, mean, std)


def build_batch_mix(mixup_alpha: float, cutmix_alpha: float, num_classes: int):
    """Mixup and/or CutMix for training batches (torchvision.transforms.v2), or None when both alphas are 0.

    Called as `mix(images, labels)` on a batch (B, C, H, W) with int labels (B,); returns the mixed
    images and soft labels (B, num_classes). With both on, each batch gets one of the two at random,
    as in DeiT and MindCV. The mixing weights come from torch's global RNG, which the trainer seeds
    and saves with each checkpoint, so a resumed run mixes as an uninterrupted one.
    """
    from torchvision.transforms import v2

    for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if not alpha >= 0.0:
            raise BadValue(f"{name} must be >= 0 (0 turns it off), got {alpha}")
    mixes = []
    if mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


class TransformedSubset(Dataset):
    """Samples `indices` of `base` (which returns PIL images) through `transform`."""

    def __init__(self, base: Dataset, indices, transform):
        self.base = base
        self.indices = [int(i) for i in indices]
        self.transform = transform
        self.classes = list(getattr(base, "classes", []))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.base[self.indices[index]]
        return self.transform(image), int(label)


def split_indices(num_samples: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded (train, val) split of range(num_samples); val gets round(val_fraction * num_samples)."""
    if not 0.0 <= val_fraction < 1.0:
        raise BadValue(f"val_split must be in [0, 1), got {val_fraction}")
    permutation = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed)).tolist()
    num_val = round(val_fraction * num_samples)
    return sorted(permutation[num_val:]), sorted(permutation[:num_val])


def class_balanced_subset(indices, targets, fraction: float, seed: int) -> list[int]:
    """A seeded `fraction` of `indices`, the same share of every class: round(fraction x its count), at least one.

    Each class keeps a prefix of its own seeded order, so a larger fraction holds every image of a smaller one
    (0.1 within 0.25 within 0.5): a curve against the size of the labelled set adds images, it never swaps them.
    """
    if fraction >= 1.0:
        return list(indices)
    by_class: dict[int, list[int]] = {}
    for index in indices:
        by_class.setdefault(int(targets[index]), []).append(int(index))
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        kept += [members[i] for i in order[: max(1, round(fraction * len(members)))]]
    return sorted(kept)


# --- CIFAR through torchvision --------------------------------------------------------------------
class _SyntheticCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without the checksums of the real files (synthetic batches)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


def load_cifar(name: str, root: str | os.PathLike, train: bool, download: bool = True) -> datasets.CIFAR10:
    """torchvision's CIFAR-10 or CIFAR-100 split from `root` (downloaded when missing), images as PIL."""
    if name not in _ARCHIVES:
        raise BadValue(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    archive, folder, reader = _ARCHIVES[name]
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotAFolder(f"data_dir {root} is a file, not a folder: give the folder that holds {folder}/")
    synthetic = (root / folder / SYNTHETIC_MARKER).is_file()
    try:
        if synthetic:
            return _SyntheticCIFAR10(root, train=train, download=False)
        return reader(root, train=train, download=download)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError) as error:
        # The files are there but hold something else (a partial copy, a damaged disk).
        damaged = damaged_cifar_file(root / folder, _SyntheticCIFAR10 if synthetic else reader, train)
        raise BadValue(
            f"{name} files in {root / folder} are damaged ({damaged or f'{type(error).__name__}: {error}'}): "
            f"delete that folder to download them again, or extract {archive} there anew"
        ) from None
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        if disk_full_cause(error) is not None:  # the download or its extraction, not the network
            fix = "free some space there, or choose another --data_dir"
            raise disk_full_error(root / archive, f"the {name} download", fix) from None
        if (root / folder).is_dir() and any((root / folder).iterdir()):
            damaged = damaged_cifar_file(root / folder, _SyntheticCIFAR10 if synthetic else reader, train)
            raise BadValue(
                f"{name} files in {root / folder} are incomplete or damaged "
                f"({damaged or f'{type(error).__name__}: {error}'}): "
                f"delete that folder to download them again, or extract {archive} there anew"
            ) from None
        url = reader.url
        reason = " ".join(str(getattr(error, "reason", error)).split())
        raise MissingFile(
            f"{name} is not in {root} and could not be downloaded ({reason}). Fetch {url} and put {archive} in "
            f"{root}/ (or extract it so that {root / folder}/ exists), or work offline on synthetic CIFAR-format "
            'data (dataset "synthetic")'
        ) from None  # the message says it all: no chain of torchvision's and urllib's frames


def cifar_files(name: str) -> tuple[str, str, str]:
    """(archive, the folder it extracts to, its address) of "cifar10" or "cifar100"."""
    archive, folder, reader = _ARCHIVES[name]
    return archive, folder, reader.url


def damaged_cifar_file(folder: Path, reader, train: bool) -> str | None:
    """What is wrong with the first file of a CIFAR split in `folder` that is missing, fails its checksum or
    does not hold a batch (torchvision's reader names none of them); None when every file reads."""
    from torchvision.datasets.utils import check_integrity

    meta = [[reader.meta["filename"], reader.meta["md5"]]]
    for filename, md5 in [*reader.train_list, *reader.test_list, *meta]:  # torchvision wants all of them
        path = folder / filename
        if not path.is_file():
            return f"{path} is missing"
        if md5 is not None and not check_integrity(str(path), md5):
            return f"{path} differs from the published file (its checksum)"
    for filename, _ in [*(reader.train_list if train else reader.test_list), *meta]:  # those the split reads
        path = folder / filename
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            if not isinstance(entry, dict):
                raise TypeError(f"it holds a {type(entry).__name__}, not a dict")
            if filename == reader.meta["filename"]:
                missing = [key for key in [reader.meta["key"]] if key not in entry]
            else:
                missing = [key for key in ["data"] if key not in entry]
                missing += [] if "labels" in entry or "fine_labels" in entry else ["labels"]
            if missing:
                raise KeyError(f"it lacks {', '.join(missing)}")
        except Exception as error:  # anything unpickling raises: the file is not a CIFAR batch
            return f"{path} cannot be read, {type(error).__name__}: {' '.join(str(error).split())}"
    return None


def synthetic_root(data_dir: str | os.PathLike) -> Path:
    """Where `dataset="synthetic"` keeps its CIFAR-format files, written on first use."""
    root = Path(data_dir) / "synthetic"
    if not (root / "cifar-10-batches-py" / SYNTHETIC_MARKER).is_file():
        write_synthetic_cifar(root)
    return root


def _torchvision_source(cfg: VITConfig) -> tuple[str, Path]:
    """(torchvision dataset name, root folder) behind `cfg.dataset`."""
    if cfg.dataset not in DATASET_NAMES:
        raise BadValue(f"unknown dataset {cfg.dataset!r}; valid names: {', '.join(DATASET_NAMES)}")
    if cfg.dataset == "synthetic":
        return "cifar10", synthetic_root(cfg.data_dir)
    return cfg.dataset, Path(cfg.data_dir)


def num_classes(cfg: VITConfig) -> int:
    """How many classes `cfg.dataset` has, known before any file is read (the trainer builds the model first)."""
    if cfg.dataset not in DATASET_NAMES:
        raise BadValue(f"unknown dataset {cfg.dataset!r}; valid names: {', '.join(DATASET_NAMES)}")
    if cfg.dataset == "folder":
        splits = folder_splits(cfg.data_dir)
        return len(class_folders(splits.get("train", cfg.data_dir)))
    return {"cifar10": 10, "cifar100": 100, "synthetic": 10}[cfg.dataset]


def build_datasets(cfg: VITConfig) -> tuple[Dataset, Dataset | None, Dataset | None, list[str]]:
    """(train, val, test, class_names) for `cfg.dataset`, with the transforms of `cfg.augment`.

    Images are normalised as the model expects (`image_normalization(cfg)`).
    """
    if cfg.dataset == "folder":
        return build_folder_datasets(cfg)
    name, root = _torchvision_source(cfg)
    base_train = load_cifar(name, root, train=True)
    base_test = load_cifar(name, root, train=False)
    train_indices, val_indices = split_indices(len(base_train), cfg.val_split, cfg.seed)
    train_indices = class_balanced_subset(train_indices, base_train.targets, cfg.train_fraction, cfg.seed)
    mean, std = image_normalization(cfg)
    test_transform = build_transforms(cfg.augment, cfg.img_size, train=False, mean=mean, std=std)
    train_transform = build_transforms(cfg.augment, cfg.img_size, train=True, mean=mean, std=std)
    train_set = TransformedSubset(base_train, train_indices, train_transform)
    val_set = TransformedSubset(base_train, val_indices, test_transform) if val_indices else None
    test_set = TransformedSubset(base_test, range(len(base_test)), test_transform)
    return train_set, val_set, test_set, list(base_train.classes)


def build_test_set(cfg: VITConfig) -> tuple[Dataset, list[str]]:
    """The test split of `cfg.dataset` with the test transform at `cfg.img_size`, normalised for the model."""
    if cfg.dataset == "folder":
        mean, std = image_normalization(cfg)
        dataset = build_folder_eval_set(cfg.data_dir, cfg.img_size, cfg.crop_pct, mean, std)
        return dataset, list(dataset.classes)
    name, root = _torchvision_source(cfg)
    base = load_cifar(name, root, train=False)
    mean, std = image_normalization(cfg)
    transform = build_transforms("none", cfg.img_size, train=False, mean=mean, std=std)
    return TransformedSubset(base, range(len(base)), transform), list(base.classes)


# --- image folders: your own photos, ImageNet -----------------------------------------------------
# DIR/<class>/<image> (the class folders directly; the validation split is carved out with val_split),
# or ImageNet's layout DIR/train/<class>/..., DIR/val/<class>/... and optionally DIR/test/<class>/...
FOLDER_SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = datasets.folder.IMG_EXTENSIONS  # what torchvision's ImageFolder reads (.jpg, .png, ...)
IMAGENET_WNID = re.compile(r"n\d{8}")  # ImageNet's class folders are WordNet ids such as n01440764


# An image that cannot be read stops training and evaluation: skipping it would quietly change the data.
FOLDER_IMAGE_FIX = (
    "the run stops at this file rather than skip it: replace or delete the file, then run the command again"
)


def read_folder_image(path: str):
    """An image folder's loader: `vitlab.images.read_image` (RGB, 16-bit scaled), its error naming the file."""
    return read_image(path, fix=FOLDER_IMAGE_FIX)


class ImageFolder(datasets.ImageFolder):
    """torchvision's `ImageFolder` (images of any size and mode read as RGB, classes from the folder names)
    that ignores hidden folders (`.ipynb_checkpoints`), counts the non-image files it skips, names
    an empty class or a folder without class folders, reads each folder once however links lead back
    to it, and names an image that cannot be read."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not root.is_dir():
            raise MissingFile(f"image folder {root} does not exist or is not a folder")
        self.skipped: list[str] = []
        self.loops: list[str] = []  # folder links that lead back to a folder already read
        super().__init__(str(root), loader=read_folder_image, is_valid_file=self._is_image, allow_empty=True)
        counts = Counter(self.targets)
        empty = [name for index, name in enumerate(self.classes) if counts[index] == 0]
        if empty:
            raise BadValue(
                f"class folder(s) {preview_names(empty, 8)} in {root} hold no images ({' '.join(IMAGE_EXTENSIONS)}): "
                "add images or remove the folder(s)"
            )
        if self.skipped:
            print(f"note: skipped {len(self.skipped)} non-image file(s) in {root} (e.g. {self.skipped[0]})")
        if self.loops:
            print(
                f"note: {len(self.loops)} folder link(s) in {root} lead to a folder already read "
                f"({preview_names(self.loops, 3)}): each image is counted once"
            )

    def _is_image(self, path: str) -> bool:
        if datasets.folder.has_file_allowed_extension(path, IMAGE_EXTENSIONS):
            return True
        self.skipped.append(os.path.relpath(path, self.root))
        return False

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = class_folders(directory)
        return classes, {name: index for index, name in enumerate(classes)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        """(path, class index) of every image, in torchvision's order; folder links followed, each folder once."""
        samples = []
        for name in sorted(class_to_idx):
            for folder, files in self._walk(os.path.join(directory, name)):
                samples += [
                    (path, class_to_idx[name]) for file in files if is_valid_file(path := os.path.join(folder, file))
                ]
        return samples

    def _walk(self, top: str) -> list[tuple[str, list[str]]]:
        """(folder, sorted file names) under `top`, sorted by folder as torchvision does. Links to folders are
        followed (a class folder may gather others), but a link back to a folder already read (`cat/again -> .`)
        is not: torchvision's walk would read it again until the path grows too long."""
        seen, found = {os.path.realpath(top)}, []
        for folder, subfolders, files in os.walk(top, followlinks=True):
            subfolders.sort()  # the first way to a folder, in sorted order, is the one kept
            for sub in list(subfolders):
                real = os.path.realpath(os.path.join(folder, sub))
                if real in seen:
                    subfolders.remove(sub)
                    self.loops.append(os.path.relpath(os.path.join(folder, sub), self.root))
                seen.add(real)
            found.append((folder, sorted(files)))
        return sorted(found)


def class_folders(directory: str | os.PathLike) -> list[str]:
    """The class names of an image folder: its sub-folders, sorted, hidden ones (`.ipynb_checkpoints`) left out."""
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and entry.name[0] != ".")
    if not classes:
        images = [name for name in os.listdir(directory) if name.lower().endswith(IMAGE_EXTENSIONS)]
        holds = f" (it holds {len(images)} images directly)" if images else ""
        raise BadValue(
            f"{directory} has no class folders{holds}: put each class's images in a folder named after the "
            "class (DIR/cat/1.jpg, DIR/dog/2.jpg, ...), or use train/ and val/ folders of class folders"
        )
    return classes


def folder_splits(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The split folders of `data_dir`: {"train": ..., "val": ..., "test": ...} as far as they exist, or {}
    when `data_dir` holds the class folders directly (so no class may be called train, val or test)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise MissingFile(
            f"data_dir {root} is not a folder: give a folder of class folders (DIR/cat/*.jpg, ...) or one with "
            "train/ and val/ folders of class folders (ImageNet's layout)"
        )
    return {name: root / name for name in FOLDER_SPLITS if (root / name).is_dir()}


def check_same_class_folders(reference: ImageFolder, other: ImageFolder) -> None:
    """Train, val and test folders must name the same classes: the label of class k is its sorted position."""
    if reference.classes != other.classes:
        only_first = sorted(set(reference.classes) - set(other.classes))
        only_second = sorted(set(other.classes) - set(reference.classes))
        raise BadValue(
            f"the class folders of {reference.root} and {other.root} differ: only in the first: "
            f"{preview_names(only_first, 8) or '-'}; only in the second: {preview_names(only_second, 8) or '-'}. "
            "Every split needs the same class folders"
        )


def folder_transforms(
    augment: str,
    img_size: int,
    train: bool,
    crop_pct: float = 1.0,
    mean: tuple[float, ...] = GOOGLE_MEAN,
    std: tuple[float, ...] = GOOGLE_STD,
) -> transforms.Compose:
    """The transforms of `build_transforms` for images of any size and aspect ratio.

    Evaluation (and `augment="none"`) resizes the shorter side to img_size / crop_pct and takes the
    central img_size square (crop_pct 0.875 is ImageNet's 256 -> 224). "finetune" and "randaugment"
    take random resized crops of the whole image; "basic" and "strong" are the CIFAR recipe at
    img_size (the central square, a crop shifted by up to img_size / 8 with reflected borders, a flip),
    for 32 x 32 images exactly the CIFAR transforms.
    """
    return _image_transform(augment, img_size, train, True, crop_pct, mean, std)


def build_folder_datasets(cfg: VITConfig) -> tuple[Dataset, Dataset | None, Dataset | None, list[str]]:
    """(train, val, test, class_names) from the image folders in `cfg.data_dir` (`dataset="folder"`).

    With train/ and val/ folders those are the splits (test/ too when present, else no test set);
    with the class folders directly, or train/ alone, `cfg.val_split` of the images is held out.
    """
    mean, std = image_normalization(cfg)
    train_transform = folder_transforms(cfg.augment, cfg.img_size, True, cfg.crop_pct, mean, std)
    eval_transform = folder_transforms(cfg.augment, cfg.img_size, False, cfg.crop_pct, mean, std)
    splits = folder_splits(cfg.data_dir)
    if splits and "train" not in splits:
        raise BadValue(f"{cfg.data_dir} has {'/ and '.join(splits)}/ but no train/ folder to train on")
    base_train = ImageFolder(splits.get("train", cfg.data_dir))
    others = {name: ImageFolder(splits[name]) for name in ("val", "test") if name in splits}
    for base in others.values():
        check_same_class_folders(base_train, base)
    if "val" in others:
        train_indices, val_base, val_indices = range(len(base_train)), others["val"], range(len(others["val"]))
    else:
        train_indices, val_indices = split_indices(len(base_train), cfg.val_split, cfg.seed)
        val_base = base_train
    # Only the training part shrinks: the held-out images are the same whatever the fraction.
    train_indices = class_balanced_subset(train_indices, base_train.targets, cfg.train_fraction, cfg.seed)
    train_set = TransformedSubset(base_train, train_indices, train_transform)
    val_set = TransformedSubset(val_base, val_indices, eval_transform) if len(val_indices) else None
    test_base = others.get("test")
    test_set = TransformedSubset(test_base, range(len(test_base)), eval_transform) if test_base else None
    return train_set, val_set, test_set, list(base_train.classes)


def folder_fingerprint(folder: ImageFolder) -> str:
    """A short digest of an image folder's files and labels, in order: the same only for the same images."""
    digest = hashlib.sha256()
    start = len(str(folder.root).rstrip(os.sep)) + 1
    for path, label in folder.samples:
        digest.update(f"{path[start:]}\t{label}\n".encode())
    return digest.hexdigest()[:16]


def held_out_record(cfg: VITConfig, train_set: Dataset) -> dict | None:
    """A folder run whose validation images were held out of its training folder: that folder (absolute), its
    image count and fingerprint, so that `evaluate` can rebuild the held-out split (seeded) or say it cannot."""
    base = getattr(train_set, "base", None)
    if cfg.dataset != "folder" or not isinstance(base, ImageFolder) or "val" in folder_splits(cfg.data_dir):
        return None
    return {"folder": str(Path(base.root).resolve()), "images": len(base), "files": folder_fingerprint(base)}


def folder_eval_split(data_dir: str | os.PathLike) -> Path:
    """The folder to evaluate on: DIR/test, else DIR/val, else DIR itself (its class folders)."""
    splits = folder_splits(data_dir)
    for name in ("test", "val"):
        if name in splits:
            return splits[name]
    if splits:
        raise BadValue(f"{data_dir} has a train/ folder but no val/ or test/ folder to evaluate on")
    return Path(data_dir)


def match_class_names(folder_classes: list[str], model_classes: list[str]) -> list[int]:
    """The model's class index of each folder class, matched by name (a folder may hold fewer classes).

    ImageNet's own folders are named by WordNet id (n01440764, ...), whose sorted order is the class
    index of every ImageNet-1k model, so 1000 such folders match a 1000-class model in that order.
    """
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [name for name in folder_classes if name not in index]
    if not unknown:
        return [index[name] for name in folder_classes]
    wnids = all(IMAGENET_WNID.fullmatch(name) for name in folder_classes)
    if wnids and len(folder_classes) == len(model_classes) == 1000:
        return list(range(1000))
    raise BadValue(
        f"the folder's classes are not the model's: {len(unknown)} of {len(folder_classes)} class folders "
        f"name no class of the model ({preview_names(unknown, 8)}); the model's {len(model_classes)} classes are "
        f"{preview_names(model_classes, 8)}. Name the class folders as the model's classes"
    )


def build_folder_eval_set(
    data_dir: str | os.PathLike,
    img_size: int,
    crop_pct: float = 1.0,
    mean: tuple[float, ...] = GOOGLE_MEAN,
    std: tuple[float, ...] = GOOGLE_STD,
    class_names: list[str] | None = None,
) -> TransformedSubset:
    """`folder_eval_split(data_dir)` with the evaluation transform; with `class_names` (the model's),
    labels are the model's indices of the folder classes, matched by name (`match_class_names`)."""
    base = ImageFolder(folder_eval_split(data_dir))
    transform = folder_transforms("none", img_size, False, crop_pct, mean, std)
    if class_names is not None:
        base.target_transform = match_class_names(base.classes, list(class_names)).__getitem__
    dataset = TransformedSubset(base, range(len(base)), transform)
    if class_names is not None:
        dataset.classes = list(class_names)
    return dataset


def write_image_folders(
    dataset: str, data_dir: str | os.PathLike, dest: str | os.PathLike, train_per_class: int, test_per_class: int
) -> Path:
    """A small folder of photos from CIFAR's files: dest/train/<class>/*.png and dest/test/<class>/*.png.

    The first `train_per_class` training images of each class and the first `test_per_class` test images,
    in file order, from `dataset` ("cifar10", "cifar100" or "synthetic") in `data_dir` (downloaded when
    missing): a photo set for `dataset="folder"` that a CPU trains on in minutes, with a test split no run
    trains on. From synthetic files the folder holds their SYNTHETIC.txt too. An existing `dest` with
    train/ and test/ is reused as it is; a new one appears only once complete.
    """
    from PIL import Image

    dest = Path(dest)
    if (dest / "train").is_dir() and (dest / "test").is_dir():
        return dest
    if dest.exists():
        raise AlreadyExists(f"{dest} exists without train/ and test/ folders: give a new folder")
    name, root = _torchvision_source(VITConfig(dataset=dataset, data_dir=str(data_dir)))
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted call
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        base = load_cifar(name, root, train=split == "train")
        counts = Counter()
        for index, (pixels, label) in enumerate(zip(base.data, base.targets)):  # pixels: (32, 32, 3) uint8
            if counts[label] < per_class:
                counts[label] += 1
                folder = partial / split / base.classes[label]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{split}_{index:05d}.png")
    marker = root / _ARCHIVES[name][1] / SYNTHETIC_MARKER
    if marker.is_file():
        shutil.copyfile(marker, partial / SYNTHETIC_MARKER)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, dest)
    return dest
