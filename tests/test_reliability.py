"""Runs you can trust: Ctrl-C, kills, NaN, resume, best and last agreeing, the run folder's lock, TensorBoard.

Small runs of ViT-Test on synthetic CIFAR (about a second each); the tests that kill real processes at
random points are marked slow, one kill exactly between the two checkpoint writes runs by default.
"""

import importlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from messages import raises_naming
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vitlab.configs import VITConfig, get_experiment
from vitlab.factory import create_model
from vitlab.train import train
from vitlab.training.stops import NonFiniteLossError, TrainingInterrupted
from vitlab.weights.checkpoint import load_checkpoint

train_module = importlib.import_module("vitlab.train")  # the module (vitlab.train is also the function)
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _cfg(tmp_path, data, **changes) -> VITConfig:
    fields = dict(dataset="cifar10", data_dir=str(data), num_steps=8, eval_every=4, log_every=2, progress=False,
                  save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), name="run", seed=3,
                  learning_rate=2e-3, warmup_steps=2, model_overrides={"num_layers": 1})  # fmt: skip
    return get_experiment("smoke", **{**fields, **changes})


def _weights(path) -> dict:
    return load_checkpoint(path)["model"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _scalars(log_dir, tag) -> list[int]:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, synthetic_cifar):
    """The uninterrupted run every interrupted one is compared with."""
    tmp_path = tmp_path_factory.mktemp("reference")
    train(_cfg(tmp_path, synthetic_cifar))
    return tmp_path / "Model" / "run"


def _interrupt_at(monkeypatch, step, signum=signal.SIGINT):
    """Send `signum` to this process during optimiser step `step` (as Ctrl-C or `kill` would)."""
    real, calls = train_module.train_step, []

    def step_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            signal.raise_signal(signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step_then_signal)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_last_pt_at_the_step_and_the_resumed_run_is_the_uninterrupted_one(
    tmp_path, synthetic_cifar, reference, monkeypatch, signum
):
    cfg = _cfg(tmp_path, synthetic_cifar)
    _interrupt_at(monkeypatch, 5, signum)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg)
    run_dir = tmp_path / "Model" / "run"
    assert str(stopped.value) == (
        f"{signal.Signals(signum).name} at step 5 of 8: saved {run_dir / 'last.pt'} (step 5); continue with: "
        f"python -m vitlab.train --name run --output_dir {tmp_path / 'Model'} --log_dir {tmp_path / 'TB'} --resume"
    )
    assert isinstance(stopped.value, KeyboardInterrupt)  # a notebook's "interrupt" ends train() as it expects
    assert load_checkpoint(run_dir / "last.pt")["step"] == 5 and load_checkpoint(run_dir / "best.pt")["step"] == 4
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "config.json", "last.pt"]  # lock released
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back
    config = (run_dir / "config.json").read_text()
    monkeypatch.undo()

    # Resume with nothing but the name: the run's own settings (seed, learning rate, model) continue.
    resumed = VITConfig(name="run", save_dir=cfg.save_dir, log_dir=cfg.log_dir, resume="last")
    result = train(resumed)
    assert result["steps"] == 8
    assert _same_weights(_weights(run_dir / "last.pt"), _weights(reference / "last.pt"))
    assert _same_weights(_weights(run_dir / "best.pt"), _weights(reference / "best.pt"))
    assert (run_dir / "config.json").read_text() == config  # the original config, not the defaults
    # TensorBoard: every step once across the two segments, nothing purged that was not logged again.
    assert _scalars(tmp_path / "TB" / "run", "train/lr") == [2, 4, 6, 8]
    assert _scalars(tmp_path / "TB" / "run", "val/accuracy") == [4, 8]


def test_resume_refuses_other_settings_and_reports_the_safe_changes(tmp_path, synthetic_cifar, capsys):
    cfg = _cfg(tmp_path, synthetic_cifar, num_steps=4)
    train(cfg)
    run_dir = tmp_path / "Model" / "run"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(ValueError) as refused:
        train(cfg.replace(resume="last", learning_rate=0.5, seed=7))
    assert "learning_rate, seed cannot change (learning_rate: the run has 0.002, given 0.5; seed: the run has 3" in (
        str(refused.value)
    )
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written or lost
    with raises_naming(ValueError, "run run", "4 of 4 steps", "--num_steps"):
        train(cfg.replace(resume="last"))
    capsys.readouterr()
    result = train(cfg.replace(resume="last", num_steps=6, eval_every=2))
    assert result["steps"] == 6
    assert "resuming with changed settings: eval_every 4 -> 2, num_steps 4 -> 6" in capsys.readouterr().out
    assert json.loads((run_dir / "config.json").read_text())["num_steps"] == 6
    assert json.loads((run_dir / "config.before_step_4.json").read_text())["num_steps"] == 4  # never lost


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_cifar):
    """NaN images from step 6 on; with TensorBoard on (its histogram of NaN weights used to crash)."""
    model = create_model("ViT-Test", num_classes=10, num_layers=1)
    calls = []

    def poison(module, args):
        if module.training:
            calls.append(1)
            if len(calls) >= 6:
                return (args[0] * float("nan"),)

    model.register_forward_pre_hook(poison)
    cfg = _cfg(tmp_path, synthetic_cifar, log_every=3)
    with pytest.raises(NonFiniteLossError) as stopped:
        train(cfg, model=model)
    run_dir = tmp_path / "Model" / "run"
    assert str(stopped.value).startswith(
        f"the training loss became nan (steps 5-6): the run stopped, and the checkpoints of step 4 in {run_dir} "
        "were kept. Usual causes: a learning rate too high for this model and batch (learning_rate 0.002"
    )
    assert "fp16 overflow" in str(stopped.value)
    assert load_checkpoint(run_dir / "last.pt")["step"] == 4
    assert all(t.isfinite().all() for t in _weights(run_dir / "last.pt").values())
    assert not (run_dir / "run.lock").exists()


def test_ctrl_c_after_a_nan_before_the_next_log_keeps_the_good_checkpoint(tmp_path, synthetic_cifar, monkeypatch):
    """NaN images at step 5, Ctrl-C during step 6: no logging step saw the loss, the weights are checked."""
    model = create_model("ViT-Test", num_classes=10, num_layers=1)
    calls = []

    def poison(module, args):
        if module.training:
            calls.append(1)
            if len(calls) == 5:
                return (args[0] * float("nan"),)

    model.register_forward_pre_hook(poison)
    _interrupt_at(monkeypatch, 6)
    with raises_naming(NonFiniteLossError, "inf or nan", "steps 5-6"):
        train(_cfg(tmp_path, synthetic_cifar, log_every=100), model=model)
    run_dir = tmp_path / "Model" / "run"
    assert load_checkpoint(run_dir / "last.pt")["step"] == 4  # not overwritten by the NaN weights of step 6
    assert all(t.isfinite().all() for t in _weights(run_dir / "last.pt").values())


def test_a_run_folder_in_use_is_refused_before_anything_is_written(tmp_path, synthetic_cifar):
    run_dir = tmp_path / "Model" / "run"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": "now"}
        (run_dir / "run.lock").write_text(json.dumps(lock))
        with pytest.raises(FileExistsError, match=rf"run folder {run_dir} is in use by process {holder.pid}"):
            train(_cfg(tmp_path, synthetic_cifar))
        assert [p.name for p in run_dir.iterdir()] == ["run.lock"] and not (tmp_path / "TB").exists()
    finally:
        holder.kill()
        holder.wait()
    (run_dir / ".last.pt.x8k2.tmp").write_bytes(b"\0" * 4096)  # a write cut short by a crash
    train(_cfg(tmp_path, synthetic_cifar, num_steps=4))  # the dead holder's lock is taken over
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "config.json", "last.pt"]


def test_a_best_pt_other_than_last_pt_records_is_repaired_on_resume(tmp_path, synthetic_cifar, capsys):
    """As runs that wrote last.pt first left them: last.pt names a best step that best.pt does not hold."""
    cfg = _cfg(tmp_path, synthetic_cifar, num_steps=4, eval_every=2)
    train(cfg)
    run_dir = tmp_path / "Model" / "run"
    last = load_checkpoint(run_dir / "last.pt")
    best = load_checkpoint(run_dir / "best.pt")
    torch.save({**best, "step": 2, "best_accuracy": 0.01, "best_step": 2}, run_dir / "best.pt")
    torch.save({**last, "best_step": 4, "best_accuracy": 0.99}, run_dir / "last.pt")
    result = train(cfg.replace(resume="last", num_steps=6, eval_every=100))
    assert "last.pt recorded the best at step 4, but best.pt holds step 2" in capsys.readouterr().out
    saved_best = load_checkpoint(run_dir / "best.pt")
    assert result["best_step"] == saved_best["step"] and result["best_val_accuracy"] == saved_best["best_accuracy"]


def test_a_truncated_best_pt_is_set_aside_and_the_run_resumes_from_last_pt(
    tmp_path, synthetic_cifar, reference, monkeypatch, capsys
):
    """A full disk or a cut copy leaves best.pt short; last.pt is whole and the run goes on from it."""
    cfg = _cfg(tmp_path, synthetic_cifar)
    _interrupt_at(monkeypatch, 5)
    with pytest.raises(TrainingInterrupted):
        train(cfg)
    monkeypatch.undo()
    run_dir = tmp_path / "Model" / "run"
    damaged = (run_dir / "best.pt").read_bytes()[:5000]
    (run_dir / "best.pt").write_bytes(damaged)
    capsys.readouterr()
    result = train(VITConfig(name="run", save_dir=cfg.save_dir, log_dir=cfg.log_dir, resume="last"))
    assert (
        "best.pt cannot be read (5,000 bytes, truncated or damaged): it is set aside as best.pt.damaged, the run "
        "continues from last.pt (step 5), which is intact, and the best is chosen anew\n"
    ) in capsys.readouterr().out
    assert (run_dir / "best.pt.damaged").read_bytes() == damaged  # kept, out of the way
    assert _same_weights(_weights(run_dir / "last.pt"), _weights(reference / "last.pt"))  # as if never stopped
    assert result["best_step"] == 8 and load_checkpoint(run_dir / "best.pt")["step"] == 8
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "best.pt.damaged", "config.json", "last.pt"]


def _classes(root, names):
    from PIL import Image

    for index, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (32, 32), (40 * index, 10 * i, 90)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("other", [("ant", "bee"), ("cat", "dog", "emu")])
def test_resume_on_data_of_other_classes_is_refused_naming_both_lists(tmp_path, other):
    """The same number of classes used to train on under the old names; more used to end in an IndexError."""
    data = _classes(tmp_path / "pets", ("cat", "dog"))
    cfg = _cfg(tmp_path, data, dataset="folder", num_steps=4, eval_every=2, val_split=0.0, num_workers=0)
    train(cfg)
    run_dir = tmp_path / "Model" / "run"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    other_dir = _classes(tmp_path / "other", other)
    resumed = VITConfig(name="run", save_dir=cfg.save_dir, log_dir=cfg.log_dir, resume="last", num_steps=6,
                        data_dir=str(other_dir))  # fmt: skip
    with pytest.raises(ValueError) as refused:
        train(resumed)
    assert str(refused.value) == (
        f"cannot resume run run on these data: its checkpoint learned 2 classes [cat, dog], but the data have "
        f"{len(other)} classes [{', '.join(other)}]. Resume with the run's own data (its data_dir was {data}), or "
        "start a new run with another --name"
    )
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written, nothing lost
    assert train(resumed.replace(data_dir=str(data)))["steps"] == 6  # its own data: it goes on


def _train_process(args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "vitlab.train", *args], cwd=cwd, env=ENV, **kwargs)


def _cli_args(synthetic_cifar, steps=8):
    """No validation split: every evaluation then writes best.pt (the latest weights count as the best)."""
    return ["--config", "smoke", "--dataset", "cifar10", "--data_dir", str(synthetic_cifar), "--name", "run",
            "--num_steps", str(steps), "--eval_every", "4", "--log_every", "2", "--seed", "3", "--val_split", "0",
            "--learning_rate", "2e-3", "--warmup_steps", "2", "--model_overrides", '{"num_layers": 1}',
            "--progress", "false", "--output_dir", "Model", "--log_dir", "TB"]  # fmt: skip


def _uninterrupted(tmp_path, args) -> Path:
    """The same command run to the end without interruption (a process too: the same threads, the same sums)."""
    work = tmp_path / "uninterrupted"
    work.mkdir()
    assert _train_process(args, work, stdout=subprocess.DEVNULL).wait() == 0
    return work / "Model" / "run"


@pytest.fixture(scope="module")
def uninterrupted_12(tmp_path_factory, synthetic_cifar) -> Path:
    """The run folder of `_cli_args(steps=12)` run to the end, for the tests that kill that command."""
    return _uninterrupted(tmp_path_factory.mktemp("twelve"), _cli_args(synthetic_cifar, steps=12))


def test_kill_between_the_two_checkpoint_writes_then_resume(tmp_path, synthetic_cifar, uninterrupted_12):
    """kill -9 right after best.pt of step 8 is written and before last.pt is: the resumed run continues from it."""
    script = (
        "import importlib, os, signal, sys\n"
        "t = importlib.import_module('vitlab.train')\n"
        "real = t.save_checkpoint\n"
        "def save(path, state):\n"
        "    real(path, state)\n"
        "    if path.name == 'best.pt' and state['step'] == 8: os.kill(os.getpid(), signal.SIGKILL)\n"
        "t.save_checkpoint = save\n"
        "t.main(sys.argv[1:])\n"
    )
    args = _cli_args(synthetic_cifar, steps=12)
    killed = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, env=ENV, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "Model" / "run"
    assert load_checkpoint(run_dir / "best.pt")["step"] == 8 and load_checkpoint(run_dir / "last.pt")["step"] == 4
    assert (run_dir / "run.lock").exists()  # left by the killed process
    resume = ["--name", "run", "--output_dir", "Model", "--log_dir", "TB", "--resume"]
    done = subprocess.run([sys.executable, "-m", "vitlab.train", *resume], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "best.pt (step 8) is newer than last.pt (step 4)" in done.stdout
    assert "removed the stale lock of process" in done.stdout
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 12 and last["best_step"] == load_checkpoint(run_dir / "best.pt")["step"]
    assert _same_weights(last["model"], _weights(uninterrupted_12 / "last.pt"))


def test_kill_during_the_write_of_last_pt_then_resume_continues_bit_exactly(
    tmp_path, synthetic_cifar, uninterrupted_12
):
    """kill -9 with half of step 8's last.pt in its temporary file: the resume removes that file, saying so in one
    line, continues from what was saved whole, and ends with the weights of the uninterrupted run."""
    script = (
        "import contextlib, importlib, os, signal, sys\n"
        "checkpoint = importlib.import_module('vitlab.weights.checkpoint')\n"
        "real = checkpoint.atomic_write\n"
        "@contextlib.contextmanager\n"
        "def write(path, mode='wb'):\n"
        "    with real(path, mode) as f:\n"
        "        yield f\n"
        "        if path.name == 'last.pt' and os.environ.get('STEP') == '8':\n"
        "            f.flush(); f.truncate(f.tell() // 2)  # the write got half way\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "checkpoint.atomic_write = write\n"
        "t = importlib.import_module('vitlab.train')\n"
        "real_save = t.save_checkpoint\n"
        "def save(path, state):\n"
        "    os.environ['STEP'] = str(state['step'])\n"
        "    return real_save(path, state)\n"
        "t.save_checkpoint = save\n"
        "t.main(sys.argv[1:])\n"
    )
    args = _cli_args(synthetic_cifar, steps=12)
    killed = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, env=ENV, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "Model" / "run"
    [half] = run_dir.glob(".last.pt.*.tmp")
    assert load_checkpoint(run_dir / "last.pt")["step"] == 4  # the one before is whole
    done = subprocess.run([sys.executable, "-m", "vitlab.train", *args, "--resume"], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("removed .")]
    assert line.startswith(f"removed {half.name} (") and line.endswith("left by writes that were interrupted")
    assert not half.exists() and not list(run_dir.glob(".*.tmp"))
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 12 and last["best_step"] == load_checkpoint(run_dir / "best.pt")["step"]
    assert _same_weights(last["model"], _weights(uninterrupted_12 / "last.pt"))


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_run(tmp_path, synthetic_cifar):
    args = _cli_args(synthetic_cifar, steps=40)
    reference = _uninterrupted(tmp_path, args)
    rng = random.Random(0)
    run_dir = tmp_path / "Model" / "run"
    for _attempt in range(6):
        resume = ["--resume"] if (run_dir / "last.pt").exists() else []
        process = _train_process([*args, *resume], tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(4, 12))
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.returncode == 0:
            break
    done = subprocess.run([sys.executable, "-m", "vitlab.train", *args, "--resume"], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True)  # fmt: skip
    finished = "already finished: 40 of 40 steps" in done.stderr
    assert done.returncode == 0 or finished, done.stderr
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 40 and last["best_step"] == load_checkpoint(run_dir / "best.pt")["step"]
    assert _same_weights(last["model"], _weights(reference / "last.pt"))
    assert not list(run_dir.glob(".*.tmp"))


def test_a_resumed_runs_event_file_sorts_after_the_stopped_runs(tmp_path):
    """TensorBoard reads event files in name order; a resumed file made in the stopped run's second could sort
    first (the names end with a counter compared as text), so the resumed writer starts in a later second."""
    import time

    from vitlab.configs import VITConfig
    from vitlab.training.devices import Distributed
    from vitlab.training.logs import open_writer

    cfg = VITConfig(log_dir=str(tmp_path), name="run")
    earlier = tmp_path / "run" / f"events.out.tfevents.{int(time.time()) + 1}.host.1.99"
    earlier.parent.mkdir()
    earlier.write_bytes(b"")
    processes = Distributed(rank=0, world_size=1, device=torch.device("cpu"), started_here=False)
    writer = open_writer(cfg, processes, start_step=5)
    writer.close()
    names = sorted(p.name for p in (tmp_path / "run").glob("events.out.tfevents.*"))
    new = [name for name in names if name != earlier.name]
    assert new and all(int(name.split(".")[3]) > int(earlier.name.split(".")[3]) for name in new)
    assert names[0] == earlier.name


def test_the_first_command_repeated_with_resume_and_more_steps_continues(tmp_path, monkeypatch, capsys):
    """The recipe's warm-up was scaled to the first run's 4 steps; the resumed command must not compare it."""
    from vitlab import commands
    from vitlab.train import main

    monkeypatch.chdir(tmp_path)
    first = ["--config", "smoke", "--num_steps", "4", "--name", "c", "--progress", "false", "--TB_log", "false"]
    assert commands.run(main, first) == 0
    assert commands.run(main, [*first, "--num_steps", "8", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming with changed settings: num_steps 4 -> 8" in out and "error" not in out
    state = load_checkpoint(tmp_path / "Model" / "c" / "last.pt")
    assert state["step"] == 8 and state["config"]["warmup_steps"] == 1  # the run's own warm-up, kept
    # A value the user did change is still refused, naming the flag and both values.
    assert commands.run(main, [*first, "--num_steps", "9", "--resume", "--learning_rate", "0.5"]) == 1
    assert "learning_rate: the run has 0.001, given 0.5" in capsys.readouterr().err


@pytest.mark.parametrize("experiment", ["scratch", "cnn"])
def test_the_first_command_repeated_with_resume_continues_for_the_recipes_from_scratch(
    tmp_path, synthetic_cifar, experiment, capsys
):
    from vitlab import commands
    from vitlab.train import main

    data = ["--dataset", "synthetic", "--data_dir", str(synthetic_cifar), "--device_augment", "false"]
    tiny = {"scratch": ["--model_type", "ViT-Test"], "cnn": ["--model_overrides", '{"num_layers": 1}']}[experiment]
    first = ["--config", experiment, *data, *tiny, "--train_batch_size", "16", "--num_workers", "0", "--num_steps", "4",
             "--save_dir", str(tmp_path / "Model"), "--log_dir", str(tmp_path / "TB"), "--name", "r",
             "--progress", "false"]  # fmt: skip
    assert commands.run(main, first) == 0
    assert commands.run(main, [*first, "--num_steps", "8", "--resume"]) == 0, capsys.readouterr().err
    assert load_checkpoint(tmp_path / "Model" / "r" / "last.pt")["step"] == 8


def test_train_puts_back_the_hooks_and_settings_of_the_process(tmp_path, synthetic_cifar):
    """A notebook that called train() once reports later thread errors through its own hook, not vitlab's."""
    import threading
    import warnings

    def mine(args):
        return None

    before_hook, before_threads = threading.excepthook, torch.get_num_threads()
    before_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threading.excepthook = mine
    try:
        filters = list(warnings.filters)
        train(
            _cfg(tmp_path, synthetic_cifar, num_steps=2, warmup_steps=1, name="ok")
        )  # with TensorBoard: it installs a hook
        assert threading.excepthook is mine and list(warnings.filters) == filters
        assert {s: signal.getsignal(s) for s in before_signals} == before_signals
        assert torch.get_num_threads() == before_threads and not torch.are_deterministic_algorithms_enabled()
        with pytest.raises(FileExistsError):
            train(
                _cfg(tmp_path, synthetic_cifar, num_steps=2, warmup_steps=1, name="ok")
            )  # refused: the folder holds a run
        assert threading.excepthook is mine
    finally:
        threading.excepthook = before_hook
