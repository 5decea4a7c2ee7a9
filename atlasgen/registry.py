"""One mechanism for atlasgen's plug-in tables (objectives, model sources, stages): each entry
is a module of a package that registers itself when the package discovers its modules, so
adding one is adding a file. Entries are listed by their `order`, then name."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        name = entry.name  # type: ignore[attr-defined]
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        return self._entries[name]

    def __delitem__(self, name: str) -> None:  # for tests that register a throwaway entry
        del self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def ordered(self) -> list[T]:
        return sorted(self._entries.values(), key=lambda e: (e.order, e.name))  # type: ignore[attr-defined]

    def discover(self, package: str, path: Iterable[str]) -> None:
        """Import every public module of `package` (whose `__path__` is `path`)."""
        for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
