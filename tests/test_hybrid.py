"""The R50+ViT-B_16 hybrid: equal logits with timm's `vit_base_r50_s16_224` family, Google's `.npz` layout, errors.

Reference: timm's hybrid (ResNetV2 with `preact=False`, `stem_type="same"`, `StdConv2dSame(eps=1e-8)`,
GroupNorm eps 1e-5), built with a smaller backbone / encoder where that keeps the test fast, and
loaded from a synthetic `.npz` by timm's own reader `timm.models.vision_transformer._load_weights`.
timm's hybrid is Google's `models_resnet.py` except for two epsilons: Google standardises kernels
as (w - mean) / (std + 1e-5) and uses flax's GroupNorm eps 1e-6. vitlab follows timm, so the
reference here is timm's arithmetic on Google's key layout, written by `google_hybrid_arrays` below
straight from the shapes of Google's `R50+ViT-B_16.npz` (not by vitlab's exporter).
"""

import numpy as np
import pytest
import timm
import torch
from conftest import assert_same_logits, randomize_
from safetensors.torch import save_file
from timm.layers import StdConv2dSame
from timm.layers import pad_same as timm_pad_same
from timm.models.vision_transformer import _load_weights
from timm.models.vision_transformer_hybrid import _create_vision_transformer_hybrid, _resnetv2

import vitlab
from vitlab.hybrid import StdConv2d, pad_same
from vitlab.weights.errors import CheckpointError
from vitlab.weights.load import load_pretrained
from vitlab.weights.npz import save_npz

SMALL = dict(hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, num_classes=5)


def google_hybrid_arrays(layers, img_size, hidden=64, depth=2, heads=4, mlp=128, classes=5, seed=0):
    """Random arrays under the names and HWIO / (D, heads, head_dim) shapes of Google's R50+ViT-B_16.npz."""
    rng = np.random.default_rng(seed)
    arrays = {}

    def normal(*shape, std=0.05):
        return rng.normal(0.0, std, shape).astype(np.float32)

    def norm(name, channels):  # flax GroupNorm / LayerNorm: scale and bias
        arrays[f"{name}/scale"], arrays[f"{name}/bias"] = 1 + normal(channels), normal(channels)

    def dense(name, fan_in, *out_shape):
        arrays[f"{name}/kernel"], arrays[f"{name}/bias"] = normal(fan_in, *out_shape), normal(*out_shape)

    arrays["conv_root/kernel"] = normal(7, 7, 3, 64)
    norm("gn_root", 64)
    channels = 64
    for i, units in enumerate(layers):
        width = 64 * 2**i
        for j in range(units):
            unit = f"block{i + 1}/unit{j + 1}/"
            if j == 0:  # the first unit changes channels (and resolution after stage 1): a projected shortcut
                arrays[unit + "conv_proj/kernel"] = normal(1, 1, channels, 4 * width)
                norm(unit + "gn_proj", 4 * width)
            for r, (k, c_in, c_out) in enumerate([(1, channels, width), (3, width, width), (1, width, 4 * width)], 1):
                arrays[f"{unit}conv{r}/kernel"] = normal(k, k, c_in, c_out)
                norm(f"{unit}gn{r}", c_out)
            channels = 4 * width
    # kernel (1, 1, 1024, D): 1 x 1 patches of the feature map
    arrays["embedding/kernel"], arrays["embedding/bias"] = normal(1, 1, channels, hidden), normal(hidden)
    arrays["cls"] = normal(1, 1, hidden)
    grid = img_size // (4 * 2 ** (len(layers) - 1))
    arrays["Transformer/posembed_input/pos_embedding"] = normal(1, 1 + grid * grid, hidden, std=0.02)
    for b in range(depth):
        block = f"Transformer/encoderblock_{b}/"
        norm(block + "LayerNorm_0", hidden)
        for name in ("query", "key", "value"):
            dense(f"{block}MultiHeadDotProductAttention_1/{name}", hidden, heads, hidden // heads)
        arrays[f"{block}MultiHeadDotProductAttention_1/out/kernel"] = normal(heads, hidden // heads, hidden)
        arrays[f"{block}MultiHeadDotProductAttention_1/out/bias"] = normal(hidden)
        norm(block + "LayerNorm_2", hidden)
        dense(block + "MlpBlock_3/Dense_0", hidden, mlp)
        dense(block + "MlpBlock_3/Dense_1", mlp, hidden)
    norm("Transformer/encoder_norm", hidden)
    dense("pre_logits", hidden, hidden)  # the imagenet21k files' representation layer
    dense("head", hidden, classes)
    return arrays


def timm_hybrid(layers, img_size, **kwargs):
    """timm's vit_base_r50_s16_224 architecture with `layers` ResNet units and a small encoder."""
    shape = dict(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=5, **kwargs)
    backbone = _resnetv2(layers)
    return _create_vision_transformer_hybrid("vit_base_r50_s16_224", backbone=backbone, img_size=img_size, **shape)


def write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layers", [(1, 1, 1), (3, 4, 9)], ids=["one-unit-stages", "R50-stages"])
def test_google_npz_gives_timm_logits(tmp_path, layers):
    path = write_npz(tmp_path / "R50+ViT-B_16.npz", google_hybrid_arrays(layers, img_size=64))
    reference = timm_hybrid(layers, 64, act_layer="gelu_tanh")  # Google's GELU, which the .npz load sets
    with torch.no_grad():
        _load_weights(reference, str(path))
    model = vitlab.create_model("R50+ViT-B_16", img_size=64, resnet_layers=layers, **SMALL)
    report = load_pretrained(model, path, download=False, verbose=False)
    assert set(report.skipped) == {"pre_logits.0.weight", "pre_logits.0.bias"}  # as Google's fine-tuning drops it
    assert not report.resized and not report.replaced
    assert_same_logits(model, reference, 64)


def test_position_embeddings_resized_like_timm(tmp_path):
    path = write_npz(tmp_path / "R50+ViT-B_16.npz", google_hybrid_arrays((1, 1, 1), img_size=64))
    reference = timm_hybrid((1, 1, 1), 96, act_layer="gelu_tanh")
    with torch.no_grad():
        _load_weights(reference, str(path))  # timm resamples bilinearly, no antialias
    model = vitlab.create_model("R50-ViT-B_16", img_size=96, resnet_layers=(1, 1, 1), **SMALL)
    report = load_pretrained(model, path, download=False, verbose=False, pos_embed_resize="timm")
    assert report.resized["pos_embed"].startswith("(1, 17, 64) -> (1, 37, 64)")
    assert_same_logits(model, reference, 96)


def test_timm_state_dict_gives_timm_logits(tmp_path):
    reference = randomize_(timm_hybrid((2, 1, 1), 32))
    save_file(reference.state_dict(), str(tmp_path / "hybrid.safetensors"))
    model = vitlab.create_model("R50-ViT-B_16", img_size=32, resnet_layers=(2, 1, 1), **SMALL)
    load_pretrained(model, tmp_path / "hybrid.safetensors", verbose=False)
    assert_same_logits(model, reference, 32)


def test_save_npz_writes_google_layout_and_round_trips(tmp_path):
    source = randomize_(vitlab.create_model("R50-ViT-B_16", img_size=32, resnet_layers=(1, 2, 1), **SMALL)).eval()
    path = save_npz(source, tmp_path / "out.npz")
    with np.load(path, allow_pickle=False) as data:
        written = {key: data[key].shape for key in data.files}
    google = {key: value.shape for key, value in google_hybrid_arrays((1, 2, 1), img_size=32).items()}
    google = {key: shape for key, shape in google.items() if not key.startswith("pre_logits")}
    assert written == google
    model = vitlab.create_model("R50-ViT-B_16", img_size=32, resnet_layers=(1, 2, 1), **SMALL)
    load_pretrained(model, path, verbose=False)
    assert_same_logits(model, source, 32, atol=0)


def test_missing_and_misshapen_backbone_arrays_are_named(tmp_path):
    model = vitlab.create_model("R50-ViT-B_16", img_size=32, resnet_layers=(1, 1, 1), **SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    arrays = google_hybrid_arrays((1, 1, 1), img_size=32)
    del arrays["block2/unit1/gn_proj/scale"]
    with pytest.raises(CheckpointError, match="has no 'block2/unit1/gn_proj/scale'"):
        load_pretrained(model, write_npz(tmp_path / "a.npz", arrays), verbose=False)
    arrays = google_hybrid_arrays((1, 1, 1), img_size=32)
    arrays["block3/unit1/conv2/kernel"] = np.zeros((3, 3, 256, 128), np.float32)
    message = r"block3/unit1/conv2/kernel in .*b\.npz: checkpoint shape \(128, 256, 3, 3\).*model's \(256, 256, 3, 3\)"
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(model, write_npz(tmp_path / "b.npz", arrays), verbose=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing half-loaded
    # A ViT-B_16 (pixel patches) checkpoint is not a hybrid one, and the other way round.
    with pytest.raises(CheckpointError, match="conv_root/kernel"):
        plain = vitlab.create_model("ViT-B_16", img_size=32, **SMALL)
        load_pretrained(plain, write_npz(tmp_path / "c.npz", google_hybrid_arrays((1, 1, 1), 32)), verbose=False)


def test_parameter_count_equals_timm():
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        ours = vitlab.create_model("R50+ViT-B_16", num_classes=1000).get_num_params()
        reference = timm.create_model("vit_base_r50_s16_224", pretrained=False, num_classes=1000)
    assert ours == sum(p.numel() for p in reference.parameters()) == 98_659_112


def test_preset_shapes():
    model = vitlab.create_model("R50+ViT-B_16", num_layers=1)
    assert model.cfg.resnet_layers == (3, 4, 9)
    embed = model.patch_embed
    assert (embed.patch_size, embed.grid_size, embed.num_patches) == (16, 14, 196)
    assert embed.proj.weight.shape == (768, 1024, 1, 1)
    assert [len(stage.blocks) for stage in embed.backbone.stages] == [3, 4, 9]
    assert "R50-ViT-B_16" in vitlab.list_models() and "R50+ViT-B_16" in vitlab.list_models()


def test_every_parameter_gets_a_gradient():
    model = randomize_(vitlab.create_model("R50-ViT-B_16", img_size=32, resnet_layers=(1, 1, 1), **SMALL)).train()
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


@pytest.mark.parametrize("size, kernel, stride", [(224, 7, 2), (112, 3, 2), (15, 3, 2), (28, 1, 2), (14, 3, 1)])
def test_same_padding_equals_timm(size, kernel, stride):
    x = torch.randn(1, 2, size, size)
    torch.testing.assert_close(pad_same(x, kernel, stride), timm_pad_same(x, (kernel, kernel), (stride, stride)))


def test_standardised_kernels_equal_timm():
    conv = StdConv2d(8, 4, kernel_size=3, stride=2)
    with torch.no_grad():
        conv.weight.mul_(7).add_(3)
    weight = conv.standardized_weight()  # per output filter: mean 0, variance 1
    torch.testing.assert_close(weight.mean((1, 2, 3)), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(weight.var((1, 2, 3), correction=0), torch.ones(4), atol=1e-5, rtol=0)
    reference = StdConv2dSame(8, 4, 3, stride=2, eps=1e-8)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(1, 8, 15, 15)  # odd size: SAME padding is asymmetric here
    torch.testing.assert_close(conv(x), reference(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(img_size=72), "img_size 72 is not divisible by patch_size 16"),
        (dict(patch_size=32), "patch_size 32 does not match the ResNet's stride 16 .*use patch_size=16"),
        (dict(resnet_layers=(3, 0, 9)), "resnet_layers must be a non-empty tuple"),
    ],
)
def test_bad_configurations_say_what_is_wrong(overrides, message):
    with pytest.raises(ValueError, match=message):
        vitlab.create_model("R50-ViT-B_16", num_layers=1, **overrides)
