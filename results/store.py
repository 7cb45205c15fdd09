"""The sweep store: one zarr v3 group per study, the contract for resume and export.

Layout (see ``DESIGN.md``; the per-method maps and the 2-D ``params`` /
``nrmse_elements`` columns are this project's reading of it, explained in the README)::

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
the two leaves an uncommitted row that the next append overwrites. The maps are
derived data: they are updated with every commit and rebuilt from the trials on
resume, so they can never disagree with the trials for long.

Only JSON attributes and numeric / UTF-8 string arrays are stored; no pickles.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep import __version__
from tomosweep.compat import zarr_write_many
from tomosweep.errors import StoreError, StoreLockedError

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
_LOCK_NAME = ".tomosweep.lock"

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
        return self.status == OK

    @property
    def cell(self) -> tuple[int, int]:
        return (self.n_haadf, self.n_chem)


def _hostname() -> str:
    return socket.gethostname()


class _Lock:
    """An exclusive ``flock`` on a file inside the store, released even on SIGKILL."""

    def __init__(self, store: Path) -> None:
        self.path = store / _LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"store {self.path.parent} cannot be written ({exc.strerror}): resuming needs write access; "
                "`tomosweep status` and `export` only read it"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise StoreLockedError(
                f"store {self.path.parent} is being written by another driver ({holder}). "
                "Only one driver may write a store: wait for it to finish, stop it, or use "
                "`tomosweep status` to watch it. Reading (status, export) works meanwhile."
            ) from None
        os.ftruncate(fd, 0)
        note = {"pid": os.getpid(), "host": _hostname(), "since": dt.datetime.now().isoformat(timespec="seconds")}
        os.write(fd, json.dumps(note).encode())
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            note = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {note['pid']} on {note['host']}, since {note['since']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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

    def __init__(self, path: Path, group: Any, lock: _Lock | None) -> None:
        self.path = path
        self._group = group
        self._lock = lock
        attrs = dict(group.attrs)
        self._attrs = attrs
        self.methods: tuple[str, ...] = tuple(attrs["methods"])
        self.param_names: tuple[str, ...] = tuple(attrs["param_names"])
        self.elements: tuple[str, ...] = tuple(attrs["elements"])
        self.n_haadf: tuple[int, ...] = tuple(int(v) for v in group["grid/n_haadf"][:])
        self.n_chem: tuple[int, ...] = tuple(int(v) for v in group["grid/n_chem"][:])
        self._n_committed = int(attrs.get("n_committed", 0))
        self._columns = {name: group[f"trials/{name}"] for name in (*_COLUMNS_1D, "nrmse_elements", "params", "meta")}
        self._map_arrays = self._open_maps()
        self._validate()
        try:
            self._maps = {m: {name: arr[...] for name, arr in arrays.items()} for m, arrays in self._map_arrays.items()}
        except Exception as exc:  # a deleted or truncated chunk: zarr and its codecs raise many types
            raise StoreError(
                f"store {path} is damaged: its maps cannot be read ({type(exc).__name__}: {exc}). "
                "The maps are derived data: `tomosweep resume` rebuilds them from the trials"
            ) from None

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
    ) -> SweepStore:
        """Create a new, empty, locked store. An existing path is refused, never overwritten.

        ``inputs``: what the study read besides its own text (a specimen file's path and
        content hash), kept so that ``resume`` can refuse a changed input.
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
        lock = _Lock(path)
        lock.acquire()
        try:
            group = zarr.open_group(path, mode="a")  # "w" would delete the lock file just taken
            group.attrs.update(
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
                }
            )
            group.create_array("grid/n_haadf", data=np.asarray(n_haadf, dtype="int32"))
            group.create_array("grid/n_chem", data=np.asarray(n_chem, dtype="int32"))
            for name, dtype in _COLUMNS_1D.items():
                fill = np.nan if dtype.startswith("float") else 0
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
        if version in _UPGRADABLE and writable:
            group.attrs.update({"format_version": FORMAT_VERSION, "optimiser": {}})
            log.info("%s: store format %s upgraded to %s", path, version, FORMAT_VERSION)
            version = FORMAT_VERSION
        if version != FORMAT_VERSION and version not in _UPGRADABLE:
            why = _FORMAT_CHANGES.get(version, "")
            raise StoreError(
                f"{path} has store format {version}; this tomosweep ({__version__}) reads format {FORMAT_VERSION}"
                + (f": {why}" if why else "")
            )
        lock = None
        if writable:
            lock = _Lock(path)
            lock.acquire()
        try:
            store = cls(path, group, lock)
        except KeyError as exc:
            if lock is not None:
                lock.release()
            raise StoreError(f"{path} is an incomplete tomosweep store (missing {exc})") from None
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
        return self._lock is not None

    # ------------------------------------------------------------------ attributes

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self._attrs["spec"])

    @property
    def spec_hash(self) -> str:
        return str(self._attrs["spec_hash"])

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._attrs)

    @property
    def n_committed(self) -> int:
        return self._n_committed

    @property
    def inputs(self) -> dict[str, Any]:
        """The inputs recorded at creation (e.g. ``{"phantom.file": {"path", "sha256"}}``)."""
        return dict(self._attrs.get("inputs") or {})

    def optimiser_state(self) -> dict[str, Any]:
        """Each cell optimiser's committed state, keyed ``method/n_haadf/n_chem``."""
        return dict(self._attrs.get("optimiser") or {})

    def __len__(self) -> int:
        return self._n_committed

    def cell_index(self, n_haadf: int, n_chem: int) -> tuple[int, int]:
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
        if cols["method"].shape[0] <= row:
            for arr in cols.values():
                arr.resize((row + _CHUNK, *arr.shape[1:]))
        unknown = set(record.params) - set(self.param_names)
        if unknown:
            raise StoreError(f"parameters {sorted(unknown)} are not in this store ({', '.join(self.param_names)})")
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
        maps, arrays = self._maps[record.method], self._map_arrays[record.method]
        changed = _count_into(maps, i, j, _STATUS_CODE[record.status], float(record.nrmse), params)
        writes += [(arrays[name], ..., maps[name]) for name in changed]
        zarr_write_many(writes)
        self._n_committed = row + 1
        update: dict[str, Any] = {"n_committed": self._n_committed}
        if optimiser:
            update["optimiser"] = {**self.optimiser_state(), **_jsonable(optimiser)}
        self._group.attrs.update(update)  # the commit point
        self._attrs.update(update)
        return row

    def reset_optimiser_state(self, keys: Sequence[str]) -> None:
        """Drop the stored optimiser states of ``keys`` (they restart from the trials)."""
        self._require_writable()
        kept = {k: v for k, v in self.optimiser_state().items() if k not in set(keys)}
        self._group.attrs["optimiser"] = kept
        self._attrs["optimiser"] = kept

    def replicates(self) -> dict[str, Any]:
        """Reruns of cells' best weights under new noise seeds, keyed ``method/n_haadf/n_chem``."""
        return dict(self._attrs.get("replicates") or {})

    def record_replicates(self, key: str, entry: Mapping[str, Any]) -> None:
        """Store one cell's replicates (JSON: params, noise seeds, NRMSE per seed); replaces an earlier entry."""
        self._require_writable()
        merged = {**self.replicates(), key: _jsonable(dict(entry))}
        self._group.attrs["replicates"] = merged
        self._attrs["replicates"] = merged

    def rebuild_maps(self) -> None:
        """Recompute every map from the committed trials (after a crash, or a grid change)."""
        log.info("%s: rebuilding the maps from %d committed trials", self.path, self._n_committed)
        self._require_writable()
        fresh = {m: _empty_maps(len(self.n_haadf), len(self.n_chem), len(self.param_names)) for m in self.methods}
        cols = self.columns()
        for r in range(self._n_committed):
            method = self.methods[cols["method"][r]]
            try:
                i, j = self.cell_index(cols["n_haadf"][r], cols["n_chem"][r])
            except StoreError:
                continue  # a cell dropped from the grid keeps its trials, not its map entry
            _count_into(fresh[method], i, j, int(cols["status"][r]), float(cols["nrmse"][r]), cols["params"][r])
        writes = []
        for method, maps in fresh.items():
            for name, values in maps.items():
                writes.append((self._map_arrays[method][name], ..., values))
        zarr_write_many(writes)
        self._maps = fresh

    def update_study(
        self,
        *,
        spec: Mapping[str, Any],
        spec_hash: str,
        n_haadf: Sequence[int],
        n_chem: Sequence[int],
    ) -> None:
        """Adopt an extended study: same methods and parameters, a grid that keeps every old value.

        Trials stay as they are (they name their cell by tilt counts); the maps are
        recreated on the new grid and rebuilt from the trials.
        """
        self._require_writable()
        missing_h = sorted(set(self.n_haadf) - set(n_haadf))
        missing_c = sorted(set(self.n_chem) - set(n_chem))
        if missing_h or missing_c:
            raise StoreError(
                f"the new grid drops values that have trials in {self.path} "
                f"(n_haadf {missing_h}, n_chem {missing_c}); a grid may only grow"
            )
        group = self._group
        for name, values in (("grid/n_haadf", n_haadf), ("grid/n_chem", n_chem)):
            group.create_array(name, data=np.asarray(values, dtype="int32"), overwrite=True)
        _create_maps(group, self.methods, len(n_haadf), len(n_chem), len(self.param_names), overwrite=True)
        group.attrs.update({"spec": dict(spec), "spec_hash": spec_hash})
        self._attrs.update({"spec": dict(spec), "spec_hash": spec_hash})
        self.n_haadf, self.n_chem = tuple(int(v) for v in n_haadf), tuple(int(v) for v in n_chem)
        self._map_arrays = self._open_maps()
        self.rebuild_maps()

    def _open_maps(self) -> dict[str, dict[str, Any]]:
        return {m: {name: self._group[f"maps/{m}/{name}"] for name in _MAPS} for m in self.methods}

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
                    "(a deleted or truncated chunk of trials/meta?)"
                ) from None
            method = self.methods[int(cols["method"][r])]
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


def _create_maps(group: Any, methods: Sequence[str], n_h: int, n_c: int, k: int, *, overwrite: bool = False) -> None:
    for method in methods:
        for name, values in _empty_maps(n_h, n_c, k).items():
            fill = np.nan if values.dtype.kind == "f" else 0
            group.create_array(
                f"maps/{method}/{name}",
                shape=values.shape,
                chunks=values.shape,
                dtype=values.dtype,
                fill_value=fill,
                overwrite=overwrite,
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
