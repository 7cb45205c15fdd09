"""What the live page shows, read from a store's committed rows and the driver's heartbeat.

Everything here is computed from the committed trial rows alone (rows beyond
``attrs["n_committed"]`` are never read), so counts, bests and curves always agree with
each other. A driver that is growing the trial columns leaves them of unequal length
for a few milliseconds; such a read is retried, and the last good view kept meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import StoreError, TomosweepError
from tomosweep.results.store import SweepStore
from tomosweep.view.heartbeat import driver_state, read_live

log = logging.getLogger(__name__)

#: trials finished within this many seconds set the rate (trials per minute)
RATE_WINDOW_S = 600.0
_STATUS = ("ok", "failed", "pruned")


@dataclass
class Snapshot:
    """What the page shows, read from the store's committed rows (and the heartbeat)."""

    path: Path
    name: str
    methods: tuple[str, ...]
    param_names: tuple[str, ...]
    searched: dict[str, tuple[str, ...]]
    n_haadf: tuple[int, ...]
    n_chem: tuple[int, ...]
    trials_per_cell: int
    n_committed: int
    columns: dict[str, np.ndarray]
    meta: list[dict[str, Any]]
    live: dict[str, Any] | None = None
    #: why a cell's optimiser stopped before its cap (``budget.stop_tolerance``), keyed
    #: ``method/n_haadf/n_chem``; committed with the trials, so it agrees with them
    stopped: dict[str, str] = field(default_factory=dict)
    read_at: float = field(default_factory=time.time)
    note: str = ""  # why the last read failed, if it did (the view shown is the one before)

    @property
    def finished_at(self) -> np.ndarray:
        """When each committed trial finished (seconds since the epoch; 0 where not recorded)."""
        return np.array([float(m.get("finished_at", 0.0) or 0.0) for m in self.meta])

    @property
    def budget(self) -> int:
        """The study's trials over every method and cell."""
        return self.trials_per_cell * len(self.methods) * len(self.n_haadf) * len(self.n_chem)

    def running(self) -> dict[tuple[str, int, int], int]:
        """Trials in flight per (method, n_haadf, n_chem), from a fresh heartbeat only."""
        live = self.live
        if live is None or driver_state(live, self.read_at) != "running":
            return {}
        out = {}
        for key, n in dict(live.get("running") or {}).items():
            method, h, c = str(key).split("/")
            out[(method, int(h), int(c))] = int(n)
        return out


def _stopped(states: Mapping[str, Any]) -> dict[str, str]:
    """The reason of each cell that stopped early, from the stored optimiser states (as the exports read it)."""
    return {
        str(key): str(state["stopped"])
        for key, state in states.items()
        if isinstance(state, dict) and state.get("stopped")
    }


def _searched(spec: Mapping[str, Any], methods: Sequence[str], param_names: Sequence[str]) -> dict[str, tuple]:
    tables = spec.get("methods", {}) or {}
    return {m: tuple(n for n in param_names if isinstance((tables.get(m) or {}).get(n), Mapping)) for m in methods}


class StoreReader:
    """Reads snapshots of one store, read-only, keeping parsed rows between reads.

    Committed rows never change, so a read parses only the rows committed since the
    last one. Shared by every browser session of a page; thread-safe.
    """

    def __init__(self, path: str | os.PathLike[str], *, min_interval_s: float = 0.5) -> None:
        self.path = Path(path)
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last: Snapshot | None = None
        self._meta: list[dict[str, Any]] = []

    def _open(self, *, attempts: int = 5) -> SweepStore:
        for attempt in range(attempts):
            try:
                return SweepStore.open(self.path)
            except StoreError:
                # a driver growing the columns leaves them unequal for a moment: try again
                if attempt == attempts - 1 or not self.path.exists():
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def read(self) -> Snapshot:
        """A fresh snapshot (at most one store read per ``min_interval_s``; errors raise)."""
        with self._lock:
            if (
                self._last is not None
                and time.time() - self._last.read_at < self.min_interval_s
                and not self._last.note
            ):
                return self._last
            with self._open() as store:
                n = store.n_committed
                if n < len(self._meta):  # a different store at this path: start over
                    self._meta = []
                columns = store.columns()
                for raw in columns["meta"][len(self._meta) :]:
                    try:
                        self._meta.append(json.loads(str(raw)))
                    except ValueError:
                        self._meta.append({})
                snapshot = Snapshot(
                    path=self.path,
                    name=str(store.spec.get("name", "study")),
                    methods=store.methods,
                    param_names=store.param_names,
                    searched=_searched(store.spec, store.methods, store.param_names),
                    n_haadf=store.n_haadf,
                    n_chem=store.n_chem,
                    trials_per_cell=int((store.spec.get("budget") or {}).get("trials_per_cell", 0) or 0),
                    n_committed=n,
                    columns={k: v for k, v in columns.items() if k != "meta"},
                    meta=self._meta[:n],
                    live=read_live(self.path),
                    stopped=_stopped(store.optimiser_state()),
                )
            self._last = snapshot
            return snapshot

    def read_or_last(self) -> Snapshot | None:
        """A fresh snapshot; on a read error the previous one, with ``note`` saying why."""
        try:
            return self.read()
        except TomosweepError as exc:
            log.debug("reading %s failed: %s", self.path, exc)
            with self._lock:
                if self._last is not None:
                    self._last.note = str(exc)
                return self._last


# ---------------------------------------------------------------------------- what the page computes


def cell_table(snap: Snapshot) -> dict[str, list[Any]]:
    """One row per (method, cell), in method-then-grid order: counts, best NRMSE, best weights, and
    why the cell stopped before its cap ("" while it has not)."""
    cols, n_h, n_c = snap.columns, len(snap.n_haadf), len(snap.n_chem)
    n_cells = len(snap.methods) * n_h * n_c
    h_index = {h: i for i, h in enumerate(snap.n_haadf)}
    c_index = {c: j for j, c in enumerate(snap.n_chem)}
    rows = np.arange(snap.n_committed)
    i = np.array([h_index.get(int(h), -1) for h in cols["n_haadf"]], dtype=int)
    j = np.array([c_index.get(int(c), -1) for c in cols["n_chem"]], dtype=int)
    on_grid = (i >= 0) & (j >= 0)
    key = np.where(on_grid, cols["method"].astype(int) * n_h * n_c + i * n_c + j, n_cells)
    count = np.bincount(key, minlength=n_cells + 1)[:n_cells]
    failed = np.bincount(key[cols["status"] == 1], minlength=n_cells + 1)[:n_cells]
    pruned = np.bincount(key[cols["status"] == 2], minlength=n_cells + 1)[:n_cells]
    best = np.full(n_cells, np.nan)
    best_row = np.full(n_cells, -1)
    finite = on_grid & (cols["status"] == 0) & np.isfinite(cols["nrmse"])
    # the first row of each cell's minimum, as the store's maps keep it (a tie keeps the earlier trial)
    order = np.lexsort((rows[finite], cols["nrmse"][finite], key[finite]))
    first = np.unique(key[finite][order], return_index=True)
    for k, at in zip(*first, strict=True):
        r = rows[finite][order][at]
        best[k], best_row[k] = cols["nrmse"][r], r
    running = snap.running()
    table: dict[str, list[Any]] = {k: [] for k in ("method", "n_haadf", "n_chem", "done", "failed", "pruned")}
    table.update({"running": [], "best_nrmse": [], "best_weights": [], "best_trial": [], "budget": [], "stopped": []})
    for m, method in enumerate(snap.methods):
        for a, h in enumerate(snap.n_haadf):
            for b, c in enumerate(snap.n_chem):
                k = m * n_h * n_c + a * n_c + b
                table["method"].append(method)
                table["n_haadf"].append(h)
                table["n_chem"].append(c)
                table["done"].append(int(count[k]))
                table["budget"].append(snap.trials_per_cell)
                table["failed"].append(int(failed[k]))
                table["pruned"].append(int(pruned[k]))
                table["running"].append(int(running.get((method, h, c), 0)))
                table["best_nrmse"].append(float(best[k]))
                table["best_trial"].append(int(best_row[k]))
                weights = ""
                if best_row[k] >= 0:
                    params = cols["params"][best_row[k]]
                    weights = ", ".join(
                        f"{name} {params[snap.param_names.index(name)]:.3g}" for name in snap.searched[method]
                    )
                table["best_weights"].append(weights)
                table["stopped"].append(snap.stopped.get(f"{method}/{h}/{c}", ""))
    return table


def colour_scale(best: Sequence[float]) -> tuple[float, float]:
    """The heatmap's shared scale, as the export draws it: the finite best NRMSE's range."""
    finite = np.asarray([v for v in best if math.isfinite(v)])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return (low, high + 1e-3) if low == high else (low, high)


def heat_label(value: float) -> str:
    """A heatmap cell's text, as in the export: two decimals, "–" without a finished trial."""
    return "–" if not math.isfinite(value) else f"{value:.2f}"


def progress(snap: Snapshot, now: float | None = None) -> dict[str, Any]:
    """Trials done, failed, pruned, running; trials per minute; seconds to the budget; workers."""
    now = time.time() if now is None else now
    status = snap.columns["status"]
    live = snap.live or {}
    state = driver_state(snap.live, now)
    budget = int(live.get("budget") or snap.budget) if state == "running" else snap.budget
    done = snap.n_committed
    finished = snap.finished_at
    finished = finished[finished > 0]
    rate = math.nan
    if state == "running":
        since = max(now - RATE_WINDOW_S, float(live.get("started") or now - RATE_WINDOW_S))
        recent = int((finished >= since).sum())
        if now - since > 1.0 and recent:
            rate = recent / (now - since) * 60.0
    elif finished.size > 1 and finished.max() > finished.min():
        rate = (finished.size - 1) / (finished.max() - finished.min()) * 60.0  # over the whole study
    remaining = max(0, budget - done)
    eta = remaining / rate * 60.0 if state == "running" and math.isfinite(rate) and rate > 0 else math.nan
    return {
        "done": done,
        "budget": budget,
        "failed": int((status == 1).sum()),
        "pruned": int((status == 2).sum()),
        "running": int(sum(snap.running().values())),
        "rate_per_min": rate,
        "eta_s": eta,
        "state": state,
        "workers": int(live.get("workers", 0) or 0) if state == "running" else 0,
        "threads": int(live.get("threads", 0) or 0) if state == "running" else 0,
        "heartbeat_age_s": now - float(live["updated"]) if live.get("updated") else math.nan,
        "dashboard": live.get("dashboard") if state == "running" else None,
        "last_trial_at": float(finished.max()) if finished.size else math.nan,
    }


def cell_trials(snap: Snapshot, cell: tuple[int, int]) -> dict[str, list[Any]]:
    """The committed trials of one cell (every method), in trial order, as table columns."""
    cols = snap.columns
    rows = np.flatnonzero((cols["n_haadf"] == cell[0]) & (cols["n_chem"] == cell[1]))
    searched = [n for n in snap.param_names if any(n in s for s in snap.searched.values())]
    out: dict[str, list[Any]] = {k: [] for k in ("trial", "method", "status", "nrmse", "iterations", "wall_time_s")}
    out.update({name: [] for name in searched})
    out.update({"worker": [], "proposed_by": [], "finished": [], "error": []})
    for r in rows:
        method = snap.methods[int(cols["method"][r])]
        meta = snap.meta[r] if r < len(snap.meta) else {}
        out["trial"].append(int(r))
        out["method"].append(method)
        out["status"].append(_STATUS[int(cols["status"][r])])
        out["nrmse"].append(float(cols["nrmse"][r]))
        out["iterations"].append(int(cols["iterations"][r]))
        out["wall_time_s"].append(float(cols["wall_time_s"][r]))
        for name in searched:
            value = cols["params"][r][snap.param_names.index(name)]
            out[name].append(float(value) if name in snap.searched[method] else math.nan)
        out["worker"].append(str(meta.get("worker", "")))
        out["proposed_by"].append(str(meta.get("proposed_by", "")))
        at = float(meta.get("finished_at", 0.0) or 0.0)
        out["finished"].append(dt.datetime.fromtimestamp(at).strftime("%H:%M:%S") if at > 0 else "")
        out["error"].append(str(meta.get("error", "")))
    return out


def best_so_far(snap: Snapshot, cell: tuple[int, int], method: str) -> tuple[np.ndarray, np.ndarray]:
    """Trial number within the cell (1, 2, …) and the best NRMSE so far (NaN until one finished)."""
    cols = snap.columns
    rows = (cols["n_haadf"] == cell[0]) & (cols["n_chem"] == cell[1]) & (cols["method"] == snap.methods.index(method))
    values = np.where(cols["status"][rows] == 0, cols["nrmse"][rows], np.inf)
    values = np.where(np.isfinite(values), values, np.inf)
    best = np.minimum.accumulate(values) if values.size else values
    return np.arange(1, best.size + 1), np.where(np.isfinite(best), best, np.nan)
