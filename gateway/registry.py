"""A registry: things registered once by name, in order, by the module that defines them.

The filters (`gateway.config.filters`) and the device models (`gateway.config.devices`) are
registries rather than hand-written lists: a new one is registered where it is written, and the
config's unions, the documentation's tables and the error messages that list the known names
are built from the registry. Whoever builds something from a registry can ask to be told when
it changes (`on_change`): the config models are rebuilt when a plug-in registers after them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what  # for the error of a name registered twice: "filter", "device type"
        self._items: dict[str, T] = {}
        self._listeners: list[Callable[[], None]] = []

    def add(self, name: str, item: T) -> T:
        """Register `item` as `name`; a name is registered once (a second one is a bug)."""
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        self._changed()
        return item

    def remove(self, name: str) -> None:
        """Unregister `name` (a test's toy plug-in cleans up after itself)."""
        del self._items[name]
        self._changed()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def names(self) -> tuple[str, ...]:
        """In the order they were registered (the documentation's order)."""
        return tuple(self._items)

    def values(self) -> tuple[T, ...]:
        return tuple(self._items.values())

    def __contains__(self, name: object) -> bool:
        """Whether a name is registered."""
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        """The registered things (not their names: what a loop over the registry wants)."""
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)
