"""Device-side augmentation against torchvision's RandomResizedCrop, its resize and PIL."""

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as F2

from vitlab.augment import (
    DeviceAugment,
    DeviceBatches,
    DeviceEvalTransform,
    central_crop,
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
    out = DeviceAugment(size, flip=False, antialias=False)(ramp, torch.Generator().manual_seed(0))
    values = (out[:, 0, 0] + 1) / 2 * 255  # (B, S): the source column sampled by each output column
    boxes = sample_crop_boxes(n, height, width, SCALE, RATIO, torch.Generator().manual_seed(0))
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
    with pytest.raises(ValueError, match="set augment='finetune' or device_augment=False"):
        train(cfg.replace(name="strong", augment="strong"))
