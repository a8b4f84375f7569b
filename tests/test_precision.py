"""--precision auto: bfloat16 autocast where the device computes it natively, and what autocast leaves in float32."""

import pytest
import torch
import torch.nn.functional as F

import vitlab
import vitlab.precision
from vitlab.configs import VITConfig
from vitlab.precision import autocast_context, cpu_has_native_bf16, resolve_precision


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_uses_bf16_only_where_the_gpu_has_it(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", torch.device("cuda", 0))[0] == expected


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_a_cpu_follows_its_bfloat16_hardware(monkeypatch, native, expected):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert cpu_has_native_bf16() is native
    precision, why = resolve_precision("auto", torch.device("cpu"))
    assert precision == expected and "auto" in why
    for forced in ("fp32", "bf16"):  # --precision fp32 / bf16 are used as given, whatever the CPU has
        assert resolve_precision(forced, torch.device("cpu"))[0] == forced


def test_on_a_cpu_auto_keeps_small_models_in_float32(monkeypatch, tmp_path, capsys):
    """bfloat16 pays on a CPU for ViT-S (384 wide: 1.40x a step), not for the 192-wide ViT-CIFAR-3M (0.84x)."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, 384)[0] == "bf16" and resolve_precision("auto", cpu, None)[0] == "bf16"
    precision, why = resolve_precision("auto", cpu, 192)
    assert precision == "fp32" and "192" in why and "--precision bf16" in why
    assert resolve_precision("bf16", cpu, 192)[0] == "bf16"
    from vitlab.precision import model_width

    assert model_width(vitlab.create_model("ViT-S_16")) == 384 and model_width(torch.nn.Linear(2, 2)) is None
    from vitlab.train import train

    fields = dict(dataset="synthetic", model_type="ViT-Test", img_size=32, train_batch_size=8, eval_batch_size=16,
                  num_steps=1, warmup_steps=0, eval_every=1, num_workers=0, progress=False, data_dir=str(tmp_path),
                  save_dir=str(tmp_path / "M2"), log_dir=str(tmp_path / "T2"), name="small")  # fmt: skip
    assert train(VITConfig(**fields))["precision"] == "fp32"  # ViT-Test is 32 wide
    assert "autocast" not in capsys.readouterr().out


def test_a_cpu_without_onednn_counts_as_without_bfloat16(monkeypatch):
    def missing():
        raise RuntimeError("no mkldnn")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", missing)
    assert resolve_precision("auto", torch.device("cpu"))[0] == "fp32"


def test_an_unknown_precision_or_an_unresolved_auto_is_refused():
    with pytest.raises(ValueError, match="bf32"):
        resolve_precision("bf32", torch.device("cpu"))
    with pytest.raises(ValueError, match="resolve_precision"):
        autocast_context(torch.device("cpu"), "auto")


@pytest.mark.parametrize("fused", [True, False])
def test_under_bf16_autocast_what_must_stay_float32_stays_float32(fused):
    """Matrix products run in bfloat16; LayerNorm (fed the fp32 residual stream), softmax, the loss, the weights,
    their gradients and AdamW's moments stay float32."""
    model = vitlab.create_model("ViT-Test", num_classes=10)
    model.set_fused_attention(fused)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, set()).add((inputs[0].dtype, output.dtype))

        return hook

    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.register_forward_hook(record("layernorm"))
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(record("linear"))
    softmax_dtypes = []
    real_softmax = torch.Tensor.softmax

    def softmax(tensor, *args, **kwargs):
        softmax_dtypes.append(tensor.dtype)
        return real_softmax(tensor, *args, **kwargs)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, "softmax", softmax)
        with autocast_context(torch.device("cpu"), "bf16"):
            logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
    loss.backward()
    optimizer.step()
    assert seen["layernorm"] == {(torch.float32, torch.float32)}
    assert {out for _, out in seen["linear"]} == {torch.bfloat16}  # autocast is on
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert softmax_dtypes == ([] if fused else [torch.float32] * model.cfg.num_layers)
    for param in model.parameters():
        assert param.dtype == torch.float32 and param.grad.dtype == torch.float32
        state = optimizer.state[param]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32


def _run(tmp_path, native, monkeypatch, **overrides):
    from vitlab.train import train

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setattr(vitlab.precision, "CPU_BF16_MIN_WIDTH", 1)  # ViT-Test counts as wide enough
    fields = dict(
        dataset="synthetic", model_type="ViT-Test", img_size=32, train_batch_size=8, eval_batch_size=16,
        num_steps=2, warmup_steps=1, eval_every=2, num_workers=0, progress=False,
        save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), name=f"native_{native}", data_dir=str(tmp_path),
    )  # fmt: skip
    fields.update(overrides)
    return train(VITConfig(**fields))


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_a_run_says_which_precision_auto_picked(tmp_path, monkeypatch, capsys, native, expected):
    result = _run(tmp_path, native, monkeypatch)
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("run native_") and first.endswith(f"cpu, {expected}")
    assert ("bf16 autocast: auto: this CPU computes bfloat16 natively" in out) is native
    assert result["precision"] == expected
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "TB").iterdir()))).Reload()
    plugin = events.PluginTagToContent("hparams")
    session = next(content for tag, content in plugin.items() if tag.endswith("session_start_info"))
    assert b"precision" in session and expected.encode() in session


def test_precision_fp32_keeps_a_cpu_with_bfloat16_in_float32(tmp_path, monkeypatch, capsys):
    result = _run(tmp_path, True, monkeypatch, precision="fp32")
    assert result["precision"] == "fp32" and "autocast" not in capsys.readouterr().out


@pytest.mark.parametrize("native", [True, False])
def test_evaluate_and_predict_follow_the_same_choice(monkeypatch, native):
    from conftest import randomize_
    from torch.utils.data import TensorDataset

    from vitlab.evaluate import evaluate
    from vitlab.predict import predict

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setattr(vitlab.precision, "CPU_BF16_MIN_WIDTH", 1)
    model = randomize_(vitlab.create_model("ViT-Test", num_classes=10), std=0.2)
    data = TensorDataset(torch.rand(32, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (32,)))
    exact, auto, bf16 = (evaluate(model, data, precision=p) for p in ("fp32", "auto", "bf16"))
    assert auto == (bf16 if native else exact)
    assert auto["loss"] == pytest.approx(exact["loss"], rel=2e-2)  # bfloat16 keeps about 3 significant digits
    image = torch.rand(3, 32, 32)
    top = predict(model, image, top_k=10, precision="auto")
    assert top == predict(model, image, top_k=10, precision="bf16" if native else "fp32")
