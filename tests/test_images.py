"""Image folders as people have them: truncated and empty files, 16-bit PNGs, folder links that loop back.

A file that cannot be read stops training and evaluation with its path (no image is skipped quietly);
16-bit grey images are scaled to 8 bits as they are, not clipped to white; each image is counted once.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from vitlab import commands
from vitlab.data import ImageFolder, build_folder_eval_set
from vitlab.images import UnreadableImageError, read_image, to_rgb
from vitlab.predict import load_image

STOPS = "the run stops at this file rather than skip it: replace or delete the file, then run the command again"


def _folder(root, per_class=6, suffix=".png"):
    """Two classes of small noisy RGB images."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(36, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}{suffix}", **({"quality": 90} if suffix == ".jpg" else {}))
    return root


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _command(module, argv, capsys) -> tuple[int, str]:
    code = commands.run(importlib.import_module(f"vitlab.{module}").main, [str(a) for a in argv])
    return code, capsys.readouterr().err


TRAIN = ["--config", "smoke", "--dataset", "folder", "--num_steps", "3", "--warmup_steps", "1", "--progress", "false",
         "--output_dir", "Model", "--log_dir", "TB", "--name", "run"]  # fmt: skip


def test_a_truncated_jpeg_stops_training_and_evaluate_with_the_files_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    photos = _folder(tmp_path / "photos", suffix=".jpg")
    assert _command("train", [*TRAIN, "--data_dir", photos, "--TB_log", "false"], capsys)[0] == 0
    broken = photos / "dog" / "3.jpg"  # read in the loop by a DataLoader worker process, not at the start
    _truncate(broken)
    worker = ["--num_workers", "2", "--TB_log", "false"]  # no sample images logged: the first read is a worker's
    code, err = _command("train", [*TRAIN, "--data_dir", photos, "--name", "again", *worker], capsys)
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith(f"error: image {broken} cannot be read (image file is truncated (")
    assert line.endswith(f"bytes not processed)): {STOPS}")
    code, err = _command("evaluate", ["--checkpoint", "Model/run/best.pt", "--data_dir", photos], capsys)
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith(f"error: image {broken} cannot be read (image file is truncated (") and STOPS in line


def test_a_damaged_first_image_is_named_before_the_run_writes_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    photos = _folder(tmp_path / "photos")
    (photos / "cat" / "0.png").write_bytes(b"")  # the first sample, read when the data are checked
    code, err = _command("train", [*TRAIN, "--data_dir", photos], capsys)
    assert code == 1
    assert err.splitlines() == [f"error: image {photos / 'cat' / '0.png'} cannot be read (empty file): {STOPS}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no run folder, no TensorBoard folder


def test_empty_and_non_image_files_are_named_by_their_path(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    for name, reason in (("empty.png", "empty file"), ("text.jpg", "not an image format Pillow reads")):
        with pytest.raises(UnreadableImageError) as refused:
            read_image(tmp_path / name)
        assert str(refused.value) == (
            f"image {tmp_path / name} cannot be read ({reason}): give a PNG, JPEG or another format Pillow reads"
        )
        assert "BufferedReader" not in str(refused.value)


def _grey16(tmp_path):
    """A 16-bit grey PNG (Pillow mode I;16) holding 0 ... 65535, and the same picture in 8 bits."""
    values = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "scan16.png")
    Image.fromarray(np.rint(values / 257).astype(np.uint8)).save(tmp_path / "scan8.png")
    assert Image.open(tmp_path / "scan16.png").mode == "I;16"
    assert np.asarray(Image.open(tmp_path / "scan16.png").convert("RGB")).mean() > 250  # Pillow alone: almost white
    return values


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    values = _grey16(tmp_path)
    pixels = np.asarray(read_image(tmp_path / "scan16.png"))  # (H, W, 3)
    assert pixels.dtype == np.uint8 and pixels.shape == (48, 48, 3)
    np.testing.assert_array_equal(pixels[..., 0], np.rint(values / 257).astype(np.uint8))
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[-1, -1].tolist() == [255, 255, 255]
    assert abs(pixels.mean() - 127.5) < 0.5
    as_int32 = to_rgb(Image.fromarray(values.astype(np.int32)))  # mode I, as older Pillow versions read 16-bit PNGs
    np.testing.assert_array_equal(np.asarray(as_int32), pixels)
    eight_bit_in_i = to_rgb(Image.fromarray(np.arange(256, dtype=np.int32).reshape(16, 16)))  # mode I, 0-255: as is
    assert np.asarray(eight_bit_in_i)[..., 0].ravel().tolist() == list(range(256))
    # predict and the folder loader read it as the 8-bit picture
    torch.testing.assert_close(load_image(tmp_path / "scan16.png", 32), load_image(tmp_path / "scan8.png", 32))
    torch.testing.assert_close(
        load_image(Image.open(tmp_path / "scan16.png"), 32), load_image(tmp_path / "scan8.png", 32)
    )
    for bits in ("16", "8"):
        (tmp_path / f"folder{bits}" / "scan").mkdir(parents=True)
        os.link(tmp_path / f"scan{bits}.png", tmp_path / f"folder{bits}" / "scan" / "a.png")
    sixteen, eight = (build_folder_eval_set(tmp_path / f"folder{bits}", 32)[0][0] for bits in ("16", "8"))
    torch.testing.assert_close(sixteen, eight)


def test_a_folder_link_that_loops_back_counts_each_image_once(tmp_path, capsys):
    photos = _folder(tmp_path / "photos")
    os.symlink(".", photos / "cat" / "again")  # cat/again -> cat
    assert len(torchvision.datasets.ImageFolder(str(photos))) > 100  # torchvision walks the loop again and again
    dataset = ImageFolder(photos)
    assert len(dataset) == 12 and sorted(dataset.targets) == [0] * 6 + [1] * 6
    assert len({path for path, _ in dataset.samples}) == 12
    assert capsys.readouterr().out == (
        f"note: 1 folder link(s) in {photos} lead to a folder already read (cat/again): each image is counted once\n"
    )
    # A link to another folder is followed: class folders may gather images from elsewhere.
    _folder(tmp_path / "more")
    os.symlink(tmp_path / "more" / "dog", photos / "dog" / "more")
    assert len(ImageFolder(photos)) == 18
