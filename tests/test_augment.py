"""Device-side augmentation against torchvision's RandomResizedCrop, its resize and PIL."""

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as F2
from messages import raises_naming

from vitlab.augment import (
    BatchTrivialAugmentWide,
    DeviceAugment,
    DeviceBatches,
    DeviceEvalTransform,
    DevicePadCropAugment,
    central_crop,
    pad_crop_flip,
    resized_crop,
    sample_crop_boxes,
    uint8_cifar,
)

SCALE, RATIO = (0.05, 1.0), (3 / 4, 4 / 3)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def torchvision_boxes(n: int, height: int, width: int, scale=SCALE, ratio=RATIO) -> np.ndarray:
    image = torch.empty(3, height, width)
    return np.array([torchvision.transforms.RandomResizedCrop.get_params(image, scale, ratio) for _ in range(n)])


@pytest.mark.parametrize("height, width", [(32, 32), (224, 224), (24, 40)])
def test_crop_box_distribution_matches_torchvision(height, width):
    n = 4000
    ours = sample_crop_boxes(n, height, width, SCALE, RATIO, torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(1)
    theirs = torchvision_boxes(n, height, width)
    assert ((ours[:, 0] + ours[:, 2] <= height) & (ours[:, 1] + ours[:, 3] <= width)).all()
    assert (ours >= 0).all() and (ours[:, 2:] > 0).all()
    features = {
        "area fraction": lambda b: b[:, 2] * b[:, 3] / (height * width),
        "log aspect ratio": lambda b: np.log(b[:, 3] / b[:, 2]),
        "top": lambda b: b[:, 0],
        "left": lambda b: b[:, 1],
    }
    # Two samples of 4000 from one distribution: P(KS > 0.045) < 0.1% (1.95 * sqrt(2 / 4000) = 0.044);
    # the boxes are integers, which only makes the test more conservative.
    for name, feature in features.items():
        statistic = ks_statistic(feature(ours), feature(theirs))
        assert statistic < 0.045, f"{name}: KS statistic {statistic:.3f} against torchvision"
    # The quartiles of the area fraction agree too (a coarser, readable check).
    quartiles = lambda b: np.quantile(features["area fraction"](b), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(quartiles(ours), quartiles(theirs), atol=0.03)


@pytest.mark.parametrize("height, width", [(20, 40), (40, 20), (30, 30)])
def test_fallback_is_torchvision_central_crop(height, width):
    # An area of 1.5-2x the image never fits: all 10 tries fail and the central crop is used.
    scale = (1.5, 2.0)
    expected = torchvision.transforms.RandomResizedCrop.get_params(torch.empty(3, height, width), scale, RATIO)
    assert central_crop(height, width, RATIO) == expected
    boxes = sample_crop_boxes(16, height, width, scale, RATIO, torch.Generator().manual_seed(0))
    assert boxes.tolist() == [list(expected)] * 16


def test_full_image_box_equals_torchvision_resize():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    full = torch.tensor([[0, 0, 32, 32]] * 2)
    for size in (224, 48, 16):
        ours = resized_crop(images, full, size, antialias=False)
        # Same float arithmetic up to summation order: |error| <= a few ulp of 255 (~3e-5 each).
        reference = F2.resize(images.float(), [size, size], antialias=False)
        torch.testing.assert_close(ours, reference, atol=1e-3, rtol=0)
        # torchvision's uint8 kernel uses fixed-point weights and rounds to an integer: one grey level.
        reference_uint8 = F2.resize(images, [size, size], antialias=False).float()
        assert (ours - reference_uint8).abs().max() <= 1.0 + 1e-3
        # With antialiasing (only matters when shrinking) our weights are PIL's, as are torchvision's.
        ours = resized_crop(images, full, size, antialias=True)
        torch.testing.assert_close(ours, F2.resize(images.float(), [size, size], antialias=True), atol=1e-3, rtol=0)


@pytest.mark.parametrize("box, size", [((3, 5, 17, 21), 224), ((0, 0, 32, 32), 224), ((2, 1, 27, 30), 20)])
def test_resized_crop_equals_pil(box, size):
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    ours = resized_crop(image, torch.tensor([box]), size)[0]
    pil = TF.resized_crop(TF.to_pil_image(image[0]), *box, [size, size], interpolation=TF.InterpolationMode.BILINEAR)
    pil = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()  # (3, S, S)
    # PIL stores 8-bit results (rounded, with fixed-point weights): within one grey level.
    assert (ours - pil).abs().max() <= 1.0 + 1e-3
    # The crop alone equals torchvision's resized_crop on a float tensor.
    reference = F2.resized_crop(image.float(), *box, [size, size], antialias=True)[0]
    torch.testing.assert_close(ours, reference, atol=1e-3, rtol=0)


def test_flip_probability_is_one_half():
    n = 4000
    # Left half dark, right half bright: a flip is visible in every output.
    images = torch.zeros(n, 3, 8, 8, dtype=torch.uint8)
    images[..., 4:] = 255
    augment = DeviceAugment(8, scale=(1.0, 1.0), ratio=(1.0, 1.0))  # the whole image, every time
    out = augment(images, torch.Generator().manual_seed(0))
    plain = (images.float() / 255 - 0.5) / 0.5
    same, mirrored = (out == plain).flatten(1).all(1), (out == plain.flip(-1)).flatten(1).all(1)
    assert (same ^ mirrored).all()
    # 4000 fair coins: the standard deviation of the mean is 0.008; allow four of them.
    assert abs(mirrored.float().mean().item() - 0.5) < 0.032
    no_flip = DeviceAugment(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(no_flip(images[:8]), plain[:8], atol=0, rtol=0)


def test_output_range_dtype_and_shape():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    images[0], images[1] = 0, 255
    out = DeviceAugment(48)(images, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 48, 48) and out.dtype == torch.float32
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
    torch.testing.assert_close(out[0], torch.full_like(out[0], -1.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], torch.full_like(out[1], 1.0), atol=1e-6, rtol=0)
    assert out[2:].std() > 0.3  # random images stay random, not a constant
    with pytest.raises(TypeError, match="uint8 or floating-point"):
        DeviceAugment(48)(images.int())


def test_per_channel_normalisation():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10 statistics
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = DeviceEvalTransform(32, mean=mean, std=std)(images)
    torch.testing.assert_close(out, F2.normalize(images.float() / 255, mean, std), atol=1e-5, rtol=0)


def test_eval_transform_equals_resize_and_normalize():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = DeviceEvalTransform(64)(images)
    reference = (F2.resize(images.float(), [64, 64], antialias=True) / 255 - 0.5) / 0.5
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_seeded_generator_is_deterministic():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    augment = DeviceAugment(40)
    first = augment(images, torch.Generator().manual_seed(123))
    again = augment(images, torch.Generator().manual_seed(123))
    other = augment(images, torch.Generator().manual_seed(124))
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert (first - other).abs().max() > 0.1


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-5), (torch.bfloat16, 1e-2)])
def test_floating_point_inputs(dtype, tolerance):
    # Floating-point images are in 0..1 (torchvision's convention); bf16 holds 8 significant bits,
    # so k / 255 is off by at most 2^-9 relative, i.e. 4e-3 after scaling to [-1, 1].
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    augment = DeviceAugment(56)
    reference = augment(images, torch.Generator().manual_seed(0))
    out = augment((images.double() / 255).to(dtype), torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, atol=tolerance, rtol=0)


def fake_cifar(n: int) -> torchvision.datasets.CIFAR10:
    """A CIFAR10 object holding random data, without files (the layout torchvision loads)."""
    dataset = torchvision.datasets.CIFAR10.__new__(torchvision.datasets.CIFAR10)
    rng = np.random.default_rng(0)
    dataset.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C) like the pickles
    dataset.targets = rng.integers(0, 10, n).tolist()
    return dataset


def test_uint8_cifar_matches_dataset_and_subsets():
    dataset = fake_cifar(50)
    images, labels = uint8_cifar(dataset)
    assert images.shape == (50, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.long
    to_tensor = lambda k: torch.from_numpy(dataset.data[k]).permute(2, 0, 1)  # (3, H, W)
    assert torch.equal(images[7], to_tensor(7)) and labels[7].item() == dataset.targets[7]
    inner = torch.utils.data.Subset(dataset, list(range(10, 40)))
    nested = torch.utils.data.Subset(inner, [5, 0, 29])  # -> dataset items 15, 10, 39
    sub_images, sub_labels = uint8_cifar(nested)
    assert torch.equal(sub_images, torch.stack([to_tensor(k) for k in (15, 10, 39)]))
    assert sub_labels.tolist() == [dataset.targets[k] for k in (15, 10, 39)]
    # Wrappers that name their source `base` (like vitlab.data.TransformedSubset) work too.
    wrapper = type("Wrapper", (), {"base": nested, "indices": [2, 1]})()  # -> dataset items 39, 10
    assert uint8_cifar(wrapper)[1].tolist() == [dataset.targets[k] for k in (39, 10)]
    with pytest.raises(TypeError, match="CIFAR10/CIFAR100"):
        uint8_cifar(torch.utils.data.TensorDataset(torch.zeros(2, 3)))


def test_augment_crops_the_sampled_boxes():
    # A horizontal ramp (pixel value = column) shows which columns each output row came from.
    n, height, width, size = 300, 32, 256, 64
    ramp = torch.arange(width, dtype=torch.uint8).expand(n, 3, height, width)
    uniforms = torch.rand(n, DeviceAugment.num_uniforms, generator=torch.Generator().manual_seed(0))
    out = DeviceAugment(size, flip=False, antialias=False)(ramp, uniforms=uniforms)
    values = (out[:, 0, 0] + 1) / 2 * 255  # (B, S): the source column sampled by each output column
    boxes = sample_crop_boxes(n, height, width, SCALE, RATIO, uniforms=uniforms[:, :-1])
    # Output column k samples column left + (k + 0.5) * w / S - 0.5, clamped inside the box.
    left, w = boxes[:, 1].double(), boxes[:, 3].double()
    first = torch.maximum(left + 0.5 * w / size - 0.5, left)
    last = torch.minimum(left + (size - 0.5) * w / size - 0.5, left + w - 1)
    torch.testing.assert_close(values[:, 0].double(), first, atol=1e-3, rtol=0)
    torch.testing.assert_close(values[:, -1].double(), last, atol=1e-3, rtol=0)


def test_device_batches_resume_draws_the_same_crops():
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(20)
    keys = [(position, (7 * position) % 20) for position in range(40)]  # (stream position, dataset index)
    stream = DeviceBatches(images, labels, keys, 4, DeviceAugment(16), seed=3, device="cpu")
    batches = [next(stream) for _ in range(10)]
    assert [b[1].tolist() for b in batches[:2]] == [[0, 7, 14, 1], [8, 15, 2, 9]]
    assert batches[0][0].shape == (4, 3, 16, 16)
    # Starting at the sixth micro-batch (as a resumed run does) gives the same images and crops.
    resumed = DeviceBatches(images, labels, keys[20:], 4, DeviceAugment(16), seed=3, device="cpu")
    for expected in batches[5:]:
        got = next(resumed)
        torch.testing.assert_close(got[0], expected[0], atol=0, rtol=0)
        assert torch.equal(got[1], expected[1])
    other_seed = DeviceBatches(images, labels, keys, 4, DeviceAugment(16), seed=4, device="cpu")
    assert (next(other_seed)[0] - batches[0][0]).abs().max() > 0.1


# --- the trainer's device-side path ----------------------------------------------------------------
def _train_cfg(tmp_path, data_dir, **overrides):
    from vitlab.configs import get_experiment

    base = dict(
        dataset="cifar10", data_dir=str(data_dir), save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"),
        name="run", progress=False, TB_log=False, val_split=0.1, eval_every=1000, log_every=5, num_workers=0,
    )  # fmt: skip
    base.update(overrides)
    return get_experiment("smoke", **base)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, above all on a busy machine
    yield
    torch.set_num_threads(threads)


def test_device_augment_without_augmentation_equals_the_pil_path(tmp_path, synthetic_cifar, one_thread):
    # augment="none" at 32 px: both paths only scale to [-1, 1], and both follow the same sample stream.
    from vitlab.train import train

    cfg = _train_cfg(tmp_path, synthetic_cifar, augment="none", num_steps=5, warmup_steps=2, log_every=1)
    pil = train(cfg.replace(name="pil"))
    device = train(cfg.replace(name="device", device_augment=True))
    assert [h["loss"] for h in device["history"]] == pytest.approx([h["loss"] for h in pil["history"]], rel=1e-5)


def test_training_with_device_augment_learns(tmp_path, synthetic_cifar, one_thread):
    from vitlab.train import train

    cfg = _train_cfg(
        tmp_path, synthetic_cifar, augment="finetune", device_augment=True, num_steps=100, learning_rate=5e-3
    )
    result = train(cfg)
    losses = [h["loss"] for h in result["history"]]
    print(f"\ndevice_augment: losses {losses[0]:.3f} -> {losses[-1]:.3f}, val {result['best_val_accuracy']:.3f}")
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["best_val_accuracy"] > 0.7  # ten classes: chance is 0.1


def test_scratch_recipe_augments_on_the_device_the_same_however_a_step_is_split(tmp_path, synthetic_cifar, one_thread):
    # The scratch experiment augments on the device by default; one pass of 32 images per step and
    # two accumulation passes of 16 see the same augmented images, so they give the same losses.
    from vitlab.configs import get_experiment
    from vitlab.train import train

    assert get_experiment("scratch").device_augment and get_experiment("scratch").augment == "strong"
    cfg = _train_cfg(
        tmp_path, synthetic_cifar, augment="strong", device_augment=True, num_steps=4, warmup_steps=1, log_every=1
    )
    whole = train(cfg.replace(name="whole"))
    split = train(cfg.replace(name="split", gradient_accumulation_steps=2))
    assert [h["loss"] for h in split["history"]] == pytest.approx([h["loss"] for h in whole["history"]], rel=1e-5)


# --- the from-scratch recipe: padded crop, flip, TrivialAugmentWide per image ----------------------
def scratch_images(n: int = 16) -> torch.Tensor:
    """uint8 (n, 3, 32, 32): half synthetic shapes (flat areas, edges), half noise (every grey level)."""
    from vitlab.synthetic import synthetic_images

    rng = np.random.default_rng(0)
    shapes = synthetic_images(np.arange(n - n // 2) % 10, rng)
    noise = rng.integers(0, 256, (n // 2, 32, 32, 3), dtype=np.uint8)
    return torch.from_numpy(np.concatenate([shapes, noise])).permute(0, 3, 1, 2).contiguous()


def recorded_trivial_augment_draws(n: int, monkeypatch) -> list[tuple[str, float]]:
    """(op name, magnitude) of n calls of torchvision's TrivialAugmentWide, recorded at its `_apply_op`."""
    import torchvision.transforms.autoaugment as autoaugment

    draws = []
    monkeypatch.setattr(autoaugment, "_apply_op", lambda img, name, magnitude, **_: draws.append((name, magnitude)))
    transform, image = torchvision.transforms.TrivialAugmentWide(), torch.zeros(3, 8, 8, dtype=torch.uint8)
    torch.manual_seed(0)
    for _ in range(n):
        transform(image)
    return draws


def test_trivial_augment_draws_ops_and_magnitudes_as_torchvision(monkeypatch):
    n = 7000
    theirs = recorded_trivial_augment_draws(n, monkeypatch)
    augment = BatchTrivialAugmentWide()
    op, magnitude = augment.sample(torch.rand(n, 3, generator=torch.Generator().manual_seed(1)))
    ours = [(augment.op_names[k], m) for k, m in zip(op.tolist(), magnitude.tolist())]
    names = augment.op_names
    assert set(names) == {name for name, _ in theirs} and len(names) == 14
    # Op frequencies: chi-square test of homogeneity of the two samples (13 degrees of freedom);
    # 34.5 is the 0.1% critical value.
    counts = np.array([[sum(1 for name, _ in draws if name == op) for op in names] for draws in (ours, theirs)])
    expected = counts.sum(0, keepdims=True) * counts.sum(1, keepdims=True) / counts.sum()
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 34.5, dict(zip(names, counts.T.tolist()))
    space = torchvision.transforms.TrivialAugmentWide()._augmentation_space(31)
    for op_name in names:
        mine = np.array([m for name, m in ours if name == op_name])
        reference = np.array([m for name, m in theirs if name == op_name])
        # Only torchvision's magnitudes (its bins, with either sign where the op is signed).
        magnitudes, signed = space[op_name]
        allowed = set(np.round(np.atleast_1d(magnitudes.double().numpy()), 4))
        allowed |= {-m for m in allowed} if signed else set()
        assert set(np.round(mine, 4)) <= allowed and set(np.round(reference, 4)) <= allowed, op_name
        # ~500 draws per op: P(KS > 0.13) < 0.1% for one distribution (1.95 * sqrt(2 / 450) = 0.13).
        assert ks_statistic(mine, reference) < 0.13, op_name


def every_op_and_magnitude(augment: BatchTrivialAugmentWide, bins=(0, 1, 10, 20, 30)):
    """(op index, magnitude) pairs: each op at a few bins, both signs where signed."""
    pairs = []
    for k in range(len(augment.op_names)):
        magnitudes = sorted({augment.magnitudes[k, b].item() for b in bins})
        if augment.signed[k]:
            magnitudes += [-m for m in magnitudes if m > 0]
        pairs += [(k, m) for m in magnitudes]
    return pairs


def test_each_image_gets_its_own_op_as_torchvision_applies_it():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.autoaugment import _apply_op  # what TrivialAugmentWide calls

    augment = BatchTrivialAugmentWide()
    pairs = every_op_and_magnitude(augment)  # ~100: one batch holds every op and magnitude at once
    images = scratch_images(len(pairs))
    op = torch.tensor([k for k, _ in pairs])
    magnitude = torch.tensor([m for _, m in pairs], dtype=torch.float64)
    out = augment.apply_ops(images, op, magnitude).int()
    assert out.dtype == torch.int32 and out.shape == images.shape
    for i, (k, m) in enumerate(pairs):
        name = augment.op_names[k]
        options = dict(interpolation=InterpolationMode.NEAREST, fill=None)
        tensor_kernel = _apply_op(images[i], name, m, **options).int()
        pil = _apply_op(TF.to_pil_image(images[i]), name, m, **options)
        pil = torch.from_numpy(np.array(pil)).permute(2, 0, 1).int()
        # torchvision's tensor kernel on that image alone: the same pixels.
        assert torch.equal(out[i], tensor_kernel), f"{name} {m}: {(out[i] - tensor_kernel).abs().max()}"
        # PIL (the trainer's PIL path): within two grey levels; PIL rounds where the tensor kernels
        # truncate. Rotation by nearest neighbour differs where a pixel centre falls on a boundary.
        difference = (out[i] - pil).abs()
        if name == "Rotate":
            assert (difference > 0).float().mean() < 0.05, f"{name} {m}"
        else:
            assert difference.max() <= 2, f"{name} {m}: {difference.max()}"


def test_pad_crop_flip_equals_torchvision():
    images = scratch_images(4)
    offsets = [(top, left) for top in range(9) for left in range(9)]  # every crop of the 40 x 40 padded image
    batch = images.repeat_interleave(len(offsets), dim=0)  # (4 * 81, 3, 32, 32)
    tops = torch.tensor([t for t, _ in offsets] * 4)
    lefts = torch.tensor([left for _, left in offsets] * 4)
    flips = torch.arange(len(batch)) % 2 == 1
    # Uniforms in the middle of the bins that map to these offsets.
    uniforms = torch.stack([(tops + 0.5) / 9, (lefts + 0.5) / 9, torch.where(flips, 0.25, 0.75)], dim=1)
    out = pad_crop_flip(batch, 4, uniforms)
    assert out.dtype == torch.uint8
    for i in range(len(batch)):
        padded = TF.pad(batch[i], 4, padding_mode="reflect")
        expected = TF.crop(padded, int(tops[i]), int(lefts[i]), 32, 32)
        expected = TF.hflip(expected) if flips[i] else expected
        assert torch.equal(out[i], expected), i


def test_scratch_augment_draws_crops_and_flips_uniformly():
    n = 9000
    uniforms = torch.rand(n, 3, generator=torch.Generator().manual_seed(0))
    ramp = (torch.arange(32, dtype=torch.uint8) * 4).expand(n, 3, 32, 32)  # column j holds 4 j: shows each offset
    out = pad_crop_flip(ramp, 4, uniforms)
    flipped = out[:, 0, 0, 0] > out[:, 0, 0, -1]
    assert abs(flipped.float().mean().item() - 0.5) < 0.02  # 9000 fair coins: 4 standard deviations
    # The left offset of an unflipped crop is visible in its column 8 (no reflection there): 4 (8 + left - 4).
    left = out[~flipped, 0, 0, 8].long() // 4 - 4
    counts = torch.bincount(left, minlength=9)
    assert len(counts) == 9 and (counts - len(left) / 9).abs().max() < 0.15 * len(left) / 9


def test_scratch_augment_equals_the_pil_pipeline():
    # The PIL transforms of "strong" at 48 px, each random step given the device path's draws:
    # the same tensors within two grey levels (PIL rounds to 8 bits after the op and the resize).
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.autoaugment import _apply_op

    from vitlab.data import build_transforms

    augment = DevicePadCropAugment(48)
    images = scratch_images(14)
    uniforms = torch.rand(14, augment.num_uniforms, generator=torch.Generator().manual_seed(3))
    uniforms[:, 3] = (torch.arange(14) + 0.5) / 14  # one image per op
    out = augment(images, uniforms=uniforms)
    assert out.shape == (14, 3, 48, 48) and out.dtype == torch.float32
    op, magnitude = augment.trivial_augment.sample(uniforms[:, 3:])
    crop, flip, trivial, *rest = build_transforms("strong", 48, train=True).transforms
    assert isinstance(crop, transforms.RandomCrop) and (crop.padding, crop.padding_mode) == (4, "reflect")
    assert isinstance(flip, transforms.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(trivial, transforms.TrivialAugmentWide) and trivial.num_magnitude_bins == 31
    finish = transforms.Compose(rest)  # resize to 48, to tensor, normalise: not random
    for i in range(14):
        name = augment.trivial_augment.op_names[op[i]]
        top, left = (uniforms[i, :2] * 9).long().tolist()
        image = TF.crop(TF.pad(TF.to_pil_image(images[i]), 4, padding_mode="reflect"), top, left, 32, 32)
        image = TF.hflip(image) if uniforms[i, 2] < 0.5 else image
        image = _apply_op(image, name, magnitude[i].item(), interpolation=InterpolationMode.NEAREST, fill=None)
        difference = (out[i] - finish(image)).abs() * 255 / 2  # in grey levels
        if name == "Rotate":  # nearest-neighbour rotation: PIL differs where a pixel centre is on a boundary
            assert (difference > 2).float().mean() < 0.05, name
        else:
            assert difference.max() <= 2 + 1e-3, f"{name} {magnitude[i].item()}: {difference.max()}"


def test_device_batches_do_not_depend_on_how_a_step_is_split():
    # One step of 8 images as one micro-batch, as two (accumulation) and as two processes' halves:
    # every image gets the same augmentation, which depends only on (seed, stream position).
    images = scratch_images(16)
    labels = torch.arange(16)
    keys = [(position, (5 * position) % 16) for position in range(32)]  # 4 steps of 8
    augment = DevicePadCropAugment(32)
    whole = DeviceBatches(images, labels, keys, 8, augment, seed=1, device="cpu", global_batch=8)
    expected = torch.cat([next(whole)[0] for _ in range(4)])  # (32, 3, 32, 32), by position
    halves = DeviceBatches(images, labels, keys, 4, augment, seed=1, device="cpu", global_batch=8)
    torch.testing.assert_close(torch.cat([next(halves)[0] for _ in range(8)]), expected, atol=0, rtol=0)
    for rank in (0, 1):  # rank r reads positions [8 s + 4 r, 8 s + 4 r + 4) of step s
        shard = [key for key in keys if (key[0] % 8) // 4 == rank]
        stream = DeviceBatches(images, labels, shard, 4, augment, seed=1, device="cpu", global_batch=8)
        for step in range(4):
            start = 8 * step + 4 * rank
            torch.testing.assert_close(next(stream)[0], expected[start : start + 4], atol=0, rtol=0)
    with pytest.raises(ValueError, match="span two global batches"):
        next(DeviceBatches(images, labels, keys[6:], 4, augment, seed=1, device="cpu", global_batch=8))


def test_every_recipe_step_has_its_pil_transform_and_every_device_version_a_recipe():
    from vitlab.augment import DEVICE_VERSIONS
    from vitlab.configs import AUGMENTATIONS
    from vitlab.data import PIL_STEPS

    assert {step for steps in AUGMENTATIONS.values() for step in steps} <= set(PIL_STEPS)
    assert set(DEVICE_VERSIONS) <= set(AUGMENTATIONS.values())
    assert [name for name, steps in AUGMENTATIONS.items() if steps not in DEVICE_VERSIONS] == ["randaugment"]


def test_a_new_recipe_is_one_entry_of_the_table(monkeypatch):
    """A recipe made of known steps needs only its line in configs.AUGMENTATIONS: PIL path, checks and refusal."""
    from PIL import Image

    from vitlab.configs import AUGMENTATIONS, VITConfig
    from vitlab.data import build_transforms, folder_transforms
    from vitlab.training.build import checked_micro_batch_size

    monkeypatch.setitem(AUGMENTATIONS, "flip_only", ("flip",))
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    torch.manual_seed(0)
    for transform in (build_transforms, folder_transforms):
        flip_only = transform("flip_only", 32, True, mean=(0,) * 3, std=(1,) * 3)
        seen = [flip_only(Image.fromarray(pixels)) for _ in range(8)]
        assert all(torch.equal(out, image) or torch.equal(out, image.flip(-1)) for out in seen)
        assert any(torch.equal(out, image.flip(-1)) for out in seen)
    cfg = VITConfig(augment="flip_only", dataset="synthetic", model_type="ViT-Test", device_augment=True)
    with raises_naming(ValueError, "'flip_only'", "'basic'", "'none'"):
        checked_micro_batch_size(cfg)
    assert checked_micro_batch_size(cfg.replace(device_augment=False)) == cfg.train_batch_size
