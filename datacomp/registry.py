"""String registries for families of interchangeable things (models, distillers, selectors, protocols).

``Registry("selector")`` maps a name to an :class:`Entry` (the object plus a one-line description and free-form
facts such as the inputs a method needs or its default parameters). ``registry.get(name)`` raises a
:class:`~datacomp.errors.ConfigError` that lists the valid names and the closest match.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

__all__ = ["Registry", "Entry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its name, a one-line description and method facts (``info``)."""

    name: str
    obj: T
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> :class:`Entry`, in registration order.

    Args:
        kind: What the registry holds, for error messages ("model", "selector", ...).
        option: The command-line option that names an entry (``--method``), for error messages.
    """

    def __init__(self, kind: str, option: str = "--method") -> None:
        self.kind = kind
        self.option = option
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "", **info: Any) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name", "what it is", inputs=(...))``."""

        def wrap(obj: T) -> T:
            self.add(name, obj, description, **info)
            return obj

        return wrap

    def add(self, name: str, obj: T, description: str = "", **info: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = Entry(name, obj, description, dict(info))

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        names = list(self._entries)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{self.option}: unknown {self.kind} {name!r}{hint}; choose one of {', '.join(names)}")

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
