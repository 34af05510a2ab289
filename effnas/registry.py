"""A tiny registry: the options of one config group, each a dataclass, by name.

Samplers, pruners, storages, optimizers, schedules and datasets are each one entry; every list of
valid names (error messages, the Hydra ConfigStore, the README's tables) is derived from here.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """``name -> entry`` for one group; :meth:`register` is a class decorator."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.group} {name!r} is registered twice")
            self._entries[name] = entry
            return entry
        return add

    def add(self, name: str, entry: T) -> T:
        return self.register(name)(entry)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"{self.group} must be one of {', '.join(self._entries)}, got {name!r}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()
