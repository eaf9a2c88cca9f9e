"""Settings dataclasses given as an object and/or as keyword overrides (``train_proxy(x, y, settings, epochs=2)``)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

from datacomp.errors import ConfigError

__all__ = ["with_overrides"]

S = TypeVar("S")


def with_overrides(cls: type[S], base: S | None, overrides: dict[str, Any], what: str) -> S:
    """``base`` (default ``cls()``) with the fields in ``overrides`` replaced; an unknown name raises
    :class:`ConfigError` naming ``what`` (the function called) and the valid fields."""
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ConfigError(f"{what} got unknown setting(s) {unknown}; valid: {sorted(names)}")
    if base is not None and not isinstance(base, cls):
        raise ConfigError(f"{what}: settings must be a {cls.__name__}, got {type(base).__name__}")
    return replace(base if base is not None else cls(), **overrides)
