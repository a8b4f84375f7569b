"""pyproject.toml and environment.yml describe the same environment."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    in_pyproject = {_name(r) for r in requirements}

    in_environment, in_dependencies = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\w", line):  # a top-level key: name, channels, dependencies
            in_dependencies = line.startswith("dependencies:")
            continue
        item = re.match(r"^\s+-\s+(\S.*)$", line)
        if in_dependencies and item and not item.group(1).startswith(("-e", "pip:")):
            in_environment.add(_name(item.group(1)))
    in_environment -= {"python", "pip"}
    assert in_environment == in_pyproject
