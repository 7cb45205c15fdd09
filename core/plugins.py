"""Registries that third-party distributions extend: found by the driver and by every worker.

A registry (reconstruction methods, cluster backends) holds the built-in entries and,
on its first lookup in a process, loads the entry points of its group from the
installed distributions (:func:`importlib.metadata.entry_points`, as pytest and napari
find their plugins). A fresh worker process — what a batch job starts — finds the same
entries as the driver without anything importing the user's code first, as long as
the distribution is installed in the environment the worker runs in.

An entry point names either the object to register (``"mypkg.methods:METHOD"``) or a
module whose import registers what it defines (``"mypkg.methods"``). A plugin that
fails to load is logged and left out; the others and the built-ins stay usable, and
:attr:`Registry.errors` keeps the reason for the message that reports the name as unknown.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from importlib.metadata import entry_points
from types import ModuleType
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(MutableMapping[str, T], Generic[T]):
    """Name → entry, with the entry points of ``group`` loaded on the first lookup.

    Parameters
    ----------
    group : str
        The entry-point group, e.g. ``"tomosweep.methods"``.
    kind : type
        What an entry is; an entry point that loads to anything else but a module is refused.
    name_of : callable
        An entry's registered name (e.g. ``lambda m: m.name``).
    """

    def __init__(self, group: str, kind: type, *, name_of: Callable[[T], str]) -> None:
        self.group = group
        self.kind = kind
        self.name_of = name_of
        self._items: dict[str, T] = {}
        self._loaded = False
        #: entry-point name -> why it did not load (for "unknown ..." messages)
        self.errors: dict[str, str] = {}

    def register(self, item: T) -> T:
        """Add ``item`` under its name; ``ValueError`` when the name is taken."""
        name = self.name_of(item)
        if name in self._items:
            raise ValueError(f"a {self.kind.__name__} named {name!r} is registered already")
        self._items[name] = item
        return item

    def load_entry_points(self) -> None:
        """Load the group's entry points (once per process; later calls do nothing)."""
        if self._loaded:
            return
        self._loaded = True  # first: a plugin module may look the registry up while it is imported
        for point in entry_points(group=self.group):
            try:
                loaded = point.load()
                if isinstance(loaded, self.kind):
                    # its module may have registered it while being imported
                    if self._items.get(self.name_of(loaded)) is not loaded:  # type: ignore[arg-type]
                        self.register(loaded)  # type: ignore[arg-type]
                elif not isinstance(loaded, ModuleType):
                    raise TypeError(f"it loads a {type(loaded).__name__}, not a {self.kind.__name__} or a module")
            except Exception as exc:  # a broken plugin must not take the built-ins down with it
                dist = point.dist.name if point.dist is not None else "an unknown distribution"
                reason = f"entry point {point.name!r} = {point.value!r} of {dist} ({self.group}): {exc}"
                self.errors[point.name] = reason
                log.warning("%s", reason)

    def unknown(self, name: str) -> str:
        """Why ``name`` is not registered, when a plugin of that name failed to load ('' otherwise)."""
        self.load_entry_points()
        reason = self.errors.get(name)
        return f" (a plugin of that name failed to load: {reason})" if reason else ""

    def __getitem__(self, name: str) -> T:
        self.load_entry_points()
        return self._items[name]

    def __setitem__(self, name: str, item: T) -> None:
        # replaces, as a dict does (tests swap a built-in for a stand-in); register() refuses
        if self.name_of(item) != name:
            raise ValueError(f"{name!r} must be registered under its own name {self.name_of(item)!r}")
        self._items[name] = item

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        self.load_entry_points()
        return iter(self._items)

    def __len__(self) -> int:
        self.load_entry_points()
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.group!r}: {', '.join(self)})"


def import_modules(modules: Iterable[str]) -> list[ModuleType]:
    """Import each named module (a study's ``[plugins] modules``), whose import registers its entries.

    Raises ``ValueError`` naming the module and the import's own error, so a study
    file naming a module that this process cannot import fails validation with one line.
    """
    imported = []
    for name in modules:
        try:
            imported.append(importlib.import_module(name))
        except Exception as exc:
            raise ValueError(
                f"cannot import {name!r} ({type(exc).__name__}: {exc}); "
                "it must be importable here and on every worker (installed, or on PYTHONPATH)"
            ) from None
    return imported


class PluginsSpec(BaseModel):
    """The ``[plugins]`` section of a study file: modules imported before the rest is read.

    ``modules = ["mypkg.my_method"]`` names modules whose import registers a method or a
    cluster backend. They are imported when the study is validated, which happens on the
    driver and again on every worker (each trial carries the study), so a worker process
    started by a batch job imports them before it looks its method up. Each must be
    importable there: installed in the workers' environment, or on their ``PYTHONPATH``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    modules: tuple[str, ...] = ()
    """Modules to import, by dotted name, on the driver and on every worker before the rest is read."""

    @field_validator("modules")
    @classmethod
    def _import(cls, modules: tuple[str, ...]) -> tuple[str, ...]:
        import_modules(modules)
        return modules
