"""torch and torchvision as installed: a pair that does not work together is said in one line.

torchvision's compiled operators are built against one release and build of torch. Mixed with another (a
CPU torch from PyTorch's index beside PyPI's torchvision, or one of the two upgraded alone), `import
torchvision` dies deep inside with `operator torchvision::nms does not exist`, 30 lines from anything that
says why. `import vitlab` puts `WatchTorchvision` first on `sys.meta_path`: it watches the first import of
torchvision (vitlab's or anyone's) and turns that failure into `MismatchedPackages`, naming both versions
and the pair to install. Nothing is imported for it: `import vitlab` stays as quick as before, and once
torchvision has loaded the watcher takes itself off.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import re
import sys
from pathlib import Path

from vitlab.errors import MismatchedPackages

TESTED = {"torch": "2.14.1", "torchvision": "0.29.1"}  # the pins of .ci/constraints.txt (a test keeps them equal)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def release(version: str) -> tuple[int, ...]:
    """ "2.13.0+cpu" -> (2, 13, 0): the numbers of a version, without its build label."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def build(version: str) -> str:
    """ "cpu", "cu130" or "" (PyPI's, which is a CUDA build on Linux): the label after the "+"."""
    return version.partition("+")[2]


def torchvision_for(torch_version: str) -> str:
    """The torchvision release made with a torch release: 0.(minor + 15) for torch 2.x (2.14 -> 0.29)."""
    major, minor = release(torch_version)[:2]
    return f"0.{minor + 15}" if major == 2 else "the one released with it"


def unmet(requirement: str, torch_version: str) -> bool:
    """Whether torch `torch_version` fails torchvision's `Requires-Dist` line, e.g. "torch (==2.13.0)"."""
    checks = {"==": tuple.__eq__, ">=": tuple.__ge__, "<=": tuple.__le__, ">": tuple.__gt__, "<": tuple.__lt__}
    have = release(torch_version)
    for operator, version in re.findall(r"(==|>=|<=|>|<)\s*([\d.]+)", requirement):
        wanted = release(version)
        if not checks[operator](have[: len(wanted)], wanted):
            return True
    return False


def mismatch_message(torch_version: str, torchvision_version: str, requirement: str, failure: str) -> str:
    """What is installed, why the two do not fit, and the pair to install."""
    if requirement and unmet(requirement, torch_version):
        why = f"it is built for {re.sub(r'[ ()]', '', requirement)}"
    elif build(torch_version) != build(torchvision_version):
        why = f"torch is {build_name(torch_version)}, torchvision {build_name(torchvision_version)}"
    else:
        why = "its compiled operators do not fit this torch"
    tested = f"torch=={TESTED['torch']} torchvision=={TESTED['torchvision']}"
    minor = ".".join(map(str, release(torch_version)[:2]))
    return (
        f"torchvision {torchvision_version} does not work with the installed torch {torch_version}: {why} "
        f"(import torchvision failed: {failure}); install the two together from one place: "
        f"pip install --force-reinstall {tested} (PyPI; the pair vitlab is tested with), or add --index-url "
        f"{CPU_INDEX} for both as CPU builds; torch {minor} goes with torchvision {torchvision_for(torch_version)}"
    )


def build_name(version: str) -> str:
    """ "a CPU build", "a cu130 build" or "PyPI's build" (no label: on Linux, CUDA's)."""
    label = build(version)
    return "a CPU build" if label == "cpu" else f"a {label} build" if label else "PyPI's build"


def torchvision_facts(package_dir: Path) -> tuple[str, str]:
    """(version with its build label, the Requires-Dist line on torch) of the torchvision in `package_dir`."""
    version_file = package_dir / "version.py"
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text()) if version_file.is_file() else None
    infos = sorted(package_dir.parent.glob("torchvision-*.dist-info"))
    distribution = importlib.metadata.PathDistribution(infos[0]) if infos else None
    if distribution is None:
        try:
            distribution = importlib.metadata.distribution("torchvision")
        except importlib.metadata.PackageNotFoundError:
            pass
    version = found.group(1) if found else (distribution.version if distribution else "(unknown version)")
    requirement = next((line for line in (distribution.requires or []) if re.match(r"torch\b(?!vision)", line)), "")
    return version, requirement.split(";")[0].strip() if distribution else ""


class WatchTorchvision(importlib.abc.MetaPathFinder):
    """A finder for `torchvision` only: it lets the other finders find it and watches its first run."""

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if finder is not self and find is not None else None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module  # this spec's own loader: only torchvision's run is watched

        def exec_module(module):
            try:
                run_module(module)
            except (RuntimeError, OSError, ImportError) as error:
                mismatch = explained(error, spec)
                if mismatch is error:
                    raise
                raise mismatch from None  # its 30 lines inside torch say nothing the message does not
            if self in sys.meta_path:  # loaded: nothing left to watch
                sys.meta_path.remove(self)

        spec.loader.exec_module = exec_module
        return spec


def explained(error: BaseException, spec) -> BaseException:
    """`MismatchedPackages` for a failed torchvision import that comes from the torch beside it, else `error`."""
    torch = sys.modules.get("torch")
    if isinstance(error, ModuleNotFoundError) or getattr(torch, "__version__", None) is None:
        return error  # a package missing, or torch itself broken: not a mismatch of the two
    failure = " ".join((str(error).strip().splitlines() or [type(error).__name__])[-1].split())
    try:
        version, requirement = torchvision_facts(Path(next(iter(spec.submodule_search_locations or []), "")))
    except (OSError, ValueError):
        version, requirement = "(unknown version)", ""
    named = "torchvision" in str(error) or "CUDA" in str(error)
    if not named and not (requirement and unmet(requirement, torch.__version__)):
        return error  # something else broke inside torchvision
    return MismatchedPackages(mismatch_message(torch.__version__, version, requirement, failure))


def watch_torchvision() -> None:
    """Put the watcher first on `sys.meta_path` (once), unless torchvision is already imported."""
    if "torchvision" not in sys.modules and not any(isinstance(f, WatchTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, WatchTorchvision())
