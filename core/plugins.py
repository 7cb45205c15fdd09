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

A plugin cannot end or hijack the program that loads it: a ``sys.exit`` or
``KeyboardInterrupt`` raised by its import is a load error like any other, what it prints
while imported goes to the log (never into a command's CSV or JSON), and a built-in name
cannot be registered again. :meth:`Registry.origin` says where each entry came from (the
distribution and version of an entry point, or the path and SHA-256 of a ``[plugins]``
module), which a store records for each of its methods.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import importlib.util
import io
import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

log = logging.getLogger(__name__)

T = TypeVar("T")

#: where the plugin being loaded comes from, while it is loaded (what :meth:`Registry.origin` records)
_LOADING: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("tomosweep_plugin", default=None)

BUILT_IN: dict[str, Any] = {"source": "built-in"}
#: an entry registered by the running program itself (a script, a test), not by a plugin
IN_PROCESS: dict[str, Any] = {"source": "registered by the running program"}


class PluginStopped(Exception):
    """A plugin's import raised ``SystemExit`` or ``KeyboardInterrupt`` (turned into a load error)."""


@contextlib.contextmanager
def _loading(origin: dict[str, Any], what: str) -> Iterator[None]:
    """Load a plugin: its registrations are recorded as ``origin``, what it prints goes to the
    log, and an attempt to end the program becomes :class:`PluginStopped`."""
    token = _LOADING.set(origin)
    printed = io.StringIO()
    try:
        # a plugin that prints on import would otherwise land in `status --format csv|json`
        with contextlib.redirect_stdout(printed):
            yield
    except SystemExit as exc:
        raise PluginStopped(
            f"{what} called sys.exit({exc.code!r}) while being imported; "
            "a plugin's import must only define and register, never end the program"
        ) from None
    except KeyboardInterrupt:
        raise PluginStopped(
            f"{what} raised KeyboardInterrupt while being imported; "
            "a plugin's import must only define and register, never stop the program"
        ) from None
    finally:
        _LOADING.reset(token)
        if printed.getvalue().strip():
            log.info("%s printed while being imported: %s", what, printed.getvalue().rstrip())


def _entry_point_origin(point: EntryPoint, group: str) -> dict[str, Any]:
    dist = point.dist
    return {
        "source": "entry point",
        "distribution": dist.name if dist is not None else None,
        "version": dist.version if dist is not None else None,
        "entry_point": f"{group}: {point.name} = {point.value}",
    }


def module_origin(name: str) -> dict[str, Any]:
    """Where the module ``name`` would be imported from: its file and the file's SHA-256."""
    origin: dict[str, Any] = {"source": "module", "module": name, "path": None, "sha256": None}
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return origin  # the import itself reports it
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        origin["path"] = str(Path(spec.origin).resolve())
        origin["sha256"] = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    return origin


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
        self._builtins: dict[str, T] = {}
        self._origins: dict[str, dict[str, Any]] = {}

    def seal_builtins(self) -> None:
        """Mark every entry registered so far as built in: no plugin may take its name."""
        self._builtins = dict(self._items)

    def builtin(self, name: str) -> T | None:
        """The built-in entry called ``name`` (``None`` if there is none), without loading any plugin."""
        return self._builtins.get(name)

    def origin(self, name: str) -> dict[str, Any]:
        """Where the entry ``name`` came from, as JSON: ``{"source": "built-in"}``, an entry point's
        distribution and version, a ``[plugins]`` module's path and SHA-256, or the running program."""
        item = self[name]
        if self._builtins.get(name) is item:
            return dict(BUILT_IN)
        origin = dict(self._origins.get(name, IN_PROCESS))
        if name in self._builtins:
            origin["replaces_built_in"] = True
        return origin

    def _refuse_builtin(self, name: str) -> None:
        if name in self._builtins:
            raise ValueError(
                f"{name!r} is a built-in {self.kind.__name__} of tomosweep; a plugin cannot replace it: "
                "register yours under another name"
            )

    def register(self, item: T) -> T:
        """Add ``item`` under its name; ``ValueError`` when the name is taken (a built-in's above all)."""
        name = self.name_of(item)
        self._refuse_builtin(name)
        if name in self._items:
            raise ValueError(f"a {self.kind.__name__} named {name!r} is registered already")
        self._items[name] = item
        self._origins[name] = dict(_LOADING.get() or IN_PROCESS)
        return item

    def load_entry_points(self) -> None:
        """Load the group's entry points (once per process; later calls do nothing)."""
        if self._loaded:
            return
        self._loaded = True  # first: a plugin module may look the registry up while it is imported
        for point in entry_points(group=self.group):
            try:
                with _loading(_entry_point_origin(point, self.group), f"entry point {point.value!r}"):
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
        # replaces, as a dict does: the running program's explicit override (tests swap a built-in
        # for a stand-in), recorded by origin(); a plugin being loaded may not, as register() may not
        if self.name_of(item) != name:
            raise ValueError(f"{name!r} must be registered under its own name {self.name_of(item)!r}")
        if _LOADING.get() is not None:
            self._refuse_builtin(name)
        self._items[name] = item
        self._origins[name] = dict(_LOADING.get() or IN_PROCESS)

    def __delitem__(self, name: str) -> None:
        if _LOADING.get() is not None:
            self._refuse_builtin(name)
        del self._items[name]
        self._origins.pop(name, None)

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
    file naming a module that this process cannot import fails validation with one line;
    a module that calls ``sys.exit`` or raises ``KeyboardInterrupt`` while imported too.
    """
    imported = []
    for name in modules:
        try:
            with _loading(module_origin(name), f"plugin module {name!r}"):
                imported.append(importlib.import_module(name))
        except PluginStopped as exc:
            raise ValueError(f"{exc}; fix the module or remove it from [plugins] modules") from None
        except Exception as exc:
            raise ValueError(
                f"cannot import {name!r} ({type(exc).__name__}: {exc}); "
                "it must be importable here and on every worker (installed, or on PYTHONPATH)"
            ) from None
    return imported


#: the validation context under which a stored study is read without importing its plugins
READ_ONLY = "read_only"


def reading_only(info: ValidationInfo | None) -> bool:
    """Whether a study is being validated for a command that only reads its store (no plugin runs)."""
    context = info.context if info is not None else None
    return isinstance(context, dict) and bool(context.get(READ_ONLY))


class PluginsSpec(BaseModel):
    """The ``[plugins]`` section of a study file: modules imported before the rest is read.

    ``modules = ["mypkg.my_method"]`` names modules whose import registers a method or a
    cluster backend. They are imported when the study is validated, which happens on the
    driver and again on every worker (each trial carries the study), so a worker process
    started by a batch job imports them before it looks its method up. Each must be
    importable there: installed in the workers' environment, or on their ``PYTHONPATH``.

    A command that only reads a store (``status``, ``check``, ``export``) validates its stored
    study without importing them (:func:`reading_only`): a received store's code never runs there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    modules: tuple[str, ...] = ()
    """Modules to import, by dotted name, on the driver and on every worker before the rest is read."""

    @field_validator("modules")
    @classmethod
    def _import(cls, modules: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not reading_only(info):
            import_modules(modules)
        return modules
