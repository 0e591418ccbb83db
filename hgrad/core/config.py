"""ml_collections configs -> typed, validated dataclasses (the library never reads FLAGS)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def to_dataclass(cls: type[T], values: Mapping[str, Any] | None, *, where: str = "") -> T:
  """Builds `cls` from a mapping; an unknown key is an error that names it."""
  values = dict(values or {})
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"unknown config key(s) {unknown} in {where or cls.__name__}; "
                     f"valid keys: {sorted(fields)}")
  kwargs = {}
  for name, value in values.items():
    default = fields[name].default
    if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
      value = to_dataclass(type(default), value, where=f"{where}.{name}" if where else name)
    elif isinstance(default, tuple) and isinstance(value, list):
      value = tuple(value)
    kwargs[name] = value
  return cls(**kwargs)
