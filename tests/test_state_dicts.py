"""PyTorch state dicts in timm's (MAE's) and torchvision's layouts: equal logits, resizing, clear errors."""

import argparse
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import conftest
import pytest
import timm
import torch
import torchvision
from conftest import randomize_
from messages import raises_naming
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import vitlab
from vitlab.download import main
from vitlab.weights.errors import CheckpointError
from vitlab.weights.fetch import CHECKPOINTS, download, known_checkpoint, local_name, url_for
from vitlab.weights.load import load_pretrained
from vitlab.weights.state_dicts import detect_layout, read_torch_state_dict, to_vitlab_state_dict

# A shrunken ViT-B/16 (patch 16, MAE's pooling) so the checks take milliseconds.
SMALL = dict(img_size=32, hidden_size=64, num_layers=2, num_heads=4, mlp_dim=128, num_classes=7)


def timm_mae(img_size=32, **kwargs) -> torch.nn.Module:
    """timm's ViT-B/16 with MAE's fine-tuning head: global average pooling and fc_norm, random weights."""
    shape = dict(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=7) if not kwargs else kwargs
    model = timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=img_size, global_pool="avg", fc_norm=True, **shape
    )
    return randomize_(model).eval()


def save(state_dict: dict, path, wrap: str | None = None):
    """Write a state dict the way its library's users do: torch.save (optionally wrapped) or safetensors."""
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save({wrap: state_dict} if wrap else state_dict, path)
    return path


assert_same_logits = functools.partial(conftest.assert_same_logits, min_logit=0.01)


@pytest.mark.parametrize("filename, wrap", [("mae.pth", "model"), ("mae.safetensors", None), ("mae.bin", None)])
def test_timm_state_dict_gives_timm_logits(tmp_path, filename, wrap):
    reference = timm_mae()
    path = save(reference.state_dict(), tmp_path / filename, wrap)
    model = vitlab.create_model("vit_base_p16", **SMALL)
    report = load_pretrained(model, path, verbose=False)
    assert not report.resized and not report.replaced and not report.skipped
    assert_same_logits(model, reference, 32)


def test_full_size_keys_and_shapes_match_vit_base_p16():
    """Every tensor of timm's ViT-B/16 with MAE's head (the layout of `mae_finetuned_vit_base.pth`) has a place."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        reference = timm.create_model("vit_base_patch16_224", pretrained=False, global_pool="avg", fc_norm=True)
        model = vitlab.create_model("vit_base_p16")
    state = reference.state_dict()
    assert "fc_norm.weight" in state and "norm.weight" not in state
    renamed, _ = to_vitlab_state_dict(state, model)
    assert {k: v.shape for k, v in renamed.items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_full_size_mae_layout_into_vit_base_p16(tmp_path):
    """The exact ViT-B/16 shapes of MAE's `mae_finetuned_vit_base.pth`: {"model": timm keys, fc_norm, no norm}."""
    reference = timm.create_model("vit_base_patch16_224", pretrained=False, global_pool="avg", fc_norm=True)
    randomize_(reference, std=0.02).eval()
    state = reference.state_dict()
    assert "fc_norm.weight" in state and "norm.weight" not in state  # the layout of MAE's release
    path = save(state, tmp_path / "mae_finetuned_vit_base.pth", wrap="model")
    model = vitlab.create_model("vit_base_p16")
    load_pretrained(model, path, verbose=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x), atol=1e-5, rtol=0)


def test_position_embeddings_resized_like_timm(tmp_path):
    source = timm_mae(img_size=32)
    path = save(source.state_dict(), tmp_path / "mae.pth", wrap="model")
    model = vitlab.create_model("vit_base_p16", **{**SMALL, "img_size": 64})
    report = load_pretrained(model, path, verbose=False)
    assert report.resized["pos_embed"].startswith("(1, 5, 64) -> (1, 17, 64)")
    # timm's own resampling (bilinear, no antialias) into timm's model at the new size.
    reference = timm_mae(img_size=64)
    state = source.state_dict()
    state["pos_embed"] = resample_abs_pos_embed(
        state["pos_embed"], [4, 4], num_prefix_tokens=1, interpolation="bilinear", antialias=False
    )
    reference.load_state_dict(state)
    assert_same_logits(model, reference, 64)


def torchvision_vit(representation_size=None) -> torch.nn.Module:
    model = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
        num_classes=7,
        representation_size=representation_size,
    )
    return randomize_(model).eval()


@pytest.mark.parametrize("representation_size", [None, 16])
def test_torchvision_state_dict_gives_torchvision_logits(tmp_path, representation_size):
    reference = torchvision_vit(representation_size)
    path = save(reference.state_dict(), tmp_path / "vit_b_16.pth")
    model = vitlab.create_model("vit_b_16", **{**SMALL, "patch_size": 8}, representation_size=representation_size)
    report = load_pretrained(model, path, verbose=False)
    assert not report.replaced and not report.skipped
    assert_same_logits(model, reference, 32)


def test_vitlab_and_wrapped_layouts(tmp_path):
    source = randomize_(vitlab.create_model("ViT-Test")).eval()
    trainer_style = {"model": source.state_dict(), "step": 3, "class_names": ["a", "b"]}
    torch.save(trainer_style, tmp_path / "run.pt")
    ddp = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(ddp, tmp_path / "ddp.pt")
    for name in ("run.pt", "ddp.pt"):
        model = vitlab.create_model("ViT-Test")
        load_pretrained(model, tmp_path / name, verbose=False)
        assert_same_logits(model, source, 32, atol=0)


def test_detect_layout():
    assert detect_layout(timm_mae().state_dict()) == "timm"
    assert detect_layout(torchvision_vit().state_dict()) == "torchvision"
    assert detect_layout(vitlab.create_model("ViT-Test").state_dict()) == "vitlab"
    with pytest.raises(CheckpointError, match="cannot tell whose Vision Transformer"):
        detect_layout({"fc.weight": torch.zeros(2, 2)})


# --- bad inputs: the file and the key are named, and the model is left untouched --------------------
def assert_untouched(model, before):
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.fixture
def small_model():
    model = vitlab.create_model("vit_base_p16", **SMALL)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_missing_key_is_named(tmp_path, small_model):
    model, before = small_model
    state = timm_mae().state_dict()
    del state["blocks.1.mlp.fc2.weight"]
    with pytest.raises(CheckpointError, match=r"has no 'blocks\.1\.mlp\.fc2\.weight'"):
        load_pretrained(model, save(state, tmp_path / "m.pth"), verbose=False)
    assert_untouched(model, before)


def test_wrong_shape_names_key_and_both_shapes(tmp_path, small_model):
    model, before = small_model
    state = timm_mae().state_dict()
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(96, 64)
    message = r"blocks\.0\.mlp\.fc1\.weight in .*m\.safetensors: checkpoint shape \(96, 64\).*model's \(128, 64\)"
    with pytest.raises(CheckpointError, match=message):
        load_pretrained(model, save(state, tmp_path / "m.safetensors"), verbose=False)
    assert_untouched(model, before)


@pytest.mark.parametrize("filename", ["cut.pth", "cut.safetensors"])
def test_truncated_file_is_named(tmp_path, filename, small_model):
    model, before = small_model
    path = save(timm_mae().state_dict(), tmp_path / filename)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{filename} .*\([\d,]+ bytes.*truncated"):
        load_pretrained(model, path, verbose=False)
    assert_untouched(model, before)


def test_garbage_and_empty_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth .*cannot be read"):
        read_torch_state_dict(tmp_path / "junk.pth")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.safetensors is empty"):
        read_torch_state_dict(tmp_path / "empty.safetensors")
    with pytest.raises(FileNotFoundError, match="nowhere.pth does not exist"):
        read_torch_state_dict(tmp_path / "nowhere.pth")


def test_pickled_objects_are_refused(tmp_path, small_model):
    model, before = small_model
    # MAE's *pre-training* checkpoints also stored the argparse namespace of the run next to the weights.
    torch.save({"model": timm_mae().state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "args.pth")
    with raises_naming(CheckpointError, "args.pth", "argparse.Namespace"):
        load_pretrained(model, tmp_path / "args.pth", verbose=False)
    assert_untouched(model, before)


def test_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "weights": [torch.zeros(1)]}, tmp_path / "odd.pth")
    with raises_naming(CheckpointError, "odd.pth", "['epoch', 'weights']"):
        read_torch_state_dict(tmp_path / "odd.pth")


def test_mae_weights_into_a_token_model_say_which_preset(tmp_path):
    path = save(timm_mae().state_dict(), tmp_path / "mae.pth", wrap="model")
    model = vitlab.create_model("ViT-B_16", **SMALL)
    with pytest.raises(CheckpointError, match="fc_norm=True, classifier='gap' .*vit_base_p16"):
        load_pretrained(model, path, verbose=False)


# --- downloads: MAE's file (a .pth on another host) and the hybrid's Google names -------------------
def test_download_names():
    url = url_for("mae_finetuned_vit_base", "mae")
    assert url == "https://dl.fbaipublicfiles.com/mae/finetune/mae_finetuned_vit_base.pth"
    assert local_name("mae_finetuned_vit_base", "mae") == "mae_finetuned_vit_base.pth"
    assert known_checkpoint("mae_finetuned_vit_base.pth") == ("mae_finetuned_vit_base", "mae")
    for variant in ("imagenet21k", "imagenet21k+imagenet2012"):
        assert url_for("R50+ViT-B_16", variant).endswith(f"/vit_models/{variant}/R50+ViT-B_16.npz")
        assert known_checkpoint(f"{variant}_R50+ViT-B_16.npz") == ("R50+ViT-B_16", variant)


@pytest.fixture
def file_server(tmp_path):
    """Serve tmp_path/"remote" on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path / "remote"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_missing_mae_file_is_downloaded_then_loaded(tmp_path, file_server, monkeypatch):
    folder, base = file_server
    reference = timm_mae()
    torch.save({"model": reference.state_dict()}, folder / "mae_finetuned_vit_base.pth")
    monkeypatch.setitem(CHECKPOINTS["mae"], "mae_finetuned_vit_base", base + "mae_finetuned_vit_base.pth")
    path = tmp_path / "Pretrained" / "mae_finetuned_vit_base.pth"
    model = vitlab.create_model("vit_base_p16", **SMALL)
    load_pretrained(model, path, verbose=False)
    assert path.is_file() and not path.with_name(path.name + ".part").exists()
    assert_same_logits(model, reference, 32)
    # The command line finds the variant from the name alone; the file is already there.
    assert main(["mae_finetuned_vit_base", "--dest", str(path.parent)]) == 0


def test_downloaded_pickle_with_objects_is_deleted(tmp_path, file_server, monkeypatch):
    folder, base = file_server
    torch.save({"model": {}, "args": argparse.Namespace(lr=1.0)}, folder / "bad.pth")
    monkeypatch.setitem(CHECKPOINTS["mae"], "mae_finetuned_vit_base", base + "bad.pth")
    with raises_naming(ValueError, "argparse.Namespace", "deleted"):
        download("mae_finetuned_vit_base", "mae", tmp_path, progress=False)
    assert list(tmp_path.glob("mae_finetuned_vit_base*")) == []


def test_missing_file_without_download_says_where_to_get_it(tmp_path):
    model = vitlab.create_model("vit_base_p16", **SMALL)
    message = r"mae_finetuned_vit_base --variant mae .*dl\.fbaipublicfiles\.com/mae/finetune/mae_finetuned_vit_base"
    with pytest.raises(FileNotFoundError, match=message):
        load_pretrained(model, tmp_path / "mae_finetuned_vit_base.pth", download=False)
