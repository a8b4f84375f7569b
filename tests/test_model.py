"""The model: shapes, equivalence with timm and torchvision, gradients, clear errors, model.py on its own."""

import os
import sys

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from conftest import randomize_
from timm.layers import resample_abs_pos_embed

import vitlab
from vitlab.model import resize_pos_embed
from vitlab.weights.convert import vitlab_to_timm

# (vitlab overrides, timm keyword arguments for the same architecture)
ARCHITECTURES = {
    "token-p8-d32": (
        dict(img_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64),
        dict(global_pool="token"),
    ),
    "token-p4-d48-h3": (
        dict(img_size=24, patch_size=4, hidden_size=48, num_layers=3, num_heads=3, mlp_dim=96, num_classes=7),
        dict(global_pool="token"),
    ),
    "gap-google-no-cls": (
        dict(
            img_size=32,
            patch_size=16,
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            mlp_dim=128,
            classifier="gap",
            class_token=False,
        ),
        dict(global_pool="avg", class_token=False, fc_norm=False),
    ),
    "gap-mae-fc-norm": (
        dict(
            img_size=48,
            patch_size=16,
            hidden_size=64,
            num_layers=1,
            num_heads=8,
            mlp_dim=256,
            classifier="gap",
            fc_norm=True,
        ),
        dict(global_pool="avg", class_token=True, fc_norm=True),
    ),
}


def timm_twin(model: vitlab.VisionTransformer, **timm_kwargs) -> torch.nn.Module:
    cfg = model.cfg
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        embed_dim=cfg.hidden_size,
        depth=cfg.num_layers,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_dim / cfg.hidden_size,
        **timm_kwargs,
    )
    reference.load_state_dict(vitlab_to_timm(model.state_dict()), strict=True)
    return reference.eval()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_equal_timm(arch):
    overrides, timm_kwargs = ARCHITECTURES[arch]
    model = randomize_(vitlab.create_model("ViT-Test", **overrides)).eval()
    reference = timm_twin(model, **timm_kwargs)
    x = torch.randn(3, 3, model.cfg.img_size, model.cfg.img_size)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
        assert ours.abs().max() > 0.1  # real logits, not a zero head
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.forward_features(x), reference.forward_features(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name, torchvision_name",
    [
        ("ViT-B_16", "vit_b_16"),
        ("ViT-B_32", "vit_b_32"),
        ("ViT-L_16", "vit_l_16"),
        ("ViT-L_32", "vit_l_32"),
        ("ViT-H_14", "vit_h_14"),
    ],
)
def test_parameter_counts_equal_torchvision(name, torchvision_name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        ours = vitlab.create_model(name, num_classes=1000).get_num_params()
        reference = getattr(torchvision.models, torchvision_name)(num_classes=1000)
    assert ours == sum(p.numel() for p in reference.parameters())


def test_parameter_counts_written():
    expected = {
        "ViT-B_16": 86_567_656,
        "ViT-B_32": 88_224_232,
        "ViT-L_16": 304_326_632,
        "ViT-L_32": 306_535_400,
        "ViT-H_14": 632_045_800,
    }
    with torch.device("meta"):
        for name, count in expected.items():
            assert vitlab.create_model(name).get_num_params() == count


def test_cifar_presets_sizes():
    assert 2.5e6 < vitlab.create_model("ViT-CIFAR-3M").get_num_params() < 3.0e6
    assert 6.0e6 < vitlab.create_model("ViT-CIFAR-6M").get_num_params() < 6.6e6


def test_fused_and_manual_attention_agree_with_gradients():
    model = randomize_(vitlab.create_model("ViT-Test", num_layers=3)).train()
    model.encoder.blocks[0].attn.attn_drop.p = 0.0  # dropout off so both paths are deterministic
    x = torch.randn(4, 3, 32, 32)
    results = []
    for fused in (True, False):
        model.zero_grad()
        model.set_fused_attention(fused)
        out = model(x)
        out.pow(2).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (out_fused, grads_fused), (out_manual, grads_manual) = results
    torch.testing.assert_close(out_fused, out_manual, atol=1e-5, rtol=1e-5)
    for name in grads_fused:
        torch.testing.assert_close(grads_fused[name], grads_manual[name], atol=1e-5, rtol=1e-4, msg=name)


def test_attention_maps_are_distributions():
    model = randomize_(vitlab.create_model("ViT-Test", num_layers=3, num_heads=4)).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = model.get_attention_maps(x)
    assert len(maps) == 3
    for probs in maps:
        assert probs.shape == (2, 4, 17, 17)
        assert (probs >= 0).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 17))
    # The maps are the ones the forward pass uses: recompute layer 0 by hand.
    block = model.encoder.blocks[0]
    tokens = block.norm1(model.embed(x))
    q, k, _ = block.attn.to_qkv(tokens).reshape(2, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(maps[0], (q @ k.transpose(-2, -1) / 8**0.5).softmax(-1))


def test_every_parameter_gets_a_gradient():
    model = randomize_(vitlab.create_model("ViT-Test", representation_size=16, drop_path_rate=0.1)).train()
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_conv_and_einops_patch_embeddings_agree():
    embed = vitlab.PatchEmbedding(img_size=32, patch_size=8, in_chans=3, hidden_size=24)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(embed(x), embed.forward_einops(x), atol=1e-5, rtol=1e-5)
    # The first patch, flattened by hand in (row, column, channel) order.
    patch = x[0, :, :8, :8].permute(1, 2, 0).reshape(-1)
    torch.testing.assert_close(embed(x)[0, 0], embed.linear_weight() @ patch + embed.proj.bias, atol=1e-5, rtol=1e-5)


def test_forward_features_and_head_split():
    model = randomize_(vitlab.create_model("ViT-Test", representation_size=16)).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 17, 32)
    # After the final LayerNorm (scale 1, shift 0 at init would give mean 0 / std 1; here random).
    assert model.forward_head(tokens, pre_logits=True).shape == (2, 16)
    torch.testing.assert_close(model.forward_head(tokens), model(x))
    pooled = torch.tanh(model.pre_logits[0](tokens[:, 0]))
    torch.testing.assert_close(model(x), model.head(pooled))


def test_num_classes_zero_returns_features():
    model = vitlab.create_model("ViT-Test", num_classes=0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 32)


def test_head_and_init_follow_reference():
    model = vitlab.create_model("ViT-Test")
    assert model.head.weight.abs().sum() == 0 and model.head.bias.abs().sum() == 0
    assert model.cls_token.abs().sum() == 0
    assert 0.015 < model.pos_embed.std() < 0.025  # N(0, 0.02), as in Google's and timm's code
    assert model.encoder.blocks[0].mlp.fc1.bias.abs().max() < 1e-4


def test_gap_pools_patch_tokens_only():
    model = randomize_(vitlab.create_model("ViT-Test", classifier="gap", num_classes=0)).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    torch.testing.assert_close(model(x), tokens[:, 1:].mean(1))


def test_token_gap_reads_cls_beside_the_mean_patch_token():
    # DINOv2's linear evaluation: torch.cat([x_norm_clstoken, x_norm_patchtokens.mean(dim=1)], dim=-1); the
    # registers are neither (Darcet et al.), so a model with them averages the patch tokens only.
    model = randomize_(vitlab.create_model("ViT-Test", classifier="token_gap", num_register_tokens=4, num_classes=3))
    model.eval()
    assert model.head.in_features == 2 * model.cfg.hidden_size
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)  # (B, 1 + 4 + N, D)
    expected = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=1)
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), expected)
    torch.testing.assert_close(model(x), expected @ model.head.weight.T + model.head.bias)
    with pytest.raises(ValueError, match="class_token"):
        vitlab.create_model("ViT-Test", classifier="token_gap", class_token=False)


def test_resize_pos_embed_matches_timm():
    pos_embed = torch.randn(1, 1 + 14 * 14, 16)
    for new_grid, mode in [(24, "bilinear"), (2, "bilinear"), (24, "bicubic")]:
        ours = resize_pos_embed(pos_embed, new_grid, num_prefix_tokens=1, mode=mode)
        theirs = resample_abs_pos_embed(
            pos_embed, [new_grid, new_grid], num_prefix_tokens=1, interpolation=mode, antialias=False
        )
        assert ours.shape == (1, 1 + new_grid**2, 16)
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(ours[:, 0], pos_embed[:, 0])  # CLS position kept


def test_resize_model_in_place():
    model = randomize_(vitlab.create_model("ViT-Test")).eval()
    model.resize_pos_embed_(64)
    assert model.pos_embed.shape == (1, 1 + 64, 32)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_list_and_aliases():
    names = vitlab.list_models()
    for name in [
        "ViT-Ti_16",
        "ViT-S_16",
        "ViT-B_16",
        "ViT-B_32",
        "ViT-L_16",
        "ViT-L_32",
        "ViT-H_14",
        "ViT-CIFAR-3M",
        "ViT-CIFAR-6M",
        "ViT-Test",
        "vit_b_32_224",
        "vit_l_16_224",
        "vit_l_32_224",
        "vit_base_p16",
    ]:
        assert name in names
    with torch.device("meta"):
        mae = vitlab.create_model("vit_base_p16")
        assert mae.cfg.classifier == "gap" and mae.cfg.fc_norm and mae.cfg.hidden_size == 768
        assert vitlab.create_model("vit_l_32_224").cfg.patch_size == 32
    assert "vit_base_p16" in vitlab.show_support_list()


def test_create_model_overrides():
    model = vitlab.create_model(
        "ViT-Test", num_classes=3, img_size=48, patch_size=16, hidden_size=16, num_heads=4, in_chans=1
    )
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 3)
    assert model.patch_embed.num_patches == 9


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: vitlab.create_model("ViT-X_99"), "valid names: ViT-Ti_16"),
        (lambda: vitlab.create_model("ViT-Test", img_size=30), "not divisible by patch_size 8"),
        (lambda: vitlab.create_model("ViT-Test", classifier="mean"), "choose one of token, gap"),
        (lambda: vitlab.create_model("ViT-Test", hidden=5), "unknown ModelConfig field"),
        (lambda: vitlab.create_model("ViT-Test", num_heads=3), "not divisible by num_heads 3"),
    ],
)
def test_bad_configurations_say_what_is_wrong(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 3, 64, 64), (3, 32, 32)])
def test_bad_input_shapes_say_what_is_expected(shape):
    model = vitlab.create_model("ViT-Test")
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        model(torch.randn(*shape))


@pytest.mark.slow
def test_tanh_gelu_is_flax_default_gelu():
    """Google's MLP (flax: Dense -> nn.gelu -> Dense) with jax on the same weights; jax is not a test extra."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = torch.linspace(-8, 8, 100_001)
    google = np.asarray(jax.nn.gelu(jnp.asarray(x.numpy())))  # flax.linen.gelu is jax.nn.gelu, approximate=True
    np.testing.assert_allclose(F.gelu(x, approximate="tanh").numpy(), google, atol=2e-6, rtol=0)
    assert np.abs(F.gelu(x).numpy() - google).max() > 4e-4  # the exact GELU is another function
    model = randomize_(vitlab.create_model("ViT-B_16", num_layers=1, hidden_size=64, num_heads=4, mlp_dim=256)).eval()
    mlp = model.encoder.blocks[0].mlp
    tokens = torch.randn(2, 10, 64)
    kernel1, kernel2 = (jnp.asarray(fc.weight.detach().numpy().T) for fc in (mlp.fc1, mlp.fc2))  # flax: (in, out)
    bias1, bias2 = (jnp.asarray(fc.bias.detach().numpy()) for fc in (mlp.fc1, mlp.fc2))
    expected = np.asarray(jax.nn.gelu(jnp.asarray(tokens.numpy()) @ kernel1 + bias1) @ kernel2 + bias2)
    with torch.no_grad():
        ours = mlp(tokens).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5 * np.abs(expected).max(), rtol=0)


def test_gelu_choice_per_preset_and_switchable():
    google = ("ViT-Ti_16", "ViT-B_16", "ViT-H_14", "R50-ViT-B_16", "vit_b_16")
    assert all(vitlab.get_model_config(name).gelu_approximate == "tanh" for name in google)
    exact = ("ViT-B_16-MAE", "ViT-CIFAR-3M", "ViT-Test")
    assert all(vitlab.get_model_config(name).gelu_approximate == "none" for name in exact)
    model = randomize_(vitlab.create_model("ViT-Test", num_layers=2)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        exact_logits = model(x)
        model.set_gelu_approximate("tanh")
        assert model.cfg.gelu_approximate == "tanh"
        assert all(block.mlp.act.approximate == "tanh" for block in model.encoder.blocks)
        tanh_model = vitlab.create_model("ViT-Test", num_layers=2, gelu_approximate="tanh").eval()
        tanh_model.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(x), tanh_model(x), atol=0, rtol=0)
        assert not torch.allclose(model(x), exact_logits, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="unknown gelu_approximate 'erf': choose one of none, tanh"):
        vitlab.create_model("ViT-Test", gelu_approximate="erf")


# --- vitlab/model.py on its own ---------------------------------------------------------------------
STANDALONE_RUN = """
import json, sys
sys.modules["vitlab"] = None  # any import of vitlab's package fails: model.py must need none of it
sys.path.insert(0, ".")  # python -I leaves the current folder off sys.path
import torch
from model import ModelConfig, VisionTransformer
model = VisionTransformer(ModelConfig(**json.load(open("config.json")))).eval()
model.load_state_dict(torch.load("weights.pt", weights_only=True))
with torch.no_grad():
    torch.save(model(torch.load("images.pt", weights_only=True)), "logits.pt")
"""


def test_model_file_alone_builds_vit_b16_with_the_same_logits(tmp_path):
    """model.py copied into an empty folder, run without the repository on sys.path, equals create_model."""
    import dataclasses
    import json
    import shutil
    import subprocess
    import sys

    import vitlab.model

    shutil.copy(vitlab.model.__file__, tmp_path / "model.py")
    model = randomize_(vitlab.create_model("ViT-B_16")).eval()  # random weights, not the zero head
    fields = {f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(vitlab.model.ModelConfig)}
    (tmp_path / "config.json").write_text(json.dumps(fields))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    images = torch.randn(2, 3, 224, 224)
    torch.save(images, tmp_path / "images.pt")
    (tmp_path / "run.py").write_text(STANDALONE_RUN)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "run.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt", weights_only=True), expected)
    assert expected.abs().max() > 0.1  # not a zero head


def test_model_file_imports_torch_einops_and_the_standard_library_only():
    import ast

    import vitlab.model

    tree = ast.parse(open(vitlab.model.__file__).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    tops = {name.split(".")[0] for name in imported}
    assert tops - sys.stdlib_module_names - {"__future__"} <= {"torch", "einops"}, sorted(tops)
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))  # no relative imports


def test_hybrid_stem_is_given_to_the_model_not_imported_by_it():
    cfg = vitlab.get_model_config("R50-ViT-B_16", img_size=32, num_layers=1, resnet_layers=(1, 1, 1))
    with pytest.raises(ValueError, match="needs its ResNet stem"):
        vitlab.VisionTransformer(cfg)
    model = vitlab.create_model("R50-ViT-B_16", img_size=32, num_layers=1, resnet_layers=(1, 1, 1))
    assert type(model.patch_embed).__module__ == "vitlab.hybrid" and model.patch_embed.num_patches == 4


def test_stochastic_depth_is_torchvisions():
    model = randomize_(vitlab.create_model("ViT-Test", drop_path_rate=0.5)).train()
    block = model.encoder.blocks[1]
    branch = torch.randn(8, 17, 32)
    torch.manual_seed(3)
    ours = block._residual(branch)
    torch.manual_seed(3)
    theirs = torchvision.ops.stochastic_depth(branch, 0.5, mode="row", training=True)
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    assert block.eval()._residual(branch) is branch
