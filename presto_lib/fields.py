"""Config dataclasses built from dicts: the one check for unknown keys (params groups, saved configs)."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterable

__all__ = ["field_names", "reject_unknown"]


def field_names(cls: type) -> set[str]:
    """The field names of a dataclass."""
    return {f.name for f in fields(cls)}


def reject_unknown(cls: type, d: dict[str, Any], what: str, also: Iterable[str] = ()) -> None:
    """Raise ValueError naming `what` (e.g. "DiTConfig keys") and the keys of `d` that are neither a field of the
    dataclass `cls` nor in `also`."""
    names = field_names(cls) | set(also)
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; known: {sorted(names)}")
