"""Config files: a `VITConfig` from YAML or JSON (`load_config`) and back to text (`export_config`)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from vitlab.configs.checks import ConfigError
from vitlab.configs.run import VITConfig
from vitlab.errors import BadValue, FileError, MissingFile

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
# Written fresh for every run, so an exported experiment leaves it out: each run from the file gets its own name.
_NOT_EXPORTED = ("test_cycles",)


def field_comments() -> dict[str, str]:
    """The comment beside each field in `VITConfig`'s source (configs/run.py), for exported YAML and help texts."""
    import inspect
    import re

    try:
        source = inspect.getsource(VITConfig)
    except (OSError, TypeError):  # no source files (a frozen install): no comments
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^    (\w+): [^#\n]*#\s*(.*)$", source, re.M)}


def load_config(path: str | os.PathLike) -> VITConfig:
    """A `VITConfig` from a YAML (`.yaml`, `.yml`) or JSON (`.json`) file, through `VITConfig.from_dict`.

    MindCV, MindFormers and timm keep their experiments in YAML; `export_config` writes one to start from.
    YAML 1.1 reads `1e-3` as a string, so strings in number fields are read as numbers.
    """
    path = Path(path)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise BadValue(f"config file {path} must end in {', '.join(CONFIG_SUFFIXES)}")
    if not path.is_file():
        raise MissingFile(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text: save it as UTF-8 (YAML or JSON)") from None
    except OSError as error:  # the system's refusal (permissions): vitlab's error, naming the file
        raise FileError(error.errno, error.strerror, str(path)) from None
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadValue(f"config file {path} is not valid JSON: {error}") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise BadValue(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise BadValue(f"config file {path} must hold a mapping of VITConfig fields, got {type(values).__name__}")
    numbers = {f.name for f in dataclasses.fields(VITConfig) if f.type in ("float", "int")}
    for name in numbers & set(values):
        if isinstance(values[name], str):
            try:
                values[name] = (
                    float(values[name]) if "." in values[name] or "e" in values[name].lower() else int(values[name])
                )
            except ValueError:
                pass  # left for from_dict to report
    try:
        return VITConfig.from_dict(values)
    except ConfigError as error:  # which file holds the key or value
        raise ConfigError(f"config file {path}: {error}") from None


def export_config(cfg: VITConfig, fmt: str = "yaml", title: str | None = None) -> str:
    """`cfg` as the text of a config file ("yaml", each field with its comment, or "json") to edit and pass to
    `--config`; `test_cycles` is left out so each run from the file gets a fresh name."""
    values = json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in _NOT_EXPORTED}))
    if fmt == "json":
        return json.dumps(values, indent=2) + "\n"
    if fmt != "yaml":
        raise BadValue(f"unknown config format {fmt!r}; choose yaml or json")
    import yaml

    comments = field_comments()
    lines = [f"# {title}"] if title else []
    lines.append("# vitlab experiment: python -m vitlab.train --config this.yaml (flags after it override fields)")
    for name, value in values.items():
        # Flow style keeps each field on one line; a bare scalar document ends with "...", which is dropped.
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()
        lines.append(f"{name}: {text}" + (f"  # {comments[name]}" if name in comments else ""))
    return "\n".join(lines) + "\n"
