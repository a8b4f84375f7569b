"""Google's .npz checkpoints: logits equal timm's loader, position resizing, round trips, clear errors."""

from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest
import scipy.ndimage
import torch
from conftest import randomize_
from messages import raises_naming
from npz_helpers import Arch, google_arrays, linen_arrays, save_arrays, write_google_npz
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.models.vision_transformer import _load_weights

from vitlab.factory import create_model
from vitlab.weights.errors import CheckpointError
from vitlab.weights.load import load_pretrained
from vitlab.weights.npz import save_npz

# name -> (architecture of the file, vitlab overrides, timm keyword arguments)
ARCHITECTURES = {
    # ViT-B_16's exact shapes as in imagenet21k/ViT-B_16.npz (pre-logits, 21843 classes)
    "B_16-imagenet21k": (Arch(representation=768), dict(name="ViT-B_16", num_classes=21843), {}),
    # ViT-Ti_16's exact shapes, as in the augreg files (no pre-logits)
    "Ti_16-augreg": (Arch(width=192, heads=3, mlp=768), dict(name="ViT-Ti_16", num_classes=21843), {}),
    # patch 32 and 1000 classes, as in imagenet21k+imagenet2012 files (small width to stay fast)
    "p32-imagenet2012": (
        Arch(patch=32, width=96, depth=3, heads=6, mlp=192, img_size=96, num_classes=1000),
        dict(name="ViT-B_32", hidden_size=96, num_layers=3, num_heads=6, mlp_dim=192, img_size=96, num_classes=1000),
        {},
    ),
    # Google's "gap" classifier: no 'cls' key and no CLS position
    "p14-gap-no-cls": (
        Arch(patch=14, width=64, depth=2, heads=4, mlp=128, img_size=56, num_classes=5, cls=False),
        dict(
            name="ViT-H_14",
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            mlp_dim=128,
            img_size=56,
            num_classes=5,
            classifier="gap",
            class_token=False,
        ),
        dict(global_pool="avg", class_token=False, fc_norm=False),
    ),
}


def vitlab_model(name, **overrides):
    return create_model(name, **overrides).eval()


def timm_model(arch: Arch, img_size: int | None = None, num_classes: int | None = None, **kwargs) -> TimmViT:
    """timm's ViT shaped like `arch`, computing Google's tanh GELU unless `act_layer` says otherwise."""
    kwargs.setdefault("act_layer", "gelu_tanh")  # timm's own default is the exact GELU
    return TimmViT(
        img_size=img_size or arch.img_size,
        patch_size=arch.patch,
        embed_dim=arch.width,
        depth=arch.depth,
        num_heads=arch.heads,
        mlp_ratio=arch.mlp / arch.width,
        num_classes=arch.num_classes if num_classes is None else num_classes,
        weight_init="skip",  # every weight comes from the file; timm's init of 86 M values only costs time
        **kwargs,
    ).eval()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_unchanged(model, before) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed by a failed load"


@pytest.mark.parametrize("arch_name", ARCHITECTURES)
def test_logits_equal_timm_loader(tmp_path, arch_name):
    arch, overrides, timm_kwargs = ARCHITECTURES[arch_name]
    path = write_google_npz(tmp_path / f"{arch_name}.npz", arch)
    model = vitlab_model(**overrides)
    report = load_pretrained(model, path, verbose=False)
    reference = timm_model(arch, **timm_kwargs)
    _load_weights(reference, str(path))
    x = torch.randn(1 if arch.width > 512 else 3, 3, arch.img_size, arch.img_size)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert ours.abs().max() > 0.1  # a real head, not zeros
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert not report.resized and not report.replaced
    if arch.representation:  # timm ignores pre_logits; a model without the layer drops them and says so
        assert set(report.skipped) == {"pre_logits.0.weight", "pre_logits.0.bias"}


def test_google_npz_sets_tanh_gelu_and_match_gelu_false_keeps_the_models(tmp_path):
    arch = Arch(patch=8, width=48, depth=2, heads=3, mlp=96, img_size=32, num_classes=7)
    path = write_google_npz(tmp_path / "small.npz", arch)
    overrides = dict(hidden_size=48, num_heads=3, mlp_dim=96, num_classes=7)
    x = torch.randn(3, 3, 32, 32)
    for match_gelu, model_gelu, timm_act in ((True, "tanh", "gelu_tanh"), (False, "none", "gelu")):
        model = vitlab_model("ViT-Test", **overrides)  # a from-scratch preset: exact GELU until loaded
        assert model.cfg.gelu_approximate == "none"
        report = load_pretrained(model, path, verbose=False, match_gelu=match_gelu)
        assert report.gelu_approximate == model.cfg.gelu_approximate == model_gelu
        assert all(block.mlp.act.approximate == model_gelu for block in model.encoder.blocks)
        assert any("GELU set to the tanh" in note for note in report.notes) == match_gelu
        reference = timm_model(arch, act_layer=timm_act)
        _load_weights(reference, str(path))
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)
    # The two GELUs differ by at most 4.7e-4: enough to move logits past the tolerance above.
    with torch.no_grad():
        model.set_gelu_approximate("tanh")
        assert (model(x) - reference(x)).abs().max() > 3e-5


LINEN_LAYOUTS = {  # name -> linen_arrays keyword arguments
    "vit_jax-linen": dict(),
    "big_vision": dict(big_vision=True),
    "big_vision-scan": dict(big_vision=True, scan=True),
}
SMALL_ARCH = dict(patch=8, width=48, depth=3, heads=3, mlp=96, img_size=32, num_classes=5)
SMALL_MODEL = dict(hidden_size=48, num_layers=3, num_heads=3, mlp_dim=96, num_classes=5)


@pytest.mark.parametrize("layout", LINEN_LAYOUTS)
@pytest.mark.parametrize("cls", [True, False])
def test_linen_names_load_as_the_released_names(tmp_path, layout, cls):
    """The same values under Linen / big_vision names give the same model as under the released names."""
    arch = Arch(**SMALL_ARCH, cls=cls)
    gap = {} if cls else dict(classifier="gap", class_token=False)
    linen = vitlab_model("ViT-Test", **SMALL_MODEL, **gap)
    report = load_pretrained(linen, save_arrays(tmp_path / "linen.npz", linen_arrays(arch, **LINEN_LAYOUTS[layout])))
    assert report.gelu_approximate == "tanh" and not report.resized and not report.replaced
    assert any("Linen block names" in note for note in report.notes)
    released = google_arrays(arch)
    if cls and layout.startswith("big_vision"):  # big_vision adds no position to the CLS token
        released["Transformer/posembed_input/pos_embedding"][:, 0] = 0
        assert any("zero CLS position" in note for note in report.notes)
    original = vitlab_model("ViT-Test", **SMALL_MODEL, **gap)
    load_pretrained(original, save_arrays(tmp_path / "released.npz", released), verbose=False)
    for key, value in original.state_dict().items():
        assert torch.equal(linen.state_dict()[key], value), key


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("cls", [True, False])
def test_big_vision_layout_gives_timms_logits(tmp_path, scan, cls):
    """timm's `_load_weights` reads big_vision files too (no CLS position: timm's no_embed_class)."""
    arch = Arch(**SMALL_ARCH, cls=cls)
    path = save_arrays(tmp_path / "bv.npz", linen_arrays(arch, big_vision=True, scan=scan))
    gap = {} if cls else dict(classifier="gap", class_token=False)
    model = vitlab_model("ViT-Test", **SMALL_MODEL, **gap)
    load_pretrained(model, path, verbose=False)
    timm_kwargs = dict(no_embed_class=True) if cls else dict(global_pool="avg", class_token=False, fc_norm=False)
    reference = timm_model(arch, **timm_kwargs)
    _load_weights(reference, str(path))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert ours.abs().max() > 0.1
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_attention_pooling_head_is_refused_by_name(tmp_path):
    arrays = linen_arrays(Arch(**SMALL_ARCH, cls=False), big_vision=True)
    arrays["params/MAPHead_0/probe"] = np.zeros((1, 1, 48), np.float32)
    model = vitlab_model("ViT-Test", **SMALL_MODEL, classifier="gap", class_token=False)
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="MAPHead_0.*pool_type='map'"):
        load_pretrained(model, save_arrays(tmp_path / "map.npz", arrays), verbose=False)
    assert_unchanged(model, before)


def test_pre_logits_loaded_when_the_model_has_them(tmp_path):
    arch = Arch(patch=8, width=32, depth=1, heads=2, mlp=64, img_size=32, num_classes=6, representation=24)
    path = write_google_npz(tmp_path / "rep.npz", arch)
    arrays = google_arrays(arch)
    model = vitlab_model("ViT-Test", hidden_size=32, num_layers=1, num_classes=6, img_size=32, representation_size=24)
    report = load_pretrained(model, path, verbose=False)
    assert not report.skipped and not report.replaced
    torch.testing.assert_close(model.pre_logits[0].weight, torch.from_numpy(arrays["pre_logits/kernel"]).T)
    # pooled CLS token -> Linear + tanh -> head, computed by hand from the file's arrays
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = model.forward_features(x)[:, 0]
        features = torch.tanh(
            pooled @ torch.from_numpy(arrays["pre_logits/kernel"]) + torch.from_numpy(arrays["pre_logits/bias"])
        )
        expected = features @ torch.from_numpy(arrays["head/kernel"]) + torch.from_numpy(arrays["head/bias"])
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("img_size", [384, 160, 32])
@pytest.mark.parametrize("cls", [True, False])
def test_position_embedding_resize_of_npz_matches_googles_scipy_zoom(tmp_path, img_size, cls):
    """Google's checkpoint.py: scipy.ndimage.zoom(grid, (G / g, G / g, 1), order=1) on the (g, g, D) grid."""
    arch = Arch(width=48, depth=1, heads=3, mlp=96, num_classes=4, cls=cls)  # 224 px, 14 x 14 grid
    path = write_google_npz(tmp_path / "p224.npz", arch)
    gap = {} if cls else dict(classifier="gap", class_token=False)
    model = vitlab_model(
        "ViT-B_16", hidden_size=48, num_layers=1, num_heads=3, mlp_dim=96, num_classes=4, img_size=img_size, **gap
    )
    report = load_pretrained(model, path, verbose=False)
    assert report.pos_embed_resize == "google" and "aligned corners" in report.resized["pos_embed"]
    table = google_arrays(arch)["Transformer/posembed_input/pos_embedding"]  # (1, prefix + 196, 48)
    prefix = int(cls)
    grid, new_grid = 14, img_size // 16
    zoom = new_grid / grid
    expected = scipy.ndimage.zoom(table[0, prefix:].reshape(grid, grid, 48), (zoom, zoom, 1), order=1)
    ours = model.pos_embed.detach()
    assert ours.shape == (1, prefix + new_grid**2, 48)
    np.testing.assert_allclose(ours[0, prefix:].numpy(), expected.reshape(-1, 48), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(ours[0, :prefix].numpy(), table[0, :prefix])  # the CLS position as it was
    # timm's way samples other points: not a rounding difference.
    timm_way = vitlab_model(
        "ViT-B_16", hidden_size=48, num_layers=1, num_heads=3, mlp_dim=96, num_classes=4, img_size=img_size, **gap
    )
    assert load_pretrained(timm_way, path, verbose=False, pos_embed_resize="timm").pos_embed_resize == "timm"
    assert (timm_way.pos_embed - model.pos_embed).abs().max() > 1e-2


def test_unknown_resize_name_is_refused(tmp_path):
    path = write_google_npz(tmp_path / "t.npz", Arch(patch=8, width=32, depth=1, heads=2, mlp=64, img_size=32))
    with raises_naming(ValueError, "pos_embed_resize", "'nearest'", "google", "timm"):
        load_pretrained(vitlab_model("ViT-Test", num_layers=1), path, pos_embed_resize="nearest")


@pytest.mark.parametrize("img_size", [384, 32])
@pytest.mark.parametrize("cls", [True, False])
def test_position_embedding_resize_by_name_matches_timm(tmp_path, img_size, cls):
    arch = Arch(width=48, depth=1, heads=3, mlp=96, num_classes=4, cls=cls)  # 224 px, 14 x 14 grid
    path = write_google_npz(tmp_path / "p224.npz", arch)
    gap = {} if cls else dict(classifier="gap", class_token=False)
    model = vitlab_model(
        "ViT-B_16", hidden_size=48, num_layers=1, num_heads=3, mlp_dim=96, num_classes=4, img_size=img_size, **gap
    )
    report = load_pretrained(model, path, verbose=False, pos_embed_resize="timm")
    timm_kwargs = {} if cls else dict(global_pool="avg", class_token=False, fc_norm=False)
    reference = timm_model(arch, img_size=img_size, **timm_kwargs)
    _load_weights(reference, str(path))
    grid = img_size // 16
    assert model.pos_embed.shape == (1, grid * grid + int(cls), 48)
    assert list(report.resized) == ["pos_embed"]
    torch.testing.assert_close(model.pos_embed, reference.pos_embed, atol=1e-6, rtol=0)
    if cls:  # the CLS position is kept as it is
        original = torch.from_numpy(google_arrays(arch)["Transformer/posembed_input/pos_embedding"])
        assert torch.equal(model.pos_embed[:, 0], original[:, 0])
    x = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)


def test_token_file_into_model_without_class_token(tmp_path):
    arch = Arch(patch=8, width=32, depth=1, heads=2, mlp=64, img_size=32, num_classes=3)
    path = write_google_npz(tmp_path / "token.npz", arch)
    model = vitlab_model("ViT-Test", hidden_size=32, num_layers=1, num_classes=3, classifier="gap", class_token=False)
    report = load_pretrained(model, path, verbose=False)
    assert "cls_token" in report.skipped
    pos = torch.from_numpy(google_arrays(arch)["Transformer/posembed_input/pos_embedding"])
    assert torch.equal(model.pos_embed, pos[:, 1:])


def test_save_npz_round_trip_is_exact(tmp_path):
    model = randomize_(vitlab_model("ViT-Test", num_classes=7, representation_size=20))
    path = save_npz(model, tmp_path / "export.weights")  # numpy must not append ".npz"
    assert path == tmp_path / "export.weights" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["export.weights"]  # no temporary left behind
    copy = vitlab_model("ViT-Test", num_classes=7, representation_size=20)
    report = load_pretrained(copy, path, verbose=False)
    assert not report.resized and not report.replaced and not report.skipped
    for key, value in model.state_dict().items():
        assert torch.equal(copy.state_dict()[key], value), key


@pytest.mark.parametrize("cls", [True, False])
def test_save_npz_writes_googles_layout(tmp_path, cls):
    """File -> model -> save_npz gives back the same keys, shapes, dtypes and values."""
    arch = Arch(patch=8, width=32, depth=2, heads=4, mlp=64, img_size=32, num_classes=3, representation=16, cls=cls)
    source = google_arrays(arch)
    gap = {} if cls else dict(classifier="gap", class_token=False)
    model = vitlab_model("ViT-Test", hidden_size=32, num_heads=4, num_classes=3, representation_size=16, **gap)
    load_pretrained(model, write_google_npz(tmp_path / "in.npz", arch), verbose=False)
    with np.load(save_npz(model, tmp_path / "out.npz"), allow_pickle=False) as exported:
        assert set(exported.files) == set(source)
        for key, value in source.items():
            assert exported[key].dtype == np.float32 and exported[key].shape == value.shape, key
            np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_head_zeroed_for_new_classes_and_kept_for_same(tmp_path, capsys):
    arch = Arch(patch=8, width=32, depth=1, heads=2, mlp=64, img_size=32, num_classes=10)
    path = write_google_npz(tmp_path / "head.npz", arch)
    same = vitlab_model("ViT-Test", hidden_size=32, num_layers=1, num_classes=10)
    assert not load_pretrained(same, path, verbose=False).replaced
    kernel = torch.from_numpy(google_arrays(arch)["head/kernel"])
    assert torch.equal(same.head.weight, kernel.T)

    new = randomize_(vitlab_model("ViT-Test", hidden_size=32, num_layers=1, num_classes=4))
    report = load_pretrained(new, path)
    assert torch.count_nonzero(new.head.weight) == 0 and torch.count_nonzero(new.head.bias) == 0
    assert set(report.replaced) == {"head.weight", "head.bias"}
    printed = capsys.readouterr().out
    assert "replaced head.weight" in printed and "10 classes" in printed and "zero-initialised" in printed
    assert torch.equal(new.patch_embed.proj.bias, same.patch_embed.proj.bias)

    # zero_head=True: a zero head even for the same classes, as Google's fine-tuning loader does
    zeroed = randomize_(vitlab_model("ViT-Test", hidden_size=32, num_layers=1, num_classes=10))
    report = load_pretrained(zeroed, path, verbose=False, zero_head=True)
    assert torch.count_nonzero(zeroed.head.weight) == 0 and torch.count_nonzero(zeroed.head.bias) == 0
    assert "zero_head=True" in report.replaced["head.weight"]
    assert torch.equal(zeroed.patch_embed.proj.bias, same.patch_embed.proj.bias)


# --- bad inputs: a clear error, and the model exactly as it was ------------------------------------
SMALL = Arch(patch=8, width=32, depth=2, heads=2, mlp=64, img_size=32, num_classes=10)


def small_model(**overrides):
    return randomize_(vitlab_model("ViT-Test", **overrides))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _pickle_inside(path):
    arrays = google_arrays(SMALL)
    arrays["cls"] = np.array([{"hello": 1}], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


BLOCK1 = "Transformer/encoderblock_1/"
BAD_FILES = {
    "truncated": (_truncate, ["truncated", "bad.npz"]),
    "empty": (_empty, ["empty", "bad.npz"]),
    "pickle inside": (_pickle_inside, ["pickled", "bad.npz"]),
    "missing key": (
        {BLOCK1 + "MlpBlock_3/Dense_0/kernel": None},
        [BLOCK1 + "MlpBlock_3/Dense_0/kernel"],
    ),
    "wrong shape": (
        {"Transformer/encoder_norm/scale": np.ones(33, np.float32)},
        ["Transformer/encoder_norm/scale", "(33,)", "(32,)"],
    ),
    "wrong mlp width in the last block": (
        {BLOCK1 + "MlpBlock_3/Dense_1/bias": np.ones(31, np.float32)},
        [BLOCK1 + "MlpBlock_3/Dense_1/bias", "(31,)", "(32,)"],
    ),
    "wrong patch size": (
        {"embedding/kernel": np.ones((16, 16, 3, 32), np.float32)},
        ["embedding/kernel", "(32, 3, 16, 16)", "(32, 3, 8, 8)", "patch size"],
    ),
    "wrong width": (
        {"Transformer/posembed_input/pos_embedding": np.ones((1, 17, 48), np.float32)},
        ["Transformer/posembed_input/pos_embedding", "(1, 17, 48)", "(1, 17, 32)"],
    ),
    "wrong number of heads": (
        {
            f"Transformer/encoderblock_0/MultiHeadDotProductAttention_1/{n}/kernel": np.ones((32, 4, 8), np.float32)
            for n in ("query", "key", "value")
        },
        ["query/kernel", "4 heads", "num_heads=2"],
    ),
    "too many blocks": (
        {k.replace("encoderblock_1", "encoderblock_2"): v for k, v in google_arrays(SMALL).items() if "_1/" in k},
        ["3 encoder blocks", "the model 2"],
    ),
    "gap file into a class-token model": ({"cls": None}, ["no class token", "class_token=False"]),
    "not a checkpoint": (lambda p: p.write_bytes(b"hello, world" * 10), ["bad.npz", "not an .npz file"]),
    "a pickle file": (lambda p: p.write_bytes(pickle.dumps({"embedding/kernel": [1.0]})), ["a pickle file"]),
    "a single .npy array": (lambda p: np.save(open(p, "wb"), np.ones(3)), ["single array", "bad.npz"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_gives_clear_error_and_leaves_model_unchanged(tmp_path, case):
    change, expected = BAD_FILES[case]
    path = tmp_path / "bad.npz"
    if callable(change):
        write_google_npz(path, SMALL)
        change(path)
    else:
        write_google_npz(path, SMALL, changes=change)
    model = small_model()
    before = snapshot(model)
    with pytest.raises(CheckpointError) as error:
        load_pretrained(model, path, verbose=False)
    for text in expected:
        assert text in str(error.value), (text, str(error.value))
    assert_unchanged(model, before)


def test_missing_file_with_a_known_name_gives_the_url(tmp_path):
    model = small_model()
    before = snapshot(model)
    path = tmp_path / "imagenet21k_ViT-B_16.npz"
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained(model, path, download=False)
    message = str(error.value)
    assert "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz" in message
    assert str(path) in message and "python -m vitlab.download ViT-B_16" in message
    with pytest.raises(FileNotFoundError, match="vitlab.download --list"):
        load_pretrained(model, tmp_path / "mine.npz")
    assert_unchanged(model, before)


def test_missing_known_file_is_downloaded(tmp_path, monkeypatch):
    """load_pretrained calls the downloader for a known name; with no server it says what to fetch."""
    port = closed_port()
    monkeypatch.setenv("VITLAB_PRETRAINED_URL", f"http://127.0.0.1:{port}/")
    path = tmp_path / "augreg_ViT-Ti_16.npz"
    with pytest.raises(ConnectionError) as error:
        load_pretrained(small_model(), path)
    assert f"http://127.0.0.1:{port}/augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz" in str(
        error.value
    )
    assert str(path) in str(error.value)


def closed_port() -> int:
    """A local port with nothing listening: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_create_model_pretrained(tmp_path):
    path = write_google_npz(tmp_path / "w.npz", SMALL)
    model = create_model("ViT-Test", pretrained=path, num_classes=3)
    arrays = google_arrays(SMALL)
    assert torch.equal(model.cls_token, torch.from_numpy(arrays["cls"]))
    assert torch.count_nonzero(model.head.weight) == 0
