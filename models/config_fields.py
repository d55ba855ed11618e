"""Type checks for the model config dataclasses, so that a wrong value from `--model-arg KEY=VALUE`, a config
file or a hand-edited checkpoint is refused by name (`mask_ratio must be a number, got 'abc'`) before any
comparison or layer build trips over it with an anonymous TypeError.

Each field is checked against its annotation: `int` (a bool is refused), `float` (an int is accepted and
converted), `str`, `bool`, `int | None`, `tuple[T, ...]` (a list or tuple of T), and `dict` (any mapping).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true or false values"}


def _fits(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check(value: Any, hint: Any, name: str, what: str) -> Any:
    """`value` if it fits `hint` (a float field's int becomes a float, a tuple field's list a tuple); else
    ValueError naming the field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # `int | None`
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{what}: {name} must be a list of {_PLURALS[args[0]]}, got {value!r}")
        return tuple(_check(v, args[0], f"{name} item", what) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{what}: {name} must be a mapping, got {value!r}")
        return value
    if hint in _NAMES:
        if not _fits(value, hint):
            raise ValueError(f"{what}: {name} must be {_NAMES[hint]}, got {value!r}")
        return float(value) if hint is float else value
    return value


def check_field_types(config: Any, what: str, text_tuples: tuple[str, ...] = ()) -> None:
    """Check (and normalise) every field of the dataclass instance `config` against its annotation; `what`
    names the config in errors. Fields in `text_tuples` (tuples of strings) also take a single string."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in text_tuples and isinstance(value, str):
            value = (value,)
        object.__setattr__(config, f.name, _check(value, hints[f.name], f.name, what))
