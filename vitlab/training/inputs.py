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
    return Missing(
        f"the {name} checkpoint {path}",
        "does not exist",
        url,
        f"download {url} and place it at {path} (`python -m vitlab.download {name} --variant {variant} "
        f"--dest {path.parent}` does it where there is a network)",
    )


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
