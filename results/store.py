"""The sweep store: one zarr v3 group per study, the contract for resume and export.

Layout (see ``docs/architecture.md``, the store contract; the per-method maps and the 2-D ``params`` /
``nrmse_elements`` columns are this project's reading of it, explained in ``docs/reference/store.md``)::

    S.zarr/                 attrs: format, spec (JSON), spec_hash, tomosweep version,
                            created, methods, param_names, elements, n_committed
      grid/n_haadf, grid/n_chem              1-D int, the map axes
      maps/<method>/best_nrmse  (n_h, n_c)    NaN where the cell has no finished trial
      maps/<method>/best_params (n_h, n_c, k) in the order of attrs["param_names"]
      maps/<method>/n_trials    (n_h, n_c)    finished + failed trials
      maps/<method>/n_failed    (n_h, n_c)
      trials/method            int8    index into attrs["methods"]
      trials/n_haadf, n_chem   int32   the cell, as tilt counts (not indices)
      trials/status            int8    0 ok, 1 failed, 2 pruned (stopped early, NRMSE
                                       at the stop; never a cell's best)
      trials/nrmse             float64 mean NRMSE over elements (NaN when failed)
      trials/nrmse_elements    float64 (rows, n_elements), attrs["elements"] order
      trials/params            float64 (rows, k), NaN for a parameter the method lacks
      trials/iterations        int32
      trials/wall_time_s       float64
      trials/meta              string  JSON: worker, device, error, attempts,
                                       finished_at, task_key, proposed_by, info (final
                                       cost terms …)

``attrs["inputs"]`` records what the study read besides its own text (a specimen file's
path and SHA-256), so that ``resume`` can refuse a changed input.
``attrs["optimiser"]`` holds each (method, cell) optimiser's own state — GP-Hedge gains,
its last nominees, its seed counter — as plain JSON numbers, keyed ``method/n_haadf/n_chem``,
and is written in the same attribute update as ``n_committed``, so the state a resume
finds is the one that went with the last committed trial.

The row index is the trial id. Rows are appended by the one driver that holds the
lock; a row counts once ``attrs["n_committed"]`` covers it, and that counter is
written last, after the row's columns (the commit point). A driver killed between
the two leaves one uncommitted row that the next append overwrites. The maps are
derived data: they are updated with every commit and rebuilt from the trials on
resume, so they can never disagree with the trials for long.

Changes of the grid are atomic, as zarr's own consistency model allows (one object is
written whole, or not at all: the group's ``zarr.json`` holds every attribute). The
grid and the maps live in a *generation*: ``grid/`` and ``maps/`` are generation 0 (every
new store), ``g<k>/grid/`` and ``g<k>/maps/`` generation k. Growing the grid writes the
next generation beside the current one, then switches ``attrs["generation"]``, together
with the new spec and its hash, in one attribute write; readers use only the generation
that attribute names. A change killed at any write leaves the old generation current
and a leftover that the next writable open deletes.

One writer: the driver holds an exclusive ``flock`` on the store directory itself for
its lifetime (the kernel releases it when the driver dies, however it dies), so no file
inside the store, ``.tomosweep.lock`` included, is the lock: removing it lets nobody in.
``.tomosweep.lock`` only says who holds the lock; it is never followed through a
symbolic link.

Fill values: a column's fill value is one no trial can hold (method, status and
iterations -1, tilt counts 0), so a deleted chunk reads as impossible values; and a
chunk that covers a committed row is therefore always stored, so a missing one is
damage. :meth:`SweepStore.audit` finds both, and rows beyond the commit counter that
hold written trials.

Only JSON attributes and numeric / UTF-8 string arrays are stored; no pickles.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep import __version__
from tomosweep.compat import zarr_settle, zarr_write_many
from tomosweep.errors import StoreError
from tomosweep.results.audit import StoreAudit, map_difference, merged_maps, replicate_problem, rows_intact
from tomosweep.results.lock import StoreLock

FORMAT = "tomosweep-sweep-store"
# 2: the fused method's lambda_haadf became relative to the data's balance point, so a
# format-1 store's trials answer a different question (their λ1 were absolute).
# 3: per-cell optimiser state (attrs["optimiser"]) and each trial's proposer (meta
# "proposed_by"). A format-2 store is upgraded when opened for writing: its cells start
# with fresh GP-Hedge gains, and its trials say "" for the proposer.
log = logging.getLogger(__name__)

FORMAT_VERSION = 3
_UPGRADABLE = {2}
_FORMAT_CHANGES = {
    1: "format 1 stored the fused method's lambda_haadf as an absolute weight; it is now relative "
    "to the data's balance point, so those trials cannot be continued. Export it with the tomosweep "
    "that wrote it, or run the study again",
}
OK, FAILED, PRUNED = "ok", "failed", "pruned"
_STATUS_CODE = {OK: 0, FAILED: 1, PRUNED: 2}
_STATUS_NAME = {v: k for k, v in _STATUS_CODE.items()}
_CHUNK = 256
# what a trial column holds where no trial was written: a value no trial can hold
_FILL = {"method": -1, "status": -1, "iterations": -1, "n_haadf": 0, "n_chem": 0}

_COLUMNS_1D = {
    "method": "int8",
    "n_haadf": "int32",
    "n_chem": "int32",
    "status": "int8",
    "nrmse": "float64",
    "iterations": "int32",
    "wall_time_s": "float64",
}


@dataclass(frozen=True)
class TrialRecord:
    """One finished or failed trial: small, immutable, what a worker sends back.

    ``params`` maps the method's parameter names to the values tried; ``nrmse`` is
    the mean over ``nrmse_elements`` (Schwartz 2024 Methods), NaN for a failed trial,
    whose ``error`` says why. ``info`` holds small JSON extras (final cost terms).
    ``task_key`` names the Dask task that produced it (unique per submission), and
    ``trial_id`` is the store row, assigned when the record is appended.
    """

    method: str
    n_haadf: int
    n_chem: int
    params: Mapping[str, float]
    status: str
    nrmse: float = math.nan
    nrmse_elements: tuple[float, ...] = ()
    iterations: int = 0
    wall_time_s: float = 0.0
    worker: str = ""
    device: str = ""
    error: str = ""
    attempts: int = 1
    finished_at: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)
    task_key: str = ""
    trial_id: int = -1
    proposed_by: str = ""  # EI, LCB, PI (GP-Hedge), random or warm-start

    @property
    def ok(self) -> bool:
        """Whether the trial finished (status ``OK``) rather than failed or was pruned."""
        return self.status == OK

    @property
    def cell(self) -> tuple[int, int]:
        """The grid cell ``(n_haadf, n_chem)`` the trial ran at."""
        return (self.n_haadf, self.n_chem)


def _zarr() -> Any:
    import zarr

    return zarr


def check_store_location(path: str | os.PathLike[str]) -> Path:
    """Refuse a new store's path that cannot be created: call it before any work starts."""
    path = Path(path)
    if path.exists():
        raise StoreError(
            f"{path} already exists. Resume it with `tomosweep resume {path}`, or choose a new --store path."
        )
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise StoreError(f"cannot create the store {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create the store {path}: {parent} is not writable")
    return path


class SweepStore:
    """A study's zarr store. Use :meth:`create` or :meth:`open`; close (or ``with``) to release the lock.

    Opened writable, the store holds an exclusive lock: a second writer gets
    :class:`~tomosweep.errors.StoreLockedError`. Read-only opens never lock.
    """

    def __init__(self, path: Path, group: Any, lock: StoreLock | None) -> None:
        self.path = path
        self._group = group
        self._lock = lock
        attrs = dict(group.attrs)
        self._attrs = attrs
        self.methods: tuple[str, ...] = tuple(attrs["methods"])
        self.param_names: tuple[str, ...] = tuple(attrs["param_names"])
        self.elements: tuple[str, ...] = tuple(attrs["elements"])
        self._generation = _generation_of(attrs)
        grid = _prefix(self._generation)
        self.n_haadf: tuple[int, ...] = tuple(int(v) for v in group[f"{grid}grid/n_haadf"][:])
        self.n_chem: tuple[int, ...] = tuple(int(v) for v in group[f"{grid}grid/n_chem"][:])
        self._n_committed = int(attrs.get("n_committed", 0))
        self._columns = {name: group[f"trials/{name}"] for name in (*_COLUMNS_1D, "nrmse_elements", "params", "meta")}
        if lock is not None:
            self._even_out_columns()
        self._map_arrays = self._open_maps()
        self._validate()
        self.map_damage = ""  # why the stored maps could not be read ("" when they could)
        try:
            self._maps = {m: {name: arr[...] for name, arr in arrays.items()} for m, arrays in self._map_arrays.items()}
        except Exception as exc:  # a deleted or truncated chunk: zarr and its codecs raise many types
            # derived data: every reader gets them from the trials, and a resume (or check --repair) writes them
            self.map_damage = f"{type(exc).__name__}: {exc}"
            log.warning("%s: the stored maps cannot be read (%s); using maps rebuilt from the trials", path, exc)
            grid = (len(self.n_haadf), len(self.n_chem), len(self.param_names))
            self._maps = {m: _empty_maps(*grid) for m in self.methods}
            with contextlib.suppress(StoreError):  # trials unreadable as well: the audit and check say so
                self._maps = self._fresh_maps(self.audit().damaged_rows)

    @property
    def generation(self) -> int:
        """Which grid and maps are current (0: ``grid/``, ``maps/``; k: ``g<k>/grid/``, ``g<k>/maps/``)."""
        return self._generation

    def _even_out_columns(self) -> None:
        """Grow every trial column to the longest one's length: a driver killed while it grew
        them one by one leaves them uneven, and growing only adds fill rows."""
        longest = max(arr.shape[0] for arr in self._columns.values())
        with self._disk_guard():
            for arr in self._columns.values():
                if arr.shape[0] < longest:
                    log.info(
                        "%s: growing %s to %d rows (a driver stopped while growing it)", self.path, arr.path, longest
                    )
                    arr.resize((longest, *arr.shape[1:]))

    def _disk_guard(self) -> contextlib.AbstractContextManager[None]:
        return _disk_guard(self.path, self._n_committed)

    def _validate(self) -> None:
        """Check the attributes and array shapes against each other: a damaged store is one message."""
        problems = []
        n = self._attrs.get("n_committed", 0)
        rows = {name: arr.shape[0] for name, arr in self._columns.items()}
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            problems.append(f"n_committed is {n!r}, not a count of trials")
        elif any(r < n for r in rows.values()):
            problems.append(f"n_committed is {n} but the trial columns hold {min(rows.values())} rows")
        if len(set(rows.values())) > 1:
            problems.append(f"the trial columns differ in length ({rows})")
        if self._columns["params"].shape[1:] != (len(self.param_names),):
            problems.append(f"trials/params has {self._columns['params'].shape[1:]} columns for {self.param_names}")
        if self._columns["nrmse_elements"].shape[1:] != (len(self.elements),):
            problems.append(f"trials/nrmse_elements does not match the {len(self.elements)} elements")
        grid = (len(self.n_haadf), len(self.n_chem))
        # a tune's one cell may have no HAADF or no chemical tilts (a series of one kind only)
        if min(self.n_haadf + self.n_chem) < (0 if "data" in (self._attrs.get("spec") or {}) else 1):
            problems.append(
                f"the grid holds a tilt count below 1 (n_haadf {list(self.n_haadf)}, n_chem {list(self.n_chem)})"
            )
        for method, arrays in self._map_arrays.items():
            shapes = {name: arr.shape[:2] for name, arr in arrays.items()}
            if any(shape != grid for shape in shapes.values()):
                problems.append(f"maps/{method} is not on the {grid[0]} × {grid[1]} grid ({shapes})")
        if problems:
            raise StoreError(f"store {self.path} is damaged: " + "; ".join(problems))

    # ------------------------------------------------------------------ creation / opening

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        spec: Mapping[str, Any],
        spec_hash: str,
        methods: Sequence[str],
        param_names: Sequence[str],
        elements: Sequence[str],
        n_haadf: Sequence[int],
        n_chem: Sequence[int],
        inputs: Mapping[str, Any] | None = None,
        method_sources: Mapping[str, Any] | None = None,
    ) -> SweepStore:
        """Create a new, empty, locked store. An existing path is refused, never overwritten.

        ``inputs``: what the study read besides its own text (a specimen file's path and
        content hash), kept so that ``resume`` can refuse a changed input. ``method_sources``:
        where each method's code came from (built in, a plugin's distribution and version, or a
        module's path and SHA-256) and its parameters' kinds, read by commands that only read the
        store instead of importing a plugin.
        """
        path = Path(path)
        if path.exists():
            raise StoreError(
                f"{path} already exists. Resume it with `tomosweep resume {path}`, or choose a new --store path."
            )
        if not methods or not param_names or not elements or not n_haadf or not n_chem:
            raise StoreError("a store needs at least one method, parameter, element and grid value per axis")
        zarr = _zarr()
        check_store_location(path)
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            raise StoreError(f"{path} already exists (created just now by another process)") from None
        except OSError as exc:
            raise StoreError(f"cannot create the store {path}: {exc.strerror}") from None
        lock = StoreLock(path)
        lock.acquire()
        try:
            group = zarr.open_group(path, mode="a")  # "w" would delete the lock file just taken
            group.update_attributes(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "tomosweep_version": __version__,
                    "created": dt.datetime.now().isoformat(timespec="seconds"),
                    "spec": dict(spec),
                    "spec_hash": spec_hash,
                    "methods": list(methods),
                    "param_names": list(param_names),
                    "elements": list(elements),
                    "n_committed": 0,
                    "optimiser": {},
                    "inputs": _jsonable(dict(inputs or {})),
                    "method_sources": _jsonable(dict(method_sources or {})),
                }
            )
            group.create_array("grid/n_haadf", data=np.asarray(n_haadf, dtype="int32"))
            group.create_array("grid/n_chem", data=np.asarray(n_chem, dtype="int32"))
            for name, dtype in _COLUMNS_1D.items():
                fill = np.nan if dtype.startswith("float") else _FILL[name]
                group.create_array(f"trials/{name}", shape=(0,), chunks=(_CHUNK,), dtype=dtype, fill_value=fill)
            k, n_el = len(param_names), len(elements)
            group.create_array(
                "trials/nrmse_elements", shape=(0, n_el), chunks=(_CHUNK, n_el), dtype="float64", fill_value=np.nan
            )
            group.create_array("trials/params", shape=(0, k), chunks=(_CHUNK, k), dtype="float64", fill_value=np.nan)
            group.create_array("trials/meta", shape=(0,), chunks=(_CHUNK,), dtype=str)
            _create_maps(group, methods, len(n_haadf), len(n_chem), k)
        except BaseException:
            lock.release()
            raise
        return cls(path, group, lock)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = False) -> SweepStore:
        """Open an existing store; ``writable=True`` takes the driver lock."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no store at {path}: run a study first with `tomosweep run STUDY.toml --store {path}`")
        zarr = _zarr()
        try:
            group = zarr.open_group(path, mode="r+" if writable else "r")
            fmt = group.attrs.get("format")
        except Exception as exc:  # zarr raises several types for a non-store directory
            raise StoreError(f"{path} is not a tomosweep store (cannot be read as a zarr v3 group: {exc})") from None
        if fmt != FORMAT:
            raise StoreError(f"{path} is a zarr group but not a tomosweep store (attribute format={fmt!r})")
        version = group.attrs.get("format_version")
        if version != FORMAT_VERSION and version not in _UPGRADABLE:
            why = _FORMAT_CHANGES.get(version, "")
            raise StoreError(
                f"{path} has store format {version}; this tomosweep ({__version__}) reads format {FORMAT_VERSION}"
                + (f": {why}" if why else "")
            )
        lock = None
        if writable:
            lock = StoreLock(path)
            lock.acquire()
        try:
            if writable:
                _drop_leftovers(path, group)
                if version in _UPGRADABLE:
                    # one attribute write: the old format or the new one, never half
                    with _disk_guard(path, int(group.attrs.get("n_committed", 0) or 0)):
                        group.update_attributes({"format_version": FORMAT_VERSION, "optimiser": {}})
                    log.info("%s: store format %s upgraded to %s", path, version, FORMAT_VERSION)
            store = cls(path, group, lock)
        except KeyError as exc:
            if lock is not None:
                lock.release()
            raise StoreError(f"{path} is an incomplete tomosweep store (missing {exc})") from None
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return store

    def close(self) -> None:
        """Release the driver lock (if held). The store stays readable."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> SweepStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        """Whether this handle holds the store's driver lock (opened for writing)."""
        return self._lock is not None

    # ------------------------------------------------------------------ attributes

    @property
    def spec(self) -> dict[str, Any]:
        """The study the store was created for, as its JSON dict (a copy)."""
        return dict(self._attrs["spec"])

    @property
    def spec_hash(self) -> str:
        """The content hash of the stored study (resume refuses another study's file)."""
        return str(self._attrs["spec_hash"])

    @property
    def attrs(self) -> dict[str, Any]:
        """The store's root attributes (spec, hashes, version, commit counter…), a copy."""
        return dict(self._attrs)

    @property
    def n_committed(self) -> int:
        """How many trial rows the commit counter covers: the rows that count."""
        return self._n_committed

    @property
    def inputs(self) -> dict[str, Any]:
        """The inputs recorded at creation (e.g. ``{"phantom.file": {"path", "sha256"}}``)."""
        return dict(self._attrs.get("inputs") or {})

    def method_sources(self) -> dict[str, Any]:
        """Where each method's code came from and its parameters' kinds (empty in a store made before
        stores recorded it): see :meth:`create`."""
        raw = self._attrs.get("method_sources")
        return dict(raw) if isinstance(raw, Mapping) else {}

    def optimiser_state(self) -> dict[str, Any]:
        """Each cell optimiser's committed state, keyed ``method/n_haadf/n_chem`` (empty where the
        attribute is not a table: ``tomosweep check`` names that, and a resume refuses it)."""
        raw = self._attrs.get("optimiser") or {}
        return dict(raw) if isinstance(raw, Mapping) else {}

    def __len__(self) -> int:
        return self._n_committed

    def cell_index(self, n_haadf: int, n_chem: int) -> tuple[int, int]:
        """The ``(row, column)`` of a cell in the maps; a clear error for a cell not on the grid."""
        try:
            return self.n_haadf.index(int(n_haadf)), self.n_chem.index(int(n_chem))
        except ValueError:
            raise StoreError(
                f"cell ({n_haadf}, {n_chem}) is not on this store's grid: "
                f"n_haadf {list(self.n_haadf)} × n_chem {list(self.n_chem)}"
            ) from None

    # ------------------------------------------------------------------ writing

    def _require_writable(self) -> None:
        if self._lock is None:
            raise StoreError(f"{self.path} was opened read-only; only the driver that holds the lock writes")

    def append(self, record: TrialRecord, *, optimiser: Mapping[str, Any] | None = None) -> int:
        """Append one trial, commit it, and update the maps. Returns its trial id (row).

        ``optimiser`` (plain JSON, keyed ``method/n_haadf/n_chem``) updates the stored
        optimiser states in the same attribute write as the commit point.
        """
        self._require_writable()
        if record.method not in self.methods:
            raise StoreError(f"method {record.method!r} is not in this store ({', '.join(self.methods)})")
        if record.status not in _STATUS_CODE:
            raise StoreError(f"trial status must be one of {', '.join(_STATUS_CODE)}, not {record.status!r}")
        i, j = self.cell_index(record.n_haadf, record.n_chem)
        row = self._n_committed
        cols = self._columns
        unknown = set(record.params) - set(self.param_names)
        if unknown:
            raise StoreError(f"parameters {sorted(unknown)} are not in this store ({', '.join(self.param_names)})")
        if cols["method"].shape[0] <= row:
            with self._disk_guard():
                for arr in cols.values():
                    arr.resize((row + _CHUNK, *arr.shape[1:]))
        params = np.array([record.params.get(name, np.nan) for name in self.param_names], dtype="float64")
        per_element = np.full(len(self.elements), np.nan)
        per_element[: len(record.nrmse_elements)] = record.nrmse_elements
        meta = {
            "worker": record.worker,
            "device": record.device,
            "error": record.error,
            "attempts": int(record.attempts),
            "finished_at": float(record.finished_at),
            "task_key": record.task_key,
            "proposed_by": record.proposed_by,
            "info": _jsonable(record.info),
        }
        writes: list[tuple[Any, Any, Any]] = [
            (cols["method"], row, self.methods.index(record.method)),
            (cols["n_haadf"], row, int(record.n_haadf)),
            (cols["n_chem"], row, int(record.n_chem)),
            (cols["status"], row, _STATUS_CODE[record.status]),
            (cols["nrmse"], row, float(record.nrmse)),
            (cols["iterations"], row, int(record.iterations)),
            (cols["wall_time_s"], row, float(record.wall_time_s)),
            (cols["nrmse_elements"], row, per_element),
            (cols["params"], row, params),
            (cols["meta"], row, json.dumps(meta)),
        ]
        maps = {name: values.copy() for name, values in self._maps[record.method].items()}
        arrays = self._map_arrays[record.method]
        changed = _count_into(maps, i, j, _STATUS_CODE[record.status], float(record.nrmse), params)
        writes += [(arrays[name], ..., maps[name]) for name in changed]
        update: dict[str, Any] = {"n_committed": row + 1}
        if optimiser:
            update["optimiser"] = {**self.optimiser_state(), **_jsonable(optimiser)}
        with self._disk_guard():
            zarr_write_many(writes)
            self._group.update_attributes(update)  # the commit point: one write of zarr.json
        self._maps[record.method] = maps
        self._n_committed = row + 1
        self._attrs.update(update)
        return row

    def reset_optimiser_state(self, keys: Sequence[str]) -> None:
        """Drop the stored optimiser states of ``keys`` (they restart from the trials); an
        attribute that is not a table of states is dropped whole."""
        self._require_writable()
        kept = {k: v for k, v in self.optimiser_state().items() if k not in set(keys)}
        with self._disk_guard():
            self._group.update_attributes({"optimiser": kept})
        self._attrs["optimiser"] = kept

    def replicates(self) -> dict[str, Any]:
        """Reruns of cells' best weights under new noise seeds, keyed ``method/n_haadf/n_chem``.

        Only well-formed entries: a malformed one (edited by hand, written by something else)
        is left out with a log line; ``tomosweep check`` names it.
        """
        raw = self._attrs.get("replicates") or {}
        if not isinstance(raw, Mapping):
            log.warning("%s: attribute replicates is not a table; ignored", self.path)
            return {}
        bad = dict(self.replicate_problems())
        if bad:
            log.warning("%s: %d malformed replicate entries ignored (tomosweep check names them)", self.path, len(bad))
        return {k: v for k, v in raw.items() if k not in bad}

    def replicate_problems(self) -> list[tuple[str, str]]:
        """``(key, why)`` for every malformed entry of ``attrs["replicates"]``."""
        raw = self._attrs.get("replicates")
        if raw is None:
            return []
        if not isinstance(raw, Mapping):
            return [("", f"attribute replicates is a {type(raw).__name__}, not a table of cells")]
        out = []
        for key, entry in raw.items():
            why = replicate_problem(str(key), entry, self.methods, self.param_names)
            if why:
                out.append((str(key), why))
        return out

    def record_replicates(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store one cell's replicates (JSON: params, noise seeds, NRMSE per seed); replaces an earlier entry."""
        self._require_writable()
        merged = {**dict(self._attrs.get("replicates") or {}), key: _jsonable(dict(entry))}
        with self._disk_guard():
            self._group.update_attributes({"replicates": merged})
        self._attrs["replicates"] = merged

    def _fresh_maps(
        self,
        skip: Iterable[int] = (),
        n_haadf: Sequence[int] | None = None,
        n_chem: Sequence[int] | None = None,
        *,
        cols: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, dict[str, np.ndarray]]:
        """Maps computed from the committed trials (but rows in ``skip``), on this grid or the one given;
        ``cols``: the columns as already read (the audit's, with unreadable chunks as fill values)."""
        hs = tuple(int(v) for v in (self.n_haadf if n_haadf is None else n_haadf))
        cs = tuple(int(v) for v in (self.n_chem if n_chem is None else n_chem))
        fresh = {m: _empty_maps(len(hs), len(cs), len(self.param_names)) for m in self.methods}
        cols = self.columns() if cols is None else cols
        skipped = set(skip)
        for r in range(self._n_committed):
            h, c, m = int(cols["n_haadf"][r]), int(cols["n_chem"][r]), int(cols["method"][r])
            if r in skipped or h not in hs or c not in cs or not 0 <= m < len(self.methods):
                continue  # a damaged row, or a cell dropped from the grid: its trial stays, not its map entry
            _count_into(
                fresh[self.methods[m]],
                hs.index(h),
                cs.index(c),
                int(cols["status"][r]),
                float(cols["nrmse"][r]),
                cols["params"][r],
            )
        return fresh

    def rebuild_maps(self) -> None:
        """Recompute every map from the committed trials (after a crash, or a grid change).

        The maps are written in place: a rebuild cut short leaves maps that the next one
        (resume, or ``check --repair``) writes again; the trials are not touched.
        """
        log.info("%s: rebuilding the maps from %d committed trials", self.path, self._n_committed)
        self._require_writable()
        fresh = self._fresh_maps()
        self._write_maps(fresh)

    def _write_maps(self, maps: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        writes = [
            (self._map_arrays[m][name], ..., values) for m, arrays in maps.items() for name, values in arrays.items()
        ]
        with self._disk_guard():
            zarr_write_many(writes)
        self._maps = {m: {name: np.array(values) for name, values in arrays.items()} for m, arrays in maps.items()}
        self.map_damage = ""

    def add_to_maps(self, skip: Iterable[int] = ()) -> bool:
        """Count into the maps what the committed trials (but rows in ``skip``) hold and the maps
        lack, never lowering a count nor losing a best (:func:`merged_maps`). Unreadable maps are
        written afresh from the trials. Returns whether anything was written."""
        self._require_writable()
        fresh = self._fresh_maps(skip, cols=self._read_all_rows()[0])
        if self.map_damage:
            self._write_maps(fresh)
            return True
        merged = {m: merged_maps(self._maps[m], fresh[m]) for m in self.methods}
        same = all(
            np.array_equal(merged[m][k], self._maps[m][k], equal_nan=merged[m][k].dtype.kind == "f")
            for m in self.methods
            for k in _MAPS
        )
        if not same:
            self._write_maps(merged)
        return not same

    def recommit(self, rows: int) -> None:
        """Count ``rows`` more written rows as committed (``check --repair`` after ``n_committed``
        was lowered by hand). Only adds: the caller has checked that those rows hold intact trials."""
        self._require_writable()
        if rows <= 0:
            return
        n = self._n_committed + rows
        with self._disk_guard():
            self._group.update_attributes({"n_committed": n})
        self._n_committed = n
        self._attrs["n_committed"] = n

    def update_study(
        self,
        *,
        spec: Mapping[str, Any],
        spec_hash: str,
        n_haadf: Sequence[int],
        n_chem: Sequence[int],
    ) -> None:
        """Adopt an extended study: same methods and parameters, a grid that keeps every old value.

        Atomic (module docstring): the new grid and its maps, rebuilt from the trials, are
        written as the next generation beside the current one; one attribute write then
        switches the generation, the spec and its hash together; the old generation is
        deleted last. Killed at any point, the store holds the old study or the new one,
        and every committed trial (trials name their cell by tilt counts, never by index).
        """
        self._require_writable()
        missing_h = sorted(set(self.n_haadf) - set(n_haadf))
        missing_c = sorted(set(self.n_chem) - set(n_chem))
        if missing_h or missing_c:
            raise StoreError(
                f"the new grid drops values that have trials in {self.path} "
                f"(n_haadf {missing_h}, n_chem {missing_c}); a grid may only grow"
            )
        group, old, new = self._group, self._generation, self._generation + 1
        maps = self._fresh_maps(n_haadf=n_haadf, n_chem=n_chem)
        with self._disk_guard():
            # a group of its own: zarr rewrites every parent's zarr.json when it creates an array,
            # and the store's own must change only once, at the switch; "w" clears a leftover
            beside = _zarr().open_group(self.path / f"g{new}", mode="w")
            for name, values in (("n_haadf", n_haadf), ("n_chem", n_chem)):
                beside.create_array(f"grid/{name}", data=np.asarray(values, dtype="int32"))
            for method, arrays in maps.items():
                for name, values in arrays.items():
                    fill = np.nan if values.dtype.kind == "f" else 0
                    beside.create_array(f"maps/{method}/{name}", data=values, chunks=values.shape, fill_value=fill)
            switch = {"generation": new, "spec": dict(spec), "spec_hash": spec_hash}
            group.update_attributes(switch)  # the switch, one write: the old study or the new one, never half
        self._attrs.update(switch)
        self._generation = new
        self.n_haadf, self.n_chem = tuple(int(v) for v in n_haadf), tuple(int(v) for v in n_chem)
        self._map_arrays = self._open_maps()
        self._maps = {m: {name: np.array(v) for name, v in arrays.items()} for m, arrays in maps.items()}
        self.map_damage = ""
        try:
            with self._disk_guard():
                for name in ("grid", "maps") if old == 0 else (f"g{old}",):
                    if name in group:
                        del group[name]
        except StoreError as exc:  # the new study is in place; the next writable open removes the rest
            log.warning("%s: the previous grid could not be removed yet (%s)", self.path, exc)

    def _open_maps(self) -> dict[str, dict[str, Any]]:
        prefix = _prefix(self._generation)
        return {m: {name: self._group[f"{prefix}maps/{m}/{name}"] for name in _MAPS} for m in self.methods}

    # ------------------------------------------------------------------ integrity

    def audit(self) -> StoreAudit:
        """What is wrong with the trial rows, found without trusting any of them.

        - a chunk of a trial column that covers committed rows is missing (deleted) or
          cannot be read: those rows are *damaged* (their values read as fill values);
        - a committed row holds values no trial can hold (a method index out of range,
          a finished trial without NRMSE, metadata that is not JSON …): damaged;
        - rows after the commit counter hold written trials: one is a driver killed before
          its commit point; more than one means ``n_committed`` was lowered (``lowered``),
          and a resume would write over them;
        - the maps disagree with the intact rows.

        Nothing is written. ``check --repair`` acts on this: it only ever adds back.
        """
        n, rows = self._n_committed, self._columns["method"].shape[0]
        findings: list[str] = []
        values: dict[str, np.ndarray] = {}
        damaged = np.zeros(rows, dtype=bool)
        ambiguous: list[tuple[str, int]] = []  # missing chunks whose fill value a trial may hold (older stores)
        values, unreadable = self._read_all_rows()
        for name, k, exc in unreadable:
            lo, hi = k * _CHUNK, min(rows, (k + 1) * _CHUNK)
            damaged[lo:hi] = True
            if lo < n:
                findings.append(
                    f"trials/{name} chunk {k} (trials {lo}–{min(hi, n) - 1}) cannot be read ({exc}); "
                    "those trials are left as they are (restore the chunk from a backup)"
                )
        for name, arr in self._columns.items():
            for k in range(-(-n // _CHUNK)):
                lo, hi = k * _CHUNK, min(rows, (k + 1) * _CHUNK)
                if (name, k) in {(u[0], u[1]) for u in unreadable} or self._chunk_stored(name, k):
                    continue
                if name in _FILL and arr.fill_value != _FILL[name]:
                    ambiguous.append((name, k))  # an older store: the chunk may hold only fill values
                    continue
                if name in ("nrmse", "nrmse_elements") and np.all(values["status"][lo : min(hi, n)] == 1):
                    continue  # a chunk of failed trials only is all NaN, the fill value: never stored
                damaged[lo:hi] = True
                findings.append(
                    f"trials/{name} chunk {k} (trials {lo}–{min(hi, n) - 1}) is missing (deleted?): those trials "
                    "read as empty values and are left as they are (restore the chunk from a backup)"
                )
        bad_rows = ~rows_intact(values, len(self.methods))
        impossible = np.flatnonzero(bad_rows[:n] & ~damaged[:n])
        if impossible.size:
            shown = ", ".join(str(r) for r in impossible[:8]) + (" …" if impossible.size > 8 else "")
            findings.append(
                f"{impossible.size} committed trial(s) hold values no trial can hold ({shown}): left as they are"
            )
        damaged[:n] |= bad_rows[:n]
        # rows after the commit counter
        written = (
            np.flatnonzero((values["meta"][n:] != "") | (values["n_haadf"][n:] != 0) | (values["n_chem"][n:] != 0)) + n
        )
        run = 0
        while n + run < rows and not bad_rows[n + run] and not damaged[n + run]:
            run += 1
        lowered = written.size >= 2
        if lowered:
            findings.append(
                f"n_committed is {n} but trials {n}–{int(written.max())} after it hold written trials "
                f"(n_committed lowered by hand?): a resume would write over them; --repair counts the {run} "
                "intact one(s) back in"
            )
        elif run:
            findings.append(
                f"trial {n} is written but not committed (a driver stopped before its commit point): "
                "--repair counts it in, else the next trial is written over it"
            )
        # the maps against the intact rows
        intact_ids = [r for r in range(n) if not damaged[r]]
        fresh = self._fresh_maps(skip=set(range(n)) - set(intact_ids), cols=values)
        for name, k in ambiguous:
            stored_counts = {m: self._maps[m]["n_trials"] for m in self.methods}
            if any(not np.array_equal(fresh[m]["n_trials"], stored_counts[m]) for m in self.methods):
                lo, hi = k * _CHUNK, min(n, (k + 1) * _CHUNK)
                damaged[lo:hi] = True
                findings.append(
                    f"trials/{name} chunk {k} (trials {lo}–{hi - 1}) is not stored and the maps disagree with "
                    f"the trials: those trials may read as {self.methods[0] if name == 'method' else 'default'} "
                    "values wrongly; left as they are"
                )
                fresh = self._fresh_maps(skip=set(np.flatnonzero(damaged[:n]).tolist()), cols=values)
        missing_in_maps, beyond_maps = [], []
        if self.map_damage:
            findings.append(f"the maps cannot be read ({self.map_damage}): --repair rebuilds them from the trials")
        else:
            for m in self.methods:
                adds, extra = map_difference(self._maps[m], fresh[m])
                if adds:
                    missing_in_maps.append(m)
                if extra:
                    beyond_maps.append(m)
            if missing_in_maps:
                findings.append(
                    f"maps of {', '.join(missing_in_maps)} lack trials the committed rows hold: --repair adds them"
                )
            if beyond_maps and not damaged[:n].any() and not run:
                findings.append(
                    f"maps of {', '.join(beyond_maps)} count trials or bests that no committed row holds: "
                    "left as they are (the next resume recomputes them from the trials)"
                )
        return StoreAudit(
            findings=tuple(findings),
            damaged_rows=frozenset(np.flatnonzero(damaged[:n]).tolist()),
            uncommitted=run,
            lowered=bool(lowered),
        )

    def _read_all_rows(self) -> tuple[dict[str, np.ndarray], list[tuple[str, int, str]]]:
        """Every row of every trial column, chunk by chunk: a chunk that cannot be read reads as
        fill values and is listed as ``(column, chunk, why)``."""
        rows = self._columns["method"].shape[0]
        values, unreadable = {}, []
        for name, arr in self._columns.items():
            if name == "meta":
                column = np.full(rows, "", dtype=object)
            else:
                column = np.full((rows, *arr.shape[1:]), arr.fill_value, dtype=arr.dtype)
            for k in range(-(-rows // _CHUNK)):
                lo, hi = k * _CHUNK, min(rows, (k + 1) * _CHUNK)
                try:
                    column[lo:hi] = arr[lo:hi]
                except Exception as exc:  # a truncated chunk: zarr and its codecs raise many types
                    unreadable.append((name, k, type(exc).__name__))
            values[name] = column
        return values, unreadable

    def _chunk_stored(self, name: str, k: int) -> bool:
        """Whether chunk ``k`` of a trial column exists in the store (zarr's default chunk keys)."""
        arr = self._columns[name]
        key = "/".join(str(v) for v in (k, *([0] * (arr.ndim - 1))))
        return (self.path / "trials" / name / "c" / key).exists()

    # ------------------------------------------------------------------ reading

    def columns(self) -> dict[str, np.ndarray]:
        """The committed rows of every trial column, as NumPy arrays (``meta`` as str)."""
        n = self._n_committed
        try:
            return {name: np.asarray(arr[:n]) for name, arr in self._columns.items()}
        except Exception as exc:  # a deleted or truncated chunk: zarr and its codecs raise many types
            raise StoreError(
                f"store {self.path} is damaged: its committed trials cannot be read ({type(exc).__name__}: {exc})"
            ) from None

    def records(self) -> list[TrialRecord]:
        """Every committed trial as a :class:`TrialRecord`, in trial-id order."""
        cols = self.columns()
        out = []
        for r in range(self._n_committed):
            try:
                meta = json.loads(str(cols["meta"][r]))
            except ValueError:
                raise StoreError(
                    f"store {self.path} is damaged: trial {r}'s metadata is missing or not JSON "
                    f"(a deleted or truncated chunk of trials/meta?); `tomosweep check {self.path}` lists the damage"
                ) from None
            m, status = int(cols["method"][r]), int(cols["status"][r])
            if not 0 <= m < len(self.methods) or status not in _STATUS_NAME or not isinstance(meta, dict):
                # never a guess: a method index of -1 would otherwise read as the last method
                raise StoreError(
                    f"store {self.path} is damaged: trial {r} holds no valid method or status (a deleted chunk?); "
                    f"`tomosweep check {self.path}` lists the damage"
                )
            method = self.methods[m]
            params = {
                name: float(v) for name, v in zip(self.param_names, cols["params"][r], strict=True) if np.isfinite(v)
            }
            out.append(
                TrialRecord(
                    method=method,
                    n_haadf=int(cols["n_haadf"][r]),
                    n_chem=int(cols["n_chem"][r]),
                    params=params,
                    status=_STATUS_NAME[int(cols["status"][r])],
                    nrmse=float(cols["nrmse"][r]),
                    nrmse_elements=tuple(float(v) for v in cols["nrmse_elements"][r]),
                    iterations=int(cols["iterations"][r]),
                    wall_time_s=float(cols["wall_time_s"][r]),
                    worker=meta.get("worker", ""),
                    device=meta.get("device", ""),
                    error=meta.get("error", ""),
                    attempts=int(meta.get("attempts", 1)),
                    finished_at=float(meta.get("finished_at", 0.0)),
                    info=meta.get("info", {}),
                    task_key=meta.get("task_key", ""),
                    trial_id=r,
                    proposed_by=meta.get("proposed_by", ""),
                )
            )
        return out

    def maps(self, method: str) -> dict[str, np.ndarray]:
        """``best_nrmse``, ``best_params``, ``n_trials``, ``n_failed`` of one method (copies)."""
        if method not in self._maps:
            raise StoreError(f"method {method!r} is not in this store ({', '.join(self.methods)})")
        return {name: values.copy() for name, values in self._maps[method].items()}

    def finished_cells(self, method: str) -> list[tuple[int, int]]:
        """The cells where ``method`` has a finished trial, in grid order (a clear error for a method not searched)."""
        if method not in self._maps:
            raise StoreError(f"{self.path}: the study did not search {method!r} (it has {', '.join(self.methods)})")
        best = self._maps[method]["best_nrmse"]
        grid = [(i, h, j, c) for i, h in enumerate(self.n_haadf) for j, c in enumerate(self.n_chem)]
        return [(h, c) for i, h, j, c in grid if np.isfinite(best[i, j])]

    def best(self, method: str, cell: tuple[int, int]) -> tuple[float, dict[str, float]] | None:
        """The best finished trial of ``method`` at ``cell`` (as the maps keep it): its mean NRMSE and
        the parameters it ran with, by name; None while the cell has no finished trial.

        A parameter the trial did not have (another method's) is NaN in the maps and left out here.
        """
        if method not in self._maps:
            raise StoreError(f"method {method!r} is not in this store ({', '.join(self.methods)})")
        i, j = self.cell_index(*cell)
        maps = self._maps[method]
        nrmse = float(maps["best_nrmse"][i, j])
        if not math.isfinite(nrmse):
            return None
        values = maps["best_params"][i, j]
        params = {name: float(values[k]) for k, name in enumerate(self.param_names) if math.isfinite(float(values[k]))}
        return nrmse, params

    # ------------------------------------------------------------------ what a study derived from its inputs

    def write_prepared(self, name: str, arrays: Mapping[str, np.ndarray | None], meta: Mapping[str, Any]) -> None:
        """Keep what the driver derived once from the study's inputs (a tune's aligned series) in
        ``prepared/<name>/``; ``attrs["prepared"][name]`` (the scalars, JSON) is written last, so
        arrays without it are a leftover that the next write replaces."""
        self._require_writable()
        with self._disk_guard():
            for key, value in arrays.items():
                if value is not None:
                    self._group.create_array(f"prepared/{name}/{key}", data=np.asarray(value), overwrite=True)
            prepared = {**dict(self._attrs.get("prepared") or {}), name: _jsonable(dict(meta))}
            self._group.update_attributes({"prepared": prepared})
        self._attrs["prepared"] = prepared

    def read_prepared(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The arrays and scalars :meth:`write_prepared` kept under ``name`` (None if not complete)."""
        meta = (self._attrs.get("prepared") or {}).get(name)
        if not isinstance(meta, dict):
            return None
        try:
            group = self._group[f"prepared/{name}"]
            arrays = {key: np.asarray(arr[...]) for key, arr in group.arrays()}
        except Exception as exc:  # a deleted or truncated chunk: zarr and its codecs raise many types
            raise StoreError(
                f"store {self.path} is damaged: prepared/{name} cannot be read ({type(exc).__name__}: {exc})"
            ) from None
        return arrays, dict(meta)


def pruning_summary(records: Iterable[TrialRecord]) -> dict[tuple[str, int, int], dict[str, float]]:
    """Per (method, n_haadf, n_chem): trials pruned and the solver seconds that saved.

    The saving of one pruned trial is estimated as its wall time × (planned iterations /
    iterations run − 1): an upper bound where the run would have converged early.
    """
    out: dict[tuple[str, int, int], dict[str, float]] = {}
    for r in records:
        if r.status != PRUNED:
            continue
        entry = out.setdefault((r.method, r.n_haadf, r.n_chem), {"n_pruned": 0, "saved_s": 0.0})
        entry["n_pruned"] += 1
        pruned = r.info.get("pruned", {}) if isinstance(r.info, Mapping) else {}
        at, planned = int(pruned.get("at", 0) or 0), int(pruned.get("of", 0) or 0)
        if at > 0 and planned > at:
            entry["saved_s"] += r.wall_time_s * (planned / at - 1.0)
    return out


@contextlib.contextmanager
def _disk_guard(path: Path, n_committed: int) -> Iterator[None]:
    """A write that the disk refuses (full, over quota, read-only) is one clear error:
    the committed trials are safe, and resume continues once it can write again."""
    try:
        yield
    except OSError as exc:
        zarr_settle()  # the batch's other writes end before the error is said
        why = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}.get(exc.errno or 0)
        reason = f"{why} on the disk of {path}" if why else f"cannot write {path} ({exc.strerror or exc})"
        raise StoreError(
            f"{reason}: the {n_committed} committed trials are safe; "
            f"{'free some space' if why else 'fix that'} and run `tomosweep resume {path}`"
        ) from None
    except BaseException:  # a crash of a write, Ctrl-C: no write of the call goes on behind the caller
        zarr_settle()
        raise


def _generation_of(attrs: Mapping[str, Any]) -> int:
    generation = attrs.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise StoreError(f"attribute generation is {generation!r}, not a generation number")
    return generation


def _prefix(generation: int) -> str:
    """Where a generation's ``grid/`` and ``maps/`` groups live."""
    return "" if generation == 0 else f"g{generation}/"


def _drop_leftovers(path: Path, group: Any) -> None:
    """Delete what an interrupted grid change left beside the current generation (only the
    lock holder calls this; readers never look at anything the attribute does not name)."""
    current = _generation_of(group.attrs)
    # listed from the directory: zarr's own listing warns about the lock file
    stale = [p.name for p in path.iterdir() if re.fullmatch(r"g\d+", p.name) and p.name != f"g{current}"]
    if current != 0:
        stale += [name for name in ("grid", "maps") if (path / name).exists()]
    for name in stale:
        log.info("%s: removing %s, left by an interrupted grid change", path, name)
        with _disk_guard(path, int(group.attrs.get("n_committed", 0) or 0)):
            _remove_leftover(path, group, name)


def _remove_leftover(path: Path, group: Any, name: str, tries: int = 100) -> None:
    """Delete one leftover folder, again while something still writes into it.

    Nothing else holds the lock, but a grid change that failed in this process (a refused
    write) can leave some of zarr's own writes of a batch still running in zarr's loop: a file
    that appears while the folder is removed ("Directory not empty") or one renamed into place
    as it was listed ("No such file or directory"). Those end within moments, so the removal
    is tried again until the folder is gone; a folder that stays is removed at the next open.
    """
    transient = (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST)
    for _ in range(tries):
        try:
            del group[name]
        except OSError as exc:
            if exc.errno not in transient:
                raise
        if not (path / name).exists():
            return
        time.sleep(0.02)
    log.warning("%s: %s is still being written into; it is removed at the next open", path, name)


def _count_into(maps: dict[str, np.ndarray], i: int, j: int, status: int, nrmse: float, params: Any) -> list[str]:
    """Count one committed trial into a method's maps; return the maps it changed.

    Every trial counts; a failed one also counts as failed; a finished one below the
    cell's best becomes the best (a pruned trial is never a cell's best).
    """
    maps["n_trials"][i, j] += 1
    if status == _STATUS_CODE[FAILED]:
        maps["n_failed"][i, j] += 1
        return ["n_trials", "n_failed"]
    if status == _STATUS_CODE[OK] and math.isfinite(nrmse) and not nrmse >= maps["best_nrmse"][i, j]:
        maps["best_nrmse"][i, j] = nrmse
        maps["best_params"][i, j] = params
        return ["n_trials", "best_nrmse", "best_params"]
    return ["n_trials"]


def _empty_maps(n_h: int, n_c: int, k: int) -> dict[str, np.ndarray]:
    maps = {
        "best_nrmse": np.full((n_h, n_c), np.nan),
        "best_params": np.full((n_h, n_c, k), np.nan),
        "n_trials": np.zeros((n_h, n_c), dtype="int32"),
        "n_failed": np.zeros((n_h, n_c), dtype="int32"),
    }
    return maps


_MAPS = tuple(_empty_maps(1, 1, 1))


def _create_maps(group: Any, methods: Sequence[str], n_h: int, n_c: int, k: int) -> None:
    for method in methods:
        for name, values in _empty_maps(n_h, n_c, k).items():
            fill = np.nan if values.dtype.kind == "f" else 0
            group.create_array(
                f"maps/{method}/{name}", shape=values.shape, chunks=values.shape, dtype=values.dtype, fill_value=fill
            )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
