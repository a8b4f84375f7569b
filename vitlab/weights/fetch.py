"""The known pre-trained checkpoints, their addresses and local names, and `download` to fetch one.

Downloads go to `<file>.part`, resume from there with an HTTP Range request when interrupted, and
are renamed to the final name only when complete and readable as a ViT `.npz`. The bucket's
address can be changed with the environment variable `VITLAB_PRETRAINED_URL` (a mirror, or a
local server in tests).
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vitlab.errors import BadValue, FileError, NoConnection, NotAFolder
from vitlab.files import disk_full_cause, disk_full_error

BASE_URL = "https://storage.googleapis.com/vit_models/"
URL_ENV = "VITLAB_PRETRAINED_URL"
VARIANTS = ("imagenet21k", "imagenet21k+imagenet2012", "augreg", "mae", "dinov2")
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/"

# The best upstream checkpoint of each size from "How to train your ViT?" (Steiner et al., AugReg),
# as recommended in the README of google-research/vision_transformer. Pre-trained on ImageNet-21k,
# 21843 classes, no pre-logits layer.
AUGREG_FILES = {
    "ViT-Ti_16": "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz",
    "ViT-S_16": "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz",
    "ViT-S_32": "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0.npz",
    "ViT-B_16": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz",
    "ViT-B_32": "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0.npz",
    "ViT-L_16": "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0.npz",
}

# variant -> {name: file in the bucket}
CHECKPOINTS: dict[str, dict[str, str]] = {
    # The paper's ImageNet-21k pre-training (21843 classes, with a pre-logits layer): the
    # starting point for fine-tuning, e.g. ViT-B_16 on CIFAR-10.
    "imagenet21k": {
        name: f"imagenet21k/{name}.npz"
        for name in ("ViT-B_16", "ViT-B_32", "ViT-L_16", "ViT-L_32", "ViT-H_14", "R50+ViT-B_16")
    },
    # Then fine-tuned on ImageNet-1k (1000 classes, no pre-logits): at 384 px, or 224 px for "-224".
    "imagenet21k+imagenet2012": {
        name: f"imagenet21k+imagenet2012/{name}.npz"
        for name in ("ViT-B_16", "ViT-B_16-224", "ViT-B_32", "ViT-L_16", "ViT-L_16-224", "ViT-L_32", "R50+ViT-B_16")
    },
    "augreg": {name: f"augreg/{file}" for name, file in AUGREG_FILES.items()},
    # Not Google's: MAE's ViT-B/16 fine-tuned on ImageNet-1k (83.6% top-1), a PyTorch state dict in
    # timm's names for the vit_base_p16 preset. Full addresses keep the publisher's file name locally.
    "mae": {"mae_finetuned_vit_base": "https://dl.fbaipublicfiles.com/mae/finetune/mae_finetuned_vit_base.pth"},
    # Meta's DINOv2 backbones (self-supervised on LVD-142M, no head), PyTorch state dicts in Meta's names for the
    # dinov2_* presets of the same name. Apache-2.0.
    "dinov2": {
        f"dinov2_vit{size}14{reg}": f"{DINOV2_URL}dinov2_vit{size}14/dinov2_vit{size}14{reg and '_reg4'}_pretrain.pth"
        for size in "sbl"
        for reg in ("", "_reg")
    },
}

CHUNK = 1 << 20
# A server that trickles (a byte every few seconds) never trips the socket timeout: a download that
# receives less than STALL_BYTES in STALL_SECONDS is stopped as stalled (what arrived is kept).
STALL_SECONDS = 60.0
STALL_BYTES = 64 * 1024


def base_url() -> str:
    """The bucket address, from `VITLAB_PRETRAINED_URL` when set."""
    url = os.environ.get(URL_ENV) or BASE_URL
    return url if url.endswith("/") else url + "/"


def _check(name: str, variant: str) -> None:
    if variant not in CHECKPOINTS:
        raise BadValue(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if name not in CHECKPOINTS[variant]:
        raise BadValue(
            f"no {variant} checkpoint named {name!r}; {variant} has {', '.join(CHECKPOINTS[variant])} "
            "(`python -m vitlab.download --list` shows every variant)"
        )


def url_for(name: str, variant: str = "imagenet21k") -> str:
    """The exact address of a checkpoint."""
    _check(name, variant)
    file = CHECKPOINTS[variant][name]
    return file if "://" in file else base_url() + file


def local_name(name: str, variant: str = "imagenet21k") -> str:
    """The file name under `Pretrained/`: `<variant>_<name>.npz`, or the publisher's name for other hosts."""
    _check(name, variant)
    file = CHECKPOINTS[variant][name]
    return file.rsplit("/", 1)[-1] if "://" in file else f"{variant}_{name}.npz"


def known_checkpoint(filename: str) -> tuple[str, str] | None:
    """(name, variant) when `filename` is the local name of a known checkpoint, else None."""
    for variant, names in CHECKPOINTS.items():
        for name in names:
            if filename == local_name(name, variant):
                return name, variant
    return None


def how_to_get(path: str | os.PathLike) -> str:
    """Where to get a missing checkpoint: the exact URL for a known name, else the download command."""
    path = Path(path)
    known = known_checkpoint(path.name)
    if known is None:
        return (
            f"download a checkpoint (see `python -m vitlab.download --list`) and place it at {path}, "
            "or pass the path of one you have"
        )
    name, variant = known
    return (
        f"run `python -m vitlab.download {name} --variant {variant} --dest {path.parent}` "
        f"or download {url_for(name, variant)} and place it at {path}"
    )


def list_checkpoints() -> str:
    """A printable list of every known checkpoint, its local name and its address."""
    rows = {variant: [(name, local_name(name, variant), url_for(name, variant)) for name in names]
            for variant, names in CHECKPOINTS.items()}  # fmt: skip
    name_width = max(len(row[0]) for table in rows.values() for row in table)
    file_width = max(len(row[1]) for table in rows.values() for row in table)
    lines = [f"  {'name':<{name_width}}  {'saved as':<{file_width}}  address"]
    for variant, table in rows.items():
        lines.append(f"{variant}:")
        lines += [f"  {name:<{name_width}}  {file:<{file_width}}  {url}" for name, file, url in table]
    return "\n".join(lines)


def _open(url: str, offset: int, timeout: float):
    """Open `url` from byte `offset`; no network is a ConnectionError saying what to fetch by hand."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416:  # the range starts at the end: the partial file is already complete
            return None
        raise NoConnection(f"could not download {url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise NoConnection(f"could not reach {url} ({reason})") from error


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of `url` to `part` (resuming from its current size); a stalled transfer is an error."""
    stall_seconds = STALL_SECONDS
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:
        return
    with response:
        if offset and response.status != 206:  # the server ignored the range: start again
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        try:
            with (
                open(part, "ab" if offset else "wb") as f,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=part.name[:-5],
                    disable=not progress,
                ) as bar,
            ):
                window_start, window_bytes = time.monotonic(), 0
                while chunk := _read(response, url):  # what has arrived, not a wait for a whole chunk
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    window_bytes += len(chunk)
                    if window_bytes >= STALL_BYTES:
                        window_start, window_bytes = time.monotonic(), 0
                    elif time.monotonic() - window_start > stall_seconds:
                        raise NoConnection(
                            f"download of {url} stalled: {window_bytes:,} bytes in the last {stall_seconds:g} s"
                        )
        except ConnectionError:
            raise
        except OSError as error:  # reading the network is _read's: this is the local disk refusing the bytes
            if disk_full_cause(error) is None:
                raise FileError(error.errno, f"could not write the download ({error.strerror})", str(part)) from None
            kept = part.stat().st_size if part.exists() else 0
            fix = (
                f"the {kept:,} bytes received are kept there: free some space on that disk and run the same "
                "command to resume, or download into another folder (--dest)"
            )
            raise disk_full_error(part, "the download", fix, disk="the local disk") from None
    if total is not None and received < total:
        raise NoConnection(f"download of {url} interrupted after {received:,} of {total:,} bytes")


def _read(response, url: str) -> bytes:
    """The next bytes that have arrived; a broken connection is a ConnectionError (a disk error never is)."""
    try:
        return response.read1(CHUNK)
    except (TimeoutError, http.client.IncompleteRead, OSError) as error:
        raise NoConnection(f"download of {url} interrupted ({type(error).__name__})") from error


def _verify(path: Path, suffix: str = ".npz") -> None:
    """The file opens as an `.npz` without pickles (or a weights-only PyTorch file) and holds a ViT."""
    if suffix != ".npz":
        from vitlab.weights.state_dicts import detect_layout, read_torch_state_dict

        detect_layout(read_torch_state_dict(path))  # a CheckpointError (a ValueError) says what is wrong
        return
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise BadValue(f"not a readable .npz file ({type(error).__name__}: {error})") from error
    if not keys & {"embedding/kernel", "opt/target/embedding/kernel", "params/embedding/kernel"}:
        raise BadValue(f"no 'embedding/kernel' among its {len(keys)} arrays")


def download(
    name: str,
    variant: str = "imagenet21k",
    dest: str | os.PathLike = "Pretrained",
    *,
    timeout: float = 10.0,
    progress: bool = True,
) -> Path:
    """Fetch checkpoint `name` of `variant` to `dest/local_name(name, variant)` (resumable); returns its path."""
    url = url_for(name, variant)
    final = Path(dest) / local_name(name, variant)
    if final.is_file() and final.stat().st_size > 0:
        return final
    if final.parent.exists() and not final.parent.is_dir():
        raise NotAFolder(f"download folder {final.parent} is a file: give a folder with --dest")
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    try:
        _fetch(url, part, timeout, progress)
    except ConnectionError as error:
        if part.exists() and part.stat().st_size:
            retry = f"The {part.stat().st_size:,} bytes received are kept in {part}: run the same command to resume"
        elif " HTTP 4" in str(error):  # the server answered: no connection problem, the file is not there
            retry = "The server has no file at that address (python -m vitlab.download --list shows the known ones)"
        else:
            retry = "Check the connection and run the command again"
        raise NoConnection(
            f"{error}. {retry}, or download {url} by other means (browser, wget, another machine) "
            f"and place it at {final}"
        ) from None
    try:
        _verify(part, final.suffix)
    except ValueError as error:
        part.unlink(missing_ok=True)
        raise BadValue(
            f"the file downloaded from {url} is not a valid ViT checkpoint ({error}); it was deleted: "
            f"run the command again, or download it by other means and place it at {final}"
        ) from None
    os.replace(part, final)  # only a complete, readable file gets the final name
    return final


def fetch_if_missing(path: str | os.PathLike) -> Path:
    """`path` itself; when the file is missing and its name is a known checkpoint, it is downloaded first."""
    path = Path(path)
    if not path.is_file() and (known := known_checkpoint(path.name)) is not None:
        download(known[0], variant=known[1], dest=path.parent)
    return path
