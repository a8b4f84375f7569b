"""The check every config makes when it is built: each field holds a value of its annotated type, in range."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Collection, Iterable

from vitlab.errors import BadType, BadValue


def check_types(config) -> None:
    """Every field of dataclass `config` holds a value of its annotated type (ints may stand for floats).

    A config read from JSON or a command line can carry "abc" for a number or 1 for a flag; this
    catches it when the config is made, naming the field, instead of deep inside a run.
    """
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        expected = type_error(str(item.type), value)
        if expected:
            raise ConfigError(
                f"{type(config).__name__}.{item.name} must be {expected}, got {value!r} ({type(value).__name__})"
            )
        if str(item.type).startswith("float") and isinstance(value, int):
            setattr(config, item.name, float(value))


def type_error(annotation: str, value) -> str | None:
    """What `value` should have been to match `annotation` (e.g. "int | None"), or None when it matches."""
    if value is None and "None" in annotation:
        return None
    base = annotation.split("|")[0].split("[")[0].strip()
    checks = {
        "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
        "bool": ("true or false", lambda v: isinstance(v, bool)),
        "str": ("a string", lambda v: isinstance(v, str)),
        "dict": ("a dict (JSON object)", lambda v: isinstance(v, dict)),
        "tuple": ("a sequence of values", lambda v: isinstance(v, (list, tuple))),
    }
    if base not in checks:
        return None
    description, matches = checks[base]
    if matches(value):
        return None
    return description + (" or None" if "None" in annotation else "")


class ConfigError(BadType, BadValue):
    """A config field with a value of the wrong type or out of range (both a TypeError and a ValueError)."""


def check_range(config, name: str, low: float | None = None, high: float | None = None) -> None:
    """low <= value (< high when given), and finite: NaN compares false with everything."""
    value = getattr(config, name)
    bad = not math.isfinite(value) or (low is not None and value < low) or (high is not None and value >= high)
    if bad:
        bounds = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ConfigError(f"{type(config).__name__}.{name} must be {bounds}, got {value!r}")


def check_choice(config, name: str, valid: Collection[str]) -> None:
    if getattr(config, name) not in valid:
        raise ConfigError(f"unknown {name} {getattr(config, name)!r}; valid names: {', '.join(valid)}")


def closest(name: str, valid: Iterable[str], count: int = 2) -> list[str]:
    """The valid names closest to a mistyped one, without regard to case ("num_step" -> ["num_steps"])."""
    by_case = {known.lower(): known for known in valid}
    return [by_case[match] for match in difflib.get_close_matches(name.lower(), by_case, n=count, cutoff=0.75)]


def unknown_names(kind: str, unknown: Iterable[str], valid: Collection[str], where: str = "") -> str:
    """ "unknown VITConfig field 'num_step' (did you mean num_steps?)": each name with the closest valid ones;
    all the valid names are listed only when some unknown one has none close."""
    parts, guessed = [], True
    for name in sorted(unknown):
        near = closest(name, valid)
        parts.append(f"{name!r}" + (f" (did you mean {' or '.join(near)}?)" if near else ""))
        guessed = guessed and bool(near)
    text = f"unknown {kind}{'s' * (len(parts) > 1)} {', '.join(parts)}{where}"
    return text if guessed else f"{text}; valid {kind}s: {', '.join(sorted(valid))}"
