"""The trainer: schedule formulas, accumulation, exact resume, learning on CIFAR-format data, errors."""

import math
import time

import pytest
import torch
import torch.nn.functional as F
from messages import raises_naming
from torch.utils.data import Dataset, TensorDataset

from vitlab.configs import VITConfig, get_experiment
from vitlab.data import build_datasets
from vitlab.evaluate import evaluate
from vitlab.factory import create_model
from vitlab.train import summary_lines, train
from vitlab.training.batches import StepSampler
from vitlab.training.build import build_model, build_optimizer, build_scheduler
from vitlab.weights.checkpoint import load_checkpoint, model_from_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster than two, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cfg(tmp_path, **overrides) -> VITConfig:
    base = dict(
        model_type="ViT-Test", img_size=32, train_batch_size=16, eval_batch_size=64, num_steps=4, warmup_steps=1,
        eval_every=100, log_every=1, optimizer="sgd", learning_rate=0.05, precision="fp32", num_workers=0,
        save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), name="run", progress=False, TB_log=False,
    )  # fmt: skip
    base.update(overrides)
    return VITConfig(**base)


def _random_data(n=64, num_classes=10, seed=0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=generator) * 2 - 1
    return TensorDataset(images, torch.randint(0, num_classes, (n,), generator=generator))


def _reference_lr(step, base, warmup, total, decay):
    """The schedule of Google's ViT and of ViT-pytorch, written out."""
    if step < warmup:
        return base * step / warmup
    progress = (step - warmup) / (total - warmup)
    if decay == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    return base * (1 - progress)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_learning_rate_follows_warmup_decay_formula(tmp_path, decay):
    cfg = _cfg(tmp_path, decay_type=decay, num_steps=1000, warmup_steps=100, learning_rate=3e-2)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model, torch.device("cpu"))
    scheduler = build_scheduler(cfg, optimizer)
    for step in range(cfg.num_steps):
        expected = _reference_lr(step, 3e-2, 100, 1000, decay)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), step
        optimizer.step()
        scheduler.step()
    # The rates the trainer actually used, step by step.
    cfg = _cfg(tmp_path, decay_type=decay, num_steps=10, warmup_steps=3, learning_rate=0.1)
    result = train(cfg, train_set=_random_data())
    used = [entry["lr"] for entry in result["history"]]
    assert used == pytest.approx([_reference_lr(s, 0.1, 3, 10, decay) for s in range(10)], abs=1e-12)


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    data = _random_data()
    runs = {}
    for accumulation in (1, 2, 4):
        cfg = _cfg(tmp_path, name=f"acc{accumulation}", gradient_accumulation_steps=accumulation, max_grad_norm=0.5)
        runs[accumulation] = train(cfg, train_set=data)
    for accumulation in (2, 4):
        for a, b in zip(runs[1]["history"], runs[accumulation]["history"]):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        for (name, p), q in zip(runs[1]["model"].named_parameters(), runs[accumulation]["model"].parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_one_step_equals_a_hand_written_sgd_step(tmp_path):
    """Trainer (2 accumulation passes of 8) against plain PyTorch on the same 16 images."""
    data = _random_data()
    cfg = _cfg(tmp_path, num_steps=1, warmup_steps=0, gradient_accumulation_steps=2, max_grad_norm=0.5)
    result = train(cfg, train_set=data)
    torch.manual_seed(cfg.seed)
    reference = create_model("ViT-Test", num_classes=10, img_size=32)
    batch = StepSampler(len(data), 16, 1, 0, 1, cfg.seed).permutation(0)[:16]
    images, labels = data.tensors[0][batch], data.tensors[1][batch]
    F.cross_entropy(reference(images), labels).backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9).step()
    for (name, p), q in zip(reference.named_parameters(), result["model"].parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


class _Crashing(Dataset):
    """Stands in for a run that dies: raises after `limit` samples."""

    def __init__(self, dataset, limit):
        self.dataset, self.limit, self.count = dataset, limit, 0
        self.classes = dataset.classes

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.count += 1
        if self.count > self.limit:
            raise KeyboardInterrupt("simulated interruption")
        return self.dataset[index]


def test_interrupted_and_resumed_run_gives_the_same_losses(tmp_path, synthetic_cifar):
    # Random crops and flips, dropout and AdamW moments: everything a resume has to restore.
    cfg = _cfg(
        tmp_path, dataset="cifar10", data_dir=str(synthetic_cifar), augment="basic", optimizer="adamw",
        learning_rate=1e-3, num_steps=8, eval_every=3, model_overrides={"dropout_rate": 0.1}, val_split=0.05,
        TB_log=True,
    )  # fmt: skip
    train_set, val_set, test_set, _ = build_datasets(cfg)
    full = train(cfg.replace(name="full"), train_set, val_set, test_set)
    with pytest.raises(KeyboardInterrupt):
        train(cfg.replace(name="cut"), _Crashing(train_set, limit=5 * 16 + 3), val_set, test_set)  # dies in step 6
    assert load_checkpoint(tmp_path / "Model" / "cut" / "last.pt")["step"] == 3
    resumed = train(cfg.replace(name="cut", resume="last"), train_set, val_set, test_set)
    assert [h["step"] for h in resumed["history"]] == [4, 5, 6, 7, 8]
    expected = [h["loss"] for h in full["history"][3:]]
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(expected, rel=1e-6)
    for (name, p), q in zip(full["model"].named_parameters(), resumed["model"].parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)
    assert resumed["test_accuracy"] == full["test_accuracy"]


def test_tiny_vit_reaches_90_percent_on_synthetic_cifar(tmp_path, synthetic_cifar):
    """Through torchvision's CIFAR-10 reader; the wall time is printed (pytest -s) and bounded."""
    cfg = get_experiment(
        "smoke", dataset="cifar10", data_dir=str(synthetic_cifar), save_dir=str(tmp_path / "Model"),
        log_dir=str(tmp_path / "TB"), name="learn", num_steps=100, warmup_steps=10, learning_rate=5e-3,
        augment="none", val_split=0.1, eval_every=50, log_every=25, progress=False, weight_decay=0.01,
    )  # fmt: skip
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    print(f"\ntiny ViT: val {result['best_val_accuracy']:.3f}, test {result['test_accuracy']:.3f} in {seconds:.1f} s")
    assert result["best_val_accuracy"] >= 0.90
    assert result["test_accuracy"] >= 0.90
    assert seconds < 60  # about 4 s on one CPU thread


def test_checkpoints_rebuild_the_model_and_the_config(tmp_path):
    cfg = _cfg(tmp_path, num_steps=2, eval_every=1)
    data = _random_data()
    result = train(cfg, train_set=data, val_set=data, test_set=data)
    state = load_checkpoint(result["best_checkpoint"])
    assert {"model", "model_config", "config", "class_names", "step", "best_accuracy", "optimizer", "scheduler",
            "scaler", "rng"} <= set(state)  # fmt: skip
    assert VITConfig.from_dict(state["config"]) == cfg
    model, names = model_from_checkpoint(result["best_checkpoint"])
    assert names == [str(i) for i in range(10)]
    images = data.tensors[0][:8]
    torch.testing.assert_close(model(images), result["model"](images))
    assert VITConfig.from_json((tmp_path / "Model" / "run" / "config.json").read_text()) == cfg


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(1)
    model = create_model("ViT-Test", num_classes=10, img_size=32)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a zero head would make every prediction a tie
    data = _random_data(n=50, seed=3)
    metrics = evaluate(model, data, batch_size=16, precision="fp32")
    with torch.no_grad():
        logits = model(data.tensors[0])
    labels = data.tensors[1]
    top5 = logits.topk(5, dim=1).indices
    assert metrics["num_samples"] == 50
    assert metrics["top1"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert metrics["top5"] == pytest.approx((top5 == labels[:, None]).any(1).float().mean().item())
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_bad_inputs_give_clear_errors(tmp_path):
    data = _random_data()
    with raises_naming(ValueError, "'mnist'", "cifar10, cifar100, synthetic"):
        train(_cfg(tmp_path, dataset="mnist"))
    with raises_naming(ValueError, "'ViT-X_16'", "ViT-S_16", "ViT-B_16"):
        train(_cfg(tmp_path, model_type="ViT-X_16"), train_set=data)
    with raises_naming(ValueError, "train_batch_size 10", "gradient_accumulation_steps 4"):
        train(_cfg(tmp_path, train_batch_size=10, gradient_accumulation_steps=4), train_set=data)
    with raises_naming(FileNotFoundError, tmp_path / "missing.npz"):
        train(_cfg(tmp_path, pretrained_dir=str(tmp_path / "missing.npz")), train_set=data)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt cannot be read"):
        train(_cfg(tmp_path, resume=str(corrupt)), train_set=data)
    with raises_naming(FileNotFoundError, "never-ran", "last.pt"):
        train(_cfg(tmp_path, name="never-ran", resume="last"), train_set=data)
    with raises_naming(ValueError, "'lamb'", "sgd, nesterov, adamw"):
        train(_cfg(tmp_path, optimizer="lamb"), train_set=data)


def test_data_order_and_augmentation_do_not_depend_on_worker_processes(tmp_path, synthetic_cifar):
    cfg = _cfg(tmp_path, dataset="cifar10", data_dir=str(synthetic_cifar), augment="strong", num_steps=3, val_split=0)
    in_process = train(cfg.replace(name="workers0"))
    with_workers = train(cfg.replace(name="workers2", num_workers=2))
    assert [h["loss"] for h in with_workers["history"]] == [h["loss"] for h in in_process["history"]]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_and_saves_its_scaler(tmp_path, precision):
    data = _random_data()
    runs = {}
    for p in ("fp32", precision):
        cfg = _cfg(tmp_path / p, precision=p, num_steps=3, optimizer="adamw", learning_rate=1e-3)
        runs[p] = train(cfg, data)
    assert runs[precision]["precision"] == precision
    # Autocast changes the arithmetic, not the computation: the losses follow the fp32 run closely.
    reduced, full = ([h["loss"] for h in runs[p]["history"]] for p in (precision, "fp32"))
    assert reduced == pytest.approx(full, rel=2e-2)
    tmp_path = tmp_path / precision
    scaler = load_checkpoint(tmp_path / "Model" / "run" / "last.pt")["scaler"]
    assert ("scale" in scaler) == (precision == "fp16")  # a gradient scaler only for fp16


def test_a_finished_run_is_never_overwritten(tmp_path, synthetic_cifar):
    cfg = get_experiment(
        "smoke",
        name="kept",
        dataset="cifar10",
        data_dir=str(synthetic_cifar),
        save_dir=str(tmp_path / "m"),
        warmup_steps=1,
        log_dir=str(tmp_path / "tb"),
        num_steps=2,
        eval_every=2,
        progress=False,
    )
    train(cfg)
    before = (tmp_path / "m" / "kept" / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="pass --resume to continue it"):
        train(cfg)
    assert (tmp_path / "m" / "kept" / "last.pt").read_bytes() == before


def test_resumed_scheduler_follows_the_new_num_steps_and_never_rises_after_the_end(tmp_path):
    model = torch.nn.Linear(2, 2)
    short = _cfg(tmp_path, num_steps=10, warmup_steps=2, learning_rate=0.1)
    optimizer = build_optimizer(short, model, torch.device("cpu"))
    scheduler = build_scheduler(short, optimizer)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    saved = (optimizer.state_dict(), scheduler.state_dict())
    longer = _cfg(tmp_path, num_steps=20, warmup_steps=2, learning_rate=0.1)  # resume and train longer
    optimizer = build_optimizer(longer, model, torch.device("cpu"))
    scheduler = build_scheduler(longer, optimizer)
    optimizer.load_state_dict(saved[0])
    scheduler.load_state_dict(saved[1])
    for step in range(7, 25):
        optimizer.step()
        scheduler.step()
        expected = _reference_lr(min(step, 20), 0.1, 2, 20, "cosine")
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), step


def test_get_experiment_keeps_the_recipes_warm_up_fraction_for_another_length():
    assert get_experiment("finetune", num_steps=500).warmup_steps == 25  # 500 of 10,000 -> 25 of 500
    assert get_experiment("scratch", num_steps=2000).warmup_steps == 100  # 1,000 of 20,000 -> 100 of 2,000
    assert get_experiment("finetune", num_steps=500, warmup_steps=7).warmup_steps == 7  # asked for: kept
    assert get_experiment("finetune", num_steps=20000, resume="last").warmup_steps == 500  # a resumed run's own


def test_warmup_longer_than_the_run_is_warned_about(tmp_path):
    with pytest.warns(UserWarning, match="never decays; set warmup_steps below num_steps, e.g. 0") as caught:
        train(_cfg(tmp_path, num_steps=2, warmup_steps=5), train_set=_random_data(16))
    assert caught[0].filename == __file__  # the caller's line, where the fix goes, not vitlab's own


def test_adamw_decays_weights_but_not_embeddings_norms_or_biases(tmp_path):
    model = create_model("ViT-Test")
    optimizer = build_optimizer(_cfg(tmp_path, optimizer="adamw", weight_decay=0.05), model, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert "cls_token" not in decayed and "pos_embed" not in decayed
    assert not any(n.endswith("bias") or "norm" in n for n in decayed)
    assert {"patch_embed.proj.weight", "head.weight", "encoder.blocks.0.attn.to_qkv.weight"} <= decayed


def test_nesterov_is_sgd_with_nesterov_momentum_step_for_step(tmp_path):
    """One step against the formula PyTorch documents for Nesterov: v = mu v + g + wd w; w -= lr (g + wd w + mu v)."""
    model = torch.nn.Linear(3, 2)
    start = model.weight.detach().clone()
    optimizer = build_optimizer(_cfg(tmp_path, optimizer="nesterov", weight_decay=5e-4), model, torch.device("cpu"))
    assert all(group["nesterov"] and group["momentum"] == 0.9 for group in optimizer.param_groups)
    model(torch.ones(4, 3)).square().sum().backward()
    grad = model.weight.grad + 5e-4 * start
    optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    torch.testing.assert_close(model.weight.detach(), start - lr * (grad + 0.9 * grad))  # first step: v = g


def test_pretrained_npz_sets_googles_gelu_unless_the_overrides_choose(tmp_path):
    from npz_helpers import Arch, write_google_npz

    path = write_google_npz(tmp_path / "w.npz", Arch(patch=8, width=32, depth=2, heads=2, mlp=64, img_size=32))
    cfg = get_experiment("smoke", pretrained_dir=str(path))  # ViT-Test: the exact GELU until Google's weights load
    assert build_model(cfg, num_classes=10)[0].cfg.gelu_approximate == "tanh"
    chosen = cfg.replace(model_overrides={"gelu_approximate": "none"})
    assert build_model(chosen, num_classes=10)[0].cfg.gelu_approximate == "none"


def test_a_resumed_run_continues_the_checkpoints_model(tmp_path, synthetic_cifar, capsys):
    """Google's weights switch ViT-Test to the tanh GELU; the resumed run keeps it (not the preset's exact GELU)."""
    from npz_helpers import Arch, write_google_npz

    path = write_google_npz(tmp_path / "w.npz", Arch(patch=8, width=32, depth=2, heads=2, mlp=64, img_size=32))
    cfg = get_experiment(
        "smoke", pretrained_dir=str(path), dataset="cifar10", data_dir=str(synthetic_cifar), num_steps=2,
        eval_every=2, warmup_steps=1, progress=False, save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"),
        name="run",
    )  # fmt: skip
    assert train(cfg)["model"].cfg.gelu_approximate == "tanh"
    assert "parameters) from w.npz on " in capsys.readouterr().out
    resumed = train(cfg.replace(num_steps=4, resume="last"))
    assert resumed["steps"] == 4 and resumed["model"].cfg.gelu_approximate == "tanh"
    assert load_checkpoint(tmp_path / "Model" / "run" / "last.pt")["model_config"]["gelu_approximate"] == "tanh"
    out = capsys.readouterr().out
    assert "4 steps of 32 images, resuming after step 2, cpu" in out and "random weights" not in out
    assert summary_lines(cfg, resumed)[-1].startswith("steps 3-4 in ")  # the command line's last line
