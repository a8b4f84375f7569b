import os

import pytest
import torch

# Two cores: more threads than that only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path_factory, monkeypatch):
    """A linear probe's feature files go to a folder of this test session, not the user's ~/.cache."""
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path_factory.getbasetemp() / "vitlab_cache"))


def randomize_(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised heads would hide mapping mistakes)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + std * torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))
    return model


def assert_same_logits(model, reference, img_size, atol=1e-5, min_logit=0.1):
    """Both models give the same logits for one random batch, and the logits are not all ~0."""
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        ours, theirs = model.eval()(x), reference.eval()(x)
    assert ours.abs().max() > min_logit  # real logits, not a zero head
    torch.testing.assert_close(ours, theirs, atol=atol, rtol=0)


@pytest.fixture(scope="session")
def synthetic_cifar(tmp_path_factory):
    """A small synthetic CIFAR-10 folder in the real pickle layout (2000 train / 500 test images)."""
    from vitlab.data import write_synthetic_cifar

    root = tmp_path_factory.mktemp("synthetic_cifar")
    write_synthetic_cifar(root, num_train=2000, num_test=500, seed=0)
    return root


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(kib, full=False)`: a real filesystem of `kib` KiB (a tmpfs mount) under tmp_path, for full-disk
    tests; `full=True` fills it to the last byte with a file named `filler`.

    Mounting needs root and a machine that allows it (not every container does): elsewhere the test skips.
    """
    import errno
    import subprocess

    mounted = []

    def mount(kib: int, name: str = "disk", full: bool = False):
        folder = tmp_path / name
        folder.mkdir()
        if os.name != "posix" or os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        if full:
            with open(folder / "filler", "wb", buffering=0) as f:
                try:
                    while f.write(b"\0" * 4096):
                        pass
                except OSError as error:
                    assert error.errno == errno.ENOSPC
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # busy: detach it now, free it later
