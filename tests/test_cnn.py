"""The CNN of the controlled comparison: ResNet-20's published size and compute, and every command working on it."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from test_folders import write_folder

import vitlab
from vitlab.cnn import CifarResNet
from vitlab.configs import get_experiment
from vitlab.measure import forward_flops
from vitlab.train import train
from vitlab.weights.checkpoint import load_checkpoint, model_from_checkpoint


def test_resnet20_has_the_papers_layers_parameters_and_compute():
    model = vitlab.create_model("ResNet-20")
    assert isinstance(model, CifarResNet) and "ResNet-20" in vitlab.list_models()
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convolutions) + 1 == 20  # 19 3x3 convolutions and the head: the "20" of ResNet-20
    # He et al.'s option A (zero-padded shortcuts) has 269,722 parameters; the two 1x1 projection shortcuts of
    # torchvision's BasicBlock add 16*32 + 32*64 weights and 2 * (32 + 64) BatchNorm parameters.
    assert model.get_num_params() == 269_722 + 16 * 32 + 32 * 64 + 2 * (32 + 64) == 272_474
    # About 41 M multiply-adds per 32 px image (He et al. 2016, Table 6 context; 2 FLOPs each).
    assert 40.5e6 < forward_flops(model, 32) / 2 < 41.5e6
    features = model.forward_features(torch.zeros(2, 3, 32, 32))
    assert features.shape == (2, 64, 8, 8)
    # Channels-last is a layout, not another model: the same layers in the usual layout, in float64, agree.
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    usual = copy.deepcopy(model).double().to(memory_format=torch.contiguous_format).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = usual.forward_head(usual.stages(usual.stem(images.double())))  # without forward_features' layout
        torch.testing.assert_close(model.eval()(images), expected.float(), rtol=1e-4, atol=1e-5)


def test_every_parameter_gets_a_gradient_and_the_head_resets_to_zero():
    model = vitlab.create_model("ResNet-20", num_classes=4)
    model(torch.randn(4, 3, 32, 32)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.reset_classifier(3)
    assert model.head.out_features == 3 and not model.head.weight.any() and model.cfg.num_classes == 3


def test_the_cnn_has_no_attention_to_show():
    with pytest.raises(TypeError, match="a CNN has no attention maps"):
        vitlab.create_model("ResNet-20").get_attention_maps(torch.zeros(1, 3, 32, 32))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("photos"), per_class=16)


def _cnn(tmp_path, photos, **changes):
    tiny = dict(data_dir=str(photos), train_batch_size=16, eval_batch_size=64, num_steps=4, warmup_steps=1,
                eval_every=2, num_workers=0, progress=False, save_dir=str(tmp_path / "Model"),
                log_dir=str(tmp_path / "TB"), name="cnn", model_overrides={"num_layers": 1})  # fmt: skip
    return get_experiment("cnn", **{**tiny, **changes})


def test_the_cnn_trains_resumes_and_is_evaluated_and_predicted_like_a_vit(tmp_path, photos, capsys):
    from vitlab.evaluate import main as evaluate_main
    from vitlab.predict import main as predict_main

    first = train(_cnn(tmp_path, photos))
    assert first["steps"] == 4 and isinstance(first["model"], CifarResNet)
    resumed = train(_cnn(tmp_path, photos, num_steps=6, resume="last"))
    assert resumed["steps"] == 6
    state = load_checkpoint(tmp_path / "Model" / "cnn" / "last.pt")
    assert state["model_config"]["architecture"] == "resnet" and state["step"] == 6
    model, classes = model_from_checkpoint(tmp_path / "Model" / "cnn" / "best.pt")
    assert isinstance(model, CifarResNet) and classes == first["class_names"]
    capsys.readouterr()
    evaluate_main(["--checkpoint", str(tmp_path / "Model" / "cnn" / "best.pt")])
    out = capsys.readouterr().out
    assert "the run's held-out 10%" in out and "top-1" in out
    image = next(iter(sorted(photos.glob("*/*.png"))))
    assert predict_main([str(image), "--checkpoint", str(tmp_path / "Model" / "cnn" / "best.pt"), "--top_k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and lines[1].split()[0] == "1." and lines[1].split()[1] in first["class_names"]
    saved = json.loads((tmp_path / "Model" / "cnn" / "config.json").read_text())
    assert saved["model_type"] == "ResNet-20" and saved["num_steps"] == 6


def test_the_vit_figures_say_a_cnn_has_none():
    from vitlab.visualize import embedding_filters_pca, position_embedding_similarity

    cnn = vitlab.create_model("ResNet-20")
    with pytest.raises(TypeError, match="a CNN has no position embeddings"):
        position_embedding_similarity(cnn)
    with pytest.raises(TypeError, match="a CNN has no patch-embedding filters"):
        embedding_filters_pca(cnn)
    assert position_embedding_similarity(vitlab.create_model("ViT-Test")).shape == (4, 4, 4, 4)


def test_predict_refuses_a_model_type_that_disagrees_with_the_runs_checkpoint(tmp_path, photos, capsys):
    from vitlab import commands
    from vitlab.predict import main as predict_main

    train(_cnn(tmp_path, photos, num_steps=2))
    image, best = next(iter(sorted(photos.glob("*/*.png")))), tmp_path / "Model" / "cnn" / "best.pt"
    assert commands.run(predict_main, [str(image), "--checkpoint", str(best), "--model_type", "ViT-B_16"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("error: --model_type ViT-B_16 disagrees with") and "ResNet-20 run" in err[0]
    )
    assert commands.run(predict_main, [str(image), "--checkpoint", str(best), "--model_type", "ResNet-20"]) == 0
