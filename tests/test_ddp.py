"""DistributedDataParallel: a two-process gloo run under torchrun equals one process with the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vitlab.configs import VITConfig
from vitlab.train import train
from vitlab.weights.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _losses(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


def test_two_gloo_processes_equal_one_process(tmp_path, synthetic_cifar):
    common = dict(
        dataset="cifar10", data_dir=str(synthetic_cifar), model_type="ViT-Test", img_size=32, train_batch_size=16,
        num_steps=4, warmup_steps=1, eval_every=2, log_every=1, optimizer="sgd", learning_rate=0.05,
        augment="basic", val_split=0.05, eval_batch_size=256, precision="fp32", num_workers=0, device="cpu",
        save_dir=str(tmp_path / "Model"), log_dir=str(tmp_path / "TB"), progress=False,
    )  # fmt: skip
    # Two processes x 2 accumulation passes x 4 images against one process x 1 pass x 16 images.
    flags = [f"--{key}={value}" for key, value in common.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vitlab.train", *flags, "--name=ddp", "--gradient_accumulation_steps=2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("TensorBoard run:") == 1  # only rank 0 reports

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(VITConfig(**common, name="single"))
    finally:
        torch.set_num_threads(threads)
    assert single["world_size"] == 1

    ddp_state = load_checkpoint(tmp_path / "Model" / "ddp" / "last.pt")
    single_state = load_checkpoint(tmp_path / "Model" / "single" / "last.pt")
    assert ddp_state["step"] == 4 and ddp_state["config"]["gradient_accumulation_steps"] == 2
    for name, value in single_state["model"].items():
        torch.testing.assert_close(ddp_state["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    momentum = ddp_state["optimizer"]["state"], single_state["optimizer"]["state"]
    torch.testing.assert_close(*momentum, rtol=1e-5, atol=1e-6)
    ddp_losses, single_losses = _losses(tmp_path / "TB" / "ddp"), _losses(tmp_path / "TB" / "single")
    assert [s for s, _ in ddp_losses] == [1, 2, 3, 4]
    assert [v for _, v in ddp_losses] == pytest.approx([v for _, v in single_losses], rel=1e-5)
