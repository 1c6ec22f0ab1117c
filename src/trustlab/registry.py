"""Name -> factory registries for datasets, models, attacks, defenses and experiments.

A registry maps a lower-case name to a factory plus free-form metadata (a one-line description,
parameter counts, ...). Unknown names raise :class:`~trustlab.errors.InputError` listing the
names that exist, so that the CLI can report a typo in one line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from trustlab.errors import InputError


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A named collection of factories, e.g. ``DATASETS`` or ``MODELS``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, description: str = "", **meta: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@MODELS.register("resnet20", "CIFAR ResNet-20")``."""
        key = name.lower()

        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = Entry(key, factory, description, dict(meta))
            return factory

        return deco

    def get(self, name: str) -> Entry:
        key = str(name).lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}."
            )
        return self._entries[key]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[k] for k in self.names())

    def __len__(self) -> int:
        return len(self._entries)


DATASETS = Registry("dataset")
MODELS = Registry("model")
ATTACKS = Registry("attack")
DEFENSES = Registry("defense")
EXPERIMENTS = Registry("experiment")
