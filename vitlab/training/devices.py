"""Where a run computes: the device, its place in a torchrun job, the seeds (the precision: vitlab.precision)."""

from __future__ import annotations

import contextlib
import datetime
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from vitlab.commands import check_device
from vitlab.configs import VITConfig


@dataclass
class Distributed:
    """Where this process runs and its place in a torchrun job (world_size 1 without one)."""

    rank: int
    world_size: int
    device: torch.device
    started_here: bool  # this call created the process group, so it also destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = -1) -> torch.device:
    """ "auto" -> the GPU of this process (cuda:local_rank) when there is one, else the CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = check_device(spec)  # an unknown or absent device is a ValueError that says what to use
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", max(local_rank, 0))
    return device


def setup_distributed(cfg: VITConfig) -> Distributed:
    """Join the torchrun job described by the environment (nccl on GPUs, gloo on CPUs), if any."""
    env_rank = os.environ.get("LOCAL_RANK")
    local_rank = cfg.local_rank if cfg.local_rank != -1 else int(env_rank) if env_rank is not None else -1
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.device, local_rank)
    started_here = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # A process that hangs (a dead GPU, a stuck data loader) ends the job after ddp_timeout, not torch's 30 min.
        timeout = datetime.timedelta(seconds=cfg.ddp_timeout)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        started_here = True
    if dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), device, started_here)
    return Distributed(0, 1, device, False)


@contextlib.contextmanager
def main_process_first(processes: Distributed):
    """Rank 0 runs the block first (downloads, extraction); the other processes wait, then read its files."""
    if processes.world_size > 1 and not processes.is_main:
        dist.barrier()
    yield
    if processes.world_size > 1 and processes.is_main:
        dist.barrier()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (model initialisation and dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def usable_cpus() -> int:
    """The CPU cores this process may run on: its affinity where the system says, else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def data_workers(requested: int) -> int:
    """DataLoader workers per process: `requested`, but no more than the cores each process of this machine has.

    More worker processes than cores only take turns (PyTorch warns about it); the processes of a torchrun
    job on one machine (LOCAL_WORLD_SIZE) share its cores.
    """
    if requested == 0:
        return 0
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return min(requested, max(1, usable_cpus() // max(1, processes)))
