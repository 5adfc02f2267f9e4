"""The machinery of typed params: a frozen-dataclass `Group` that validates, coerces and range-checks its dict.

The rules are stated in `stages.params`, which declares one `Group` per params group.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ParamsError", "Group", "_F"]


class ParamsError(ValueError):
    """A params value that is unknown, missing, of the wrong type or out of range (names group and key)."""


def _F(min: float | None = None, max: float | None = None, gt: float | None = None) -> Any:
    """A required field with range metadata."""
    return field(metadata={"min": min, "max": max, "gt": gt})


# ---- coercion ------------------------------------------------------------------------------------

def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` as type `tp` (int, float, bool, str, list[...], dict, unions with None, a Group), or ParamsError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if isinstance(tp, type) and issubclass(tp, Group):
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return tp.from_dict(value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        try:
            num = float(value) if isinstance(value, str) else value
        except ValueError:
            raise ParamsError(f"{where}: expected a number, got {value!r}") from None
        if tp is float:
            return float(num)
        if isinstance(num, float) and not num.is_integer():
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return int(num)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ParamsError(f"{where}: expected a string, got {value!r}")
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported field type {tp}")


def _check_range(value: Any, meta: dict[str, Any], where: str) -> None:
    """Range checks of a number (or of every number in a list) from field metadata."""
    for v in (value if isinstance(value, list) else [value]):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if meta.get("min") is not None and v < meta["min"]:
            raise ParamsError(f"{where}: {v!r} is below its minimum {meta['min']}")
        if meta.get("max") is not None and v > meta["max"]:
            raise ParamsError(f"{where}: {v!r} is above its maximum {meta['max']}")
        if meta.get("gt") is not None and not v > meta["gt"]:
            raise ParamsError(f"{where}: {v!r} must be greater than {meta['gt']}")


@dataclass(frozen=True)
class Group:
    """Base of a params group: `from_dict` validates, coerces and range-checks."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], group: str) -> "Group":
        """The group from its params dict; ParamsError names `group.key` of the first problem."""
        if not isinstance(d, dict):
            raise ParamsError(f"params group {group!r}: expected a mapping, got {d!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ParamsError(f"params group {group!r}: unknown key {unknown[0]!r} ({group}.{unknown[0]}); "
                              f"known keys: {', '.join(fields)}")
        missing = [k for k in fields if k not in d]
        if missing:
            raise ParamsError(f"params group {group!r}: missing key {missing[0]!r} ({group}.{missing[0]}); "
                              "add it to profiles/*.yaml")
        values = {}
        for k, f in fields.items():
            where = f"{group}.{k}"
            values[k] = _coerce(d[k], hints[k], where)
            _check_range(values[k], dict(f.metadata), where)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Back to a plain params dict (nested groups included)."""
        return dataclasses.asdict(self)
