"""The benchmark: it runs on CPU, its FLOP formula matches a counter, and the GPU paths work on CPU."""

import copy
import math

import pytest
import torch
from conftest import randomize_
from torch.utils.flop_counter import FlopCounterMode

from vitlab.bench import format_report, main, peak_tflops, run_benchmark, timm_twin, vit_flops
from vitlab.factory import create_model
from vitlab.weights.convert import vitlab_to_timm

TINY = dict(model="ViT-Test", img_size=32, batch_size=4, repeats=1, steps=1, warmup=1)


def check_figures(figures: dict) -> None:
    for name in ("vitlab", "vitlab_manual", "timm", "timm_manual"):
        assert 0 < figures[name] < math.inf, name
    # One round: each ratio is exactly the ratio of the two images/s figures.
    assert figures["vitlab_vs_timm"] == pytest.approx(figures["vitlab"] / figures["timm"], rel=1e-9)
    assert figures["fused_vs_manual_vitlab"] == pytest.approx(figures["vitlab"] / figures["vitlab_manual"], rel=1e-9)
    assert figures["fused_vs_manual_timm"] == pytest.approx(figures["timm"] / figures["timm_manual"], rel=1e-9)
    # One round is also the fastest round.
    assert figures["fastest"] == pytest.approx({k: figures[k] for k in figures["fastest"]}, rel=1e-9)
    assert figures["fastest_vitlab_vs_timm"] == pytest.approx(figures["vitlab_vs_timm"], rel=1e-9)


@pytest.fixture(scope="module")
def tiny_result() -> dict:
    return run_benchmark(**TINY, data=True, data_batches=2, workers=0)


def test_benchmark_runs_on_cpu(tiny_result):
    result = copy.deepcopy(tiny_result)
    for mode in ("train", "inference"):
        check_figures(result[mode])
        assert "mfu_vitlab" not in result[mode]  # utilisation and memory are GPU figures
    # The twin is the same architecture: same number of parameters.
    assert result["params"]["vitlab"] == result["params"]["timm"] == create_model("ViT-Test").get_num_params()
    assert result["flops_per_image"]["train"] == 3 * result["flops_per_image"]["forward"]
    assert result["data"]["pil_workers"] > 0 and result["data"]["device_augment"] > 0
    assert result["machine"]["torch"] == torch.__version__
    report = format_report(result)
    assert "vitlab/timm" in report and "DeviceAugment" in report


def test_benchmark_bf16_and_compile_flag(monkeypatch):
    # The GPU settings on CPU: bf16 autocast, and the compile flag (a light backend keeps this quick;
    # the slow test below uses the default inductor backend).
    compiled = []
    real_compile = torch.compile

    def light_compile(model, **kwargs):
        compiled.append(model)
        return real_compile(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", light_compile)
    result = run_benchmark(**TINY, precision="bf16", compile=True)
    assert len(compiled) == 8  # 2 models x fused/manual x train/inference
    for mode in ("train", "inference"):
        check_figures(result[mode])


def test_cli_prints_table(capsys):
    main(["--model", "ViT-Test", "--img_size", "32", "--batch_size", "2", "--repeats", "1", "--steps", "1"])
    out = capsys.readouterr().out
    assert "ViT-Test at 32, batch 2, fp32" in out and "inference" in out


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        run_benchmark(**TINY, precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            run_benchmark(**TINY, device="cuda")
    with pytest.raises(ValueError, match="pre-logits"):
        timm_twin(create_model("ViT-Test", representation_size=16).cfg)


def count_flops(model: torch.nn.Module, backward: bool = False) -> int:
    model.set_fused_attention(False)  # the counter sees the attention matmuls of the manual path
    x = torch.randn(1, 3, model.cfg.img_size, model.cfg.img_size)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        if backward:
            out.sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("ViT-Test", {}),
        ("ViT-CIFAR-3M", {}),
        ("ViT-S_16", dict(img_size=64)),
        ("ViT-Test", dict(classifier="gap", class_token=False, representation_size=24, num_classes=7)),
    ],
)
def test_flop_formula_equals_flop_counter(name, overrides):
    model = create_model(name, **overrides)
    assert vit_flops(model.cfg) == count_flops(model)
    # Backward: twice the forward, less the input gradient of the patch embedding (images need none).
    cfg = model.cfg
    patch_embed = 2 * cfg.num_patches * cfg.patch_size**2 * cfg.in_chans * cfg.hidden_size
    assert count_flops(model, backward=True) == 3 * vit_flops(cfg) - patch_embed


def test_vit_b16_flops_as_quoted():
    # 35.1 GFLOP per forward image at 224 (17.6 GMACs, the figure usually quoted for ViT-B/16), 105 per training image.
    cfg = create_model("ViT-B_16", num_classes=1000).cfg
    assert vit_flops(cfg) == pytest.approx(35.2e9, rel=0.005)
    # The whole model at full size, shapes only: the counter works on the meta device.
    with torch.device("meta"):
        model = create_model("ViT-B_16", num_classes=1000)
    model.set_fused_attention(False)
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() == vit_flops(cfg)


def test_peak_table():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert peak_tflops("Tesla T4") == 65.0
    assert peak_tflops("NVIDIA L40S") == 362.0
    assert peak_tflops("Some Future GPU") is None


def test_bf16_autocast_on_cpu_is_close_to_fp32_and_to_timm():
    model = randomize_(create_model("ViT-Test")).eval()
    reference = timm_twin(model.cfg)
    reference.load_state_dict(vitlab_to_timm(model.state_dict()), strict=True)
    reference.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, timm_bf16 = model(x), reference(x)
    assert bf16.dtype == torch.bfloat16 and fp32.abs().max() > 0.1
    # bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%); through two layers the logits
    # stay within 2% of their scale.
    scale = fp32.abs().max().item()
    torch.testing.assert_close(bf16.float(), fp32, atol=0.02 * scale, rtol=0)
    # Same operations in the same precision: vitlab and timm agree far more closely than with fp32.
    torch.testing.assert_close(bf16.float(), timm_bf16.float(), atol=0.005 * scale, rtol=0)


def test_bf16_training_step_on_cpu_lowers_the_loss():
    torch.manual_seed(0)
    model = create_model("ViT-Test")
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(10):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 weights
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_inductor_compiled_model_matches_eager_on_cpu():
    model = randomize_(create_model("ViT-Test")).eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)


def test_report_shows_gpu_figures(tiny_result):
    # The GPU lines of the table, from a result shaped like a CUDA run's (no GPU needed to format it).
    result = copy.deepcopy(tiny_result)
    for mode in ("train", "inference"):
        result[mode].update(
            peak_memory_gib_vitlab=1.5, peak_memory_gib_timm=1.6, tflops_vitlab=300.0, tflops_timm=290.0,
            mfu_vitlab=300 / 989, mfu_timm=None,
        )  # fmt: skip
    report = format_report(result)
    assert "MFU 30.3% / n/a" in report and "peak memory 1.50 / 1.60 GiB" in report


@pytest.mark.slow  # three short training runs and the input pipelines: ~15 s on a quiet 2-core machine
def test_trainer_benchmark_times_the_trainer_against_a_bare_loop():
    from vitlab.bench import format_trainer_report, recipe_pipelines, run_trainer_benchmark

    result = run_trainer_benchmark(
        model="ViT-Test", batch_size=8, pipelines=("device_strong",), repeats=2, steps=2, warmup=1, workers=0
    )
    rounds = result["rounds"]
    assert len(rounds["bare"]) == len(rounds["device_strong"]) == 2
    assert all(0 < s < math.inf for values in rounds.values() for s in values)
    ratios = [bare / trainer for bare, trainer in zip(rounds["bare"], rounds["device_strong"])]
    assert result["speed_vs_bare"]["device_strong"] == pytest.approx(sum(ratios) / 2, rel=1e-9)  # median of two
    result["pipelines"] = recipe_pipelines(batch_size=4, batches=1, workers=0, device="cpu")
    assert set(result["pipelines"]) == {"finetune", "scratch"}
    assert all(r["pil_workers"] > 0 and r["device"] > 0 for r in result["pipelines"].values())
    report = format_trainer_report(result)
    assert "device_strong" in report and "speed vs bare loop" in report and "scratch" in report
    with pytest.raises(ValueError, match="unknown pipeline"):
        run_trainer_benchmark(pipelines=("gpu",))


def test_trainer_timing_runs_print_nothing_of_their_own(tmp_path, capsys):
    """`bench --trainer` times many short runs; their run lines would bury its table."""
    from vitlab.bench import trainer_config, trainer_seconds_per_step

    cfg = trainer_config("ViT-Test", 32, 8, {}, steps=3, workdir=str(tmp_path), num_workers=0)
    seconds = trainer_seconds_per_step(cfg.replace(name="quiet"), create_model("ViT-Test", num_classes=10), warmup=1)
    assert 0 < seconds < math.inf
    assert capsys.readouterr().out == ""


def test_the_precision_benchmark_times_fp32_against_bf16_in_alternating_rounds(monkeypatch, capsys):
    import vitlab.bench_precision as bench_precision
    from vitlab.bench import main

    monkeypatch.setitem(bench_precision.SETUPS, "small", ("ViT-Test", 32, 8, "smoke"))
    monkeypatch.delitem(bench_precision.SETUPS, "transfer")
    result = main(["--precisions", "--repeats", "2", "--steps", "1", "--warmup", "1", "--workers", "0"])
    setup = result["setups"]["small"]
    assert setup["model"] == "ViT-Test" and setup["auto"] in ("bf16", "fp32")
    assert set(setup["rounds"]["loop"]) == {"fp32", "bf16"} and all(
        len(v) == 2 for v in setup["rounds"]["loop"].values()
    )
    assert set(setup["rounds"]["trainer"]) == set(setup["rounds"]["features"]) == {"fp32", "auto"}
    for row, ratios in setup["speed_vs_fp32"].items():
        assert all(ratio > 0 for ratio in ratios.values()), row
    assert result["machine"]["native_bf16"] in (True, False)
    report = capsys.readouterr().out
    assert "probe feature pass" in report and "training step, train() (smoke recipe)" in report
