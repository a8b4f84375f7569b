"""What the trainer checks in its data before it writes anything, and what evaluate checks in every batch.

An empty training set, a single class, a label that is no class index of the model, images in (H, W, C)
layout: each is one clear error naming the sample (or the split) and the class count, and the run folder
and TensorBoard folder are not created.
"""

import pytest
import torch
from messages import raises_naming
from torch.utils.data import TensorDataset

from vitlab.configs import VITConfig
from vitlab.evaluate import evaluate
from vitlab.factory import create_model
from vitlab.train import train


def _cfg(tmp_path, **overrides) -> VITConfig:
    base = dict(
        model_type="ViT-Test", img_size=32, train_batch_size=8, eval_batch_size=16, num_steps=2, warmup_steps=1,
        eval_every=100, log_every=1, optimizer="sgd", learning_rate=0.05, precision="fp32", num_workers=0,
        save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), name="run", progress=False, TB_log=True,
    )  # fmt: skip
    return VITConfig(**{**base, **overrides})


def _data(labels, layout="chw") -> TensorDataset:
    images = torch.rand(len(labels), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if layout == "hwc":
        images = images.permute(0, 2, 3, 1).contiguous()  # (N, 32, 32, 3): as read with PIL / NumPy
    return TensorDataset(images, torch.tensor(labels))


def _nothing_written(tmp_path) -> bool:
    return not (tmp_path / "Model").exists() and not (tmp_path / "TB").exists()


def test_images_in_height_width_channels_layout_are_refused_before_logging(tmp_path):
    """With TensorBoard on, the sample images used to fail inside log_samples with a tensor-size RuntimeError."""
    data = _data([i % 10 for i in range(16)], layout="hwc")
    with pytest.raises(ValueError) as refused:
        train(_cfg(tmp_path), train_set=data)
    assert str(refused.value) == (
        "training sample 0 is an image of shape (32, 32, 3), but the model takes (channels, height, width) = "
        "(3, 32, 32): it looks like (height, width, channels): put channels first with image.permute(2, 0, 1)"
    )
    assert _nothing_written(tmp_path)
    with raises_naming(ValueError, "training sample 0", "(3, 48, 48)"):
        train(_cfg(tmp_path), train_set=TensorDataset(torch.zeros(4, 3, 48, 48), torch.tensor([0, 1, 0, 1])))
    with raises_naming(TypeError, "training sample 0", "list"):
        train(_cfg(tmp_path), train_set=[([0.0] * 3, 0), ([1.0] * 3, 1)], model=create_model("ViT-Test", num_classes=2))
    assert _nothing_written(tmp_path)


def test_an_empty_training_set_is_refused_before_anything_is_written(tmp_path):
    empty = TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))
    with raises_naming(ValueError, "training set is empty", "0 samples"):
        train(_cfg(tmp_path), train_set=empty)
    with raises_naming(ValueError, "training set is empty", "0 samples"):
        train(_cfg(tmp_path), train_set=empty, model=create_model("ViT-Test", num_classes=10))
    assert _nothing_written(tmp_path)


def test_one_class_is_refused(tmp_path):
    with pytest.raises(ValueError) as refused:
        train(_cfg(tmp_path), train_set=_data([0] * 16))
    assert str(refused.value) == (
        "the training data have one class (0): a classifier cannot learn anything from one class (its loss is 0 "
        "from the first step); give at least two classes (one folder per class for image folders)"
    )
    assert _nothing_written(tmp_path)


def test_a_training_label_beyond_the_classes_names_the_sample_and_the_class_count(tmp_path):
    data = _data([i % 10 for i in range(15)] + [12])
    with pytest.raises(ValueError) as refused:
        train(_cfg(tmp_path, TB_log=False), train_set=data, model=create_model("ViT-Test", num_classes=10))
    assert str(refused.value) == (
        "training sample 15 has label 12, but the data have 10 classes (labels 0 to 9): fix the sample's label, "
        "or train a model with more classes"
    )


def test_labels_kept_beside_the_images_are_checked_before_the_run_starts(tmp_path):
    """Datasets with `targets` (CIFAR, image folders, subsets of them): every split, before anything is written."""

    class Targets(TensorDataset):
        def __init__(self, labels):
            super().__init__(*_data(labels).tensors)
            self.targets = list(labels)
            self.classes = [f"c{i}" for i in range(4)]

    val = torch.utils.data.Subset(Targets([0, 1, 2, 9, 3]), [4, 3, 2])
    with raises_naming(ValueError, "validation sample 1", "label 9", "4 classes"):
        train(_cfg(tmp_path), train_set=Targets([0, 1, 2, 3] * 4), val_set=val)
    assert _nothing_written(tmp_path)


def test_evaluate_names_a_label_beyond_the_models_classes():
    model = create_model("ViT-Test", num_classes=10)
    data = _data([1, 2, 3, 4, 5, 10, 0])
    with pytest.raises(ValueError) as refused:
        evaluate(model, data, batch_size=4)
    assert str(refused.value) == (
        "sample 5 of the dataset has label 10, but the model has 10 classes (labels 0 to 9): the dataset's labels "
        "must be the model's class indices"
    )
    with raises_naming(ValueError, "sample 0", "label -1", "10 classes"):
        evaluate(model, _data([-1, 2]))
    with raises_naming(ValueError, "samples 0-1", "torch.float32", "(2,)"):
        evaluate(model, TensorDataset(torch.zeros(2, 3, 32, 32), torch.tensor([0.0, 1.0])))
    assert evaluate(model, _data([1, 2, 3, 9]))["num_samples"] == 4  # the last class is a class
