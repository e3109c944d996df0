"""Typed notebook parameters: dataclasses built from a mapping that reject unknown keys clearly."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def build_config(cls: type[T], values: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> T:
    """Build dataclass `cls` from `values`; unknown keys raise a ValueError listing the valid ones.

    Notebooks call this on their parameter cell (``build_config(Params, globals_subset)``) so that a
    mistyped papermill parameter fails loudly instead of being silently ignored.
    """
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(k for k in values if k not in valid and k not in ignore)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {cls.__name__}; valid: {valid}")
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"missing parameter(s) {missing} for {cls.__name__}")
    return cls(**{k: v for k, v in values.items() if k in valid})


def check_choice(name: str, value: Any, choices: list | tuple) -> None:
    """Raise a ValueError naming the valid choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")
