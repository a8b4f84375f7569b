"""A torchvision that does not fit the installed torch: one line naming both and the pair to install."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from vitlab.installed import TESTED, mismatch_message, unmet

ROOT = Path(__file__).resolve().parents[1]
NMS = "operator torchvision::nms does not exist"  # what a mismatched torchvision dies with


def fake_torchvision(folder: Path, version: str, requirement: str | None, failure: str) -> Path:
    """A torchvision package whose import fails as a mismatched one does, with its version and metadata."""
    package = folder / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"import torch\nraise RuntimeError({failure!r})\n")
    (package / "version.py").write_text(f"__version__ = {version!r}\n")
    if requirement is not None:
        info = folder / f"torchvision-{version.split('+')[0]}.dist-info"
        info.mkdir()
        fields = {"Metadata-Version": "2.1", "Name": "torchvision", "Version": version.split("+")[0]}
        fields["Requires-Dist"] = requirement
        info.joinpath("METADATA").write_text("".join(f"{key}: {value}\n" for key, value in fields.items()))
    return folder


def run_with(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=folder)


def test_the_pair_named_is_the_pair_ci_tests():
    pins = dict(line.split("==") for line in (ROOT / ".ci/constraints.txt").read_text().splitlines() if "==" in line)
    assert pins == TESTED


def test_a_torchvision_built_for_another_torch_is_one_error_line(tmp_path):
    folder = fake_torchvision(tmp_path, "0.28.0+cu130", "torch (==2.13.0)", NMS)
    result = run_with(folder, "-m", "vitlab.train", "--config", "smoke")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: torchvision 0.28.0+cu130 "), result.stderr
    for fact in (torch.__version__, "torch==2.13.0", NMS, f"torchvision=={TESTED['torchvision']}"):
        assert fact in lines[0]


def test_from_python_the_first_import_of_torchvision_raises_the_same(tmp_path):
    folder = fake_torchvision(tmp_path, "0.28.0+cu130", "torch (==2.13.0)", NMS)
    code = (
        "import vitlab\n"
        "from vitlab.errors import MismatchedPackages\n"
        "try:\n    import torchvision\nexcept MismatchedPackages as error:\n    print(error)\n"
    )
    result = run_with(folder, "-c", code)
    assert result.returncode == 0 and "built for torch==2.13.0" in result.stdout, result.stderr


def test_another_failure_inside_torchvision_is_left_as_it_is(tmp_path):
    folder = fake_torchvision(tmp_path, "0.29.1", "torch (>=2.14.0)", "something else went wrong")
    result = run_with(folder, "-c", "import vitlab, torchvision")
    assert result.stderr.strip().endswith("RuntimeError: something else went wrong")


def test_a_fitting_torchvision_loads_and_the_watch_ends():
    code = (
        "import sys, vitlab, torchvision\n"
        "assert not [f for f in sys.meta_path if type(f).__name__ == 'WatchTorchvision']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_message_says_why_the_two_do_not_fit():
    # The README's case: torch 2.13 from PyTorch's CPU index, torchvision 0.28 from PyPI.
    cpu_with_pypi = mismatch_message("2.13.0+cpu", "0.28.0+cu130", "torch (==2.13.0)", NMS)
    assert "torch is a CPU build, torchvision a cu130 build" in cpu_with_pypi
    assert "torch 2.13 goes with torchvision 0.28" in cpu_with_pypi
    assert "built for torch==2.13.0" in mismatch_message("2.14.1", "0.28.0", "torch (==2.13.0)", NMS)
    assert unmet("torch (==2.13.0)", "2.14.1") and not unmet("torch (==2.13.0)", "2.13.0+cpu")
    assert not unmet("torch>=2.14.0", "2.14.1+cu130") and unmet("torch>=2.14.0", "2.13.1")
