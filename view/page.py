"""A live page over a sweep store: ``tomosweep view S.zarr``.

A Bokeh server application that reads the store read-only — :meth:`SweepStore.open`
without ``writable`` takes no lock and writes nothing — so it is safe beside a driver
that is writing, and just as useful after the study ended. Every few seconds it opens
the store again and shows:

- the NRMSE heatmap per method, drawn like the export's (:func:`~tomosweep.results.export.heatmap_figure`):
  chemical tilts along x, HAADF tilts along y with the fewest at the bottom, reversed
  viridis on one colour scale shared by all methods, the best mean NRMSE written in each
  cell to two decimals ("–" where a cell has no finished trial);
- per (method, cell): trials done of the budget, failed, pruned, running, the best NRMSE
  and the best weights; selecting a cell (in a heatmap or the table) shows its
  best-so-far curve, its trials and, where the caller supplies a drawer, the landscape
  the optimiser sees;
- the study's progress: trials per minute, time to the budget, and the workers
  connected, read from the driver's heartbeat beside the store.

Everything shown is computed from the committed trial rows alone (rows beyond
``attrs["n_committed"]`` are never read), so counts, bests and curves always agree with
each other. A driver that is growing the trial columns leaves them of unequal length
for a few milliseconds; such a read is retried, and the last good view kept meanwhile.

The heartbeat (``S.zarr.live.json``, beside the store like ``S.zarr.log``) is written by
the driver every few seconds, atomically (temporary file + ``os.replace``)::

    {"format": "tomosweep-live", "version": 1, "pid": …, "host": …, "started": epoch s,
     "updated": epoch s, "state": "running" | "finished" | "stopped",
     "workers": n, "threads": n, "running": {"method/n_haadf/n_chem": n, …},
     "budget": total trials, "dashboard": Dask dashboard link or null}

This module depends on no other tomosweep package but :mod:`tomosweep.results` and the
error family; the sweep layer passes in what it knows (the landscape drawer).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime as dt
import html
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import StoreError, TomosweepError
from tomosweep.results.store import SweepStore

log = logging.getLogger(__name__)

LIVE_FORMAT = "tomosweep-live"
LIVE_VERSION = 1
#: seconds without a heartbeat after which the driver counts as gone
STALE_S = 20.0
#: trials finished within this many seconds set the rate (trials per minute)
RATE_WINDOW_S = 600.0
_STATUS = ("ok", "failed", "pruned")

#: a drawer of one cell's landscape: (store path, (n_haadf, n_chem)) -> [(caption, PNG bytes), …]
Landscape = Callable[[Path, tuple[int, int]], Sequence[tuple[str, bytes]]]


# ---------------------------------------------------------------------------- heartbeat file


def live_path(store: str | os.PathLike[str]) -> Path:
    """Where the driver's heartbeat for ``store`` lives: ``<store>.live.json``, beside it."""
    return Path(f"{Path(store)}.live.json")


def live_file_is_ours(store: str | os.PathLike[str]) -> bool:
    """True when ``<store>.live.json`` is absent or a tomosweep heartbeat (safe to replace);
    never a symbolic link (replacing it would be harmless, but it was not put there by a driver)."""
    path = live_path(store)
    if path.is_symlink():
        return False
    if not path.exists():
        return True
    try:
        return json.loads(path.read_text()).get("format") == LIVE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_live(store: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Replace the heartbeat atomically: a reader sees the old file or the new one, never half.

    The temporary file is created exclusively and without following a link (a link planted
    at its name is refused, not written through); the rename replaces a link, never its target.
    """
    from tomosweep.nofollow import open_no_follow

    path = live_path(store)
    body = json.dumps({"format": LIVE_FORMAT, "version": LIVE_VERSION, **payload})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        if tmp.is_symlink():
            tmp.unlink()  # our own name: a link there is not ours to follow
    fd = open_no_follow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


#: the heartbeat's fields and what each must be; anything else, or of another type, is dropped
_LIVE_FIELDS: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "host": (str,),
    "started": (int, float),
    "updated": (int, float),
    "state": (str,),
    "workers": (int,),
    "threads": (int,),
    "budget": (int,),
    "dashboard": (str,),
    "running": (dict,),
}
_LIVE_STATES = ("running", "finished", "stopped")
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def local_link(url: Any) -> str | None:
    """``url`` when it is an http(s) address on this machine (127.0.0.1, localhost, [::1]), else None:
    the page shows no link a heartbeat could point elsewhere (``javascript:``, another host)."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or len(url) > 2000 or any(ch in url for ch in "\"'<> \t\r\n"):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a malformed port raises
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or host is None or parts.username or parts.password:
        return None
    shown = f"[{host}]" if ":" in host else host
    return url if shown in _LOCAL_HOSTS else None


def _sane_live(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A heartbeat with every field of the right type and range; junk fields are dropped."""
    live: dict[str, Any] = {"format": LIVE_FORMAT}
    for key, kinds in _LIVE_FIELDS.items():
        value = raw.get(key)
        if isinstance(value, kinds) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                continue
            if isinstance(value, int) and not 0 <= value < 2**53:
                continue
            live[key] = value
    if live.get("state") not in _LIVE_STATES:
        live.pop("state", None)
    if "dashboard" in live:
        live["dashboard"] = local_link(live["dashboard"])
    running = {}
    for key, n in dict(live.get("running") or {}).items():
        parts = str(key).split("/")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and isinstance(n, int) and 0 < n < 10**6:
            running[str(key)] = n
    live["running"] = running
    return live


def _driver_alive(live: Mapping[str, Any]) -> bool:
    """False when the heartbeat names a process on this host that does not exist (a stale or forged
    "running"); True when it exists or lives on another host (which cannot be asked)."""
    pid = live.get("pid")
    if live.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return live.get("host") != socket.gethostname()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def read_live(store: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The driver's last heartbeat, checked field by field, or None (no driver has published one,
    not ours, a link, or not JSON): whatever is on disk, the page gets plain, typed values."""
    path = live_path(store)
    try:
        if path.is_symlink() or path.stat().st_size > 1 << 20:
            return None
        live = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(live, dict) or live.get("format") != LIVE_FORMAT:
        return None
    return _sane_live(live)


def driver_state(live: Mapping[str, Any] | None, now: float) -> str:
    """``running`` (a fresh heartbeat), ``finished``, ``stopped``, ``gone`` (stale) or ``unknown``."""
    if not live:
        return "unknown"
    state = str(live.get("state", "running"))
    if state == "running" and (now - float(live.get("updated", 0.0)) > STALE_S or not _driver_alive(live)):
        return "gone"
    return state


# ---------------------------------------------------------------------------- a snapshot of the store


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
    read_at: float = field(default_factory=time.time)
    note: str = ""  # why the last read failed, if it did (the view shown is the one before)

    @property
    def finished_at(self) -> np.ndarray:
        return np.array([float(m.get("finished_at", 0.0) or 0.0) for m in self.meta])

    @property
    def budget(self) -> int:
        return self.trials_per_cell * len(self.methods) * len(self.n_haadf) * len(self.n_chem)

    def running(self) -> dict[tuple[str, int, int], int]:
        """Trials in flight per (method, n_haadf, n_chem), from a fresh heartbeat only."""
        if driver_state(self.live, self.read_at) != "running":
            return {}
        out = {}
        for key, n in dict(self.live.get("running") or {}).items():
            method, h, c = str(key).split("/")
            out[(method, int(h), int(c))] = int(n)
        return out


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
    """One row per (method, cell), in method-then-grid order: counts, best NRMSE, best weights."""
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
    table.update({"running": [], "best_nrmse": [], "best_weights": [], "best_trial": [], "budget": []})
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


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return "< 1 min"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _ago(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{_duration(seconds)} ago"


# ---------------------------------------------------------------------------- the Bokeh document


def _span(key: str, text: Any) -> str:
    """A value on the page, tagged so that a test (or a script) can read what a person sees."""
    return f'<span data-ts="{key}">{html.escape(str(text))}</span>'


def status_html(snap: Snapshot, now: float | None = None) -> str:
    """The page's progress line(s)."""
    p = progress(snap, now)
    state = p["state"]
    rate = "–" if not math.isfinite(p["rate_per_min"]) else f"{p['rate_per_min']:.1f}"
    lines = [
        f"{_span('done', p['done'])} of {_span('budget', p['budget'])} trials "
        f"({_span('failed', p['failed'])} failed, {_span('pruned', p['pruned'])} pruned), "
        f"{_span('running', p['running'])} running"
    ]
    if state == "running":
        lines.append(
            f"{_span('rate', rate)} trials/min over the last {RATE_WINDOW_S / 60:.0f} min · "
            f"{_span('eta', _duration(p['eta_s']))} to the budget · "
            f"{_span('workers', p['workers'])} workers connected ({p['threads']} threads)"
        )
        link = local_link(p["dashboard"])
        driver = f"driver running, heartbeat {_ago(p['heartbeat_age_s'])}"
        if link:
            driver += f' · <a href="{html.escape(link)}" target="_blank">Dask dashboard</a>'
        lines.append(driver)
    else:
        words = {
            "finished": "the driver finished",
            "stopped": "the driver stopped before the budget was spent (resume it to go on)",
            "gone": f"no driver: its last heartbeat was {_ago(p['heartbeat_age_s'])}",
            "unknown": "no driver has published a heartbeat beside this store",
        }
        lines.append(
            f"{_span('state', words.get(state, state))} · {rate} trials/min over the study · "
            f"last trial {_ago(time.time() - p['last_trial_at'] if math.isfinite(p['last_trial_at']) else math.nan)}"
        )
    if snap.note:
        lines.append(f"<i>reading the store failed just now, showing the view before: {html.escape(snap.note)}</i>")
    stamp = dt.datetime.fromtimestamp(snap.read_at).strftime("%H:%M:%S")
    lines.append(f"<small>read {html.escape(str(snap.path))} at {_span('read-at', stamp)} (read-only)</small>")
    return "<br>".join(lines)


class _Page:
    """One browser session's document: built once, refreshed by a periodic callback."""

    def __init__(
        self,
        doc: Any,
        reader: StoreReader,
        *,
        refresh_s: float,
        landscape: Landscape | None,
        executor: concurrent.futures.Executor,
    ) -> None:
        self.doc, self.reader, self.landscape, self.executor = doc, reader, landscape, executor
        self.refresh_s = refresh_s
        self.cell: tuple[int, int] | None = None
        self.grid: tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]] | None = None
        self.snap: Snapshot | None = None
        self._landscape_for: tuple[int, int] | None = None
        self._shown: tuple | None = None  # what the heatmaps and tables show: (trials, trials in flight)
        self._syncing = False
        from bokeh.models import Div

        self.title = Div(text="<h2>tomosweep view</h2>")
        self.header = Div(text="", sizing_mode="stretch_width")
        doc.title = "tomosweep view"
        doc.add_root(self._waiting())
        self.refresh()
        doc.add_periodic_callback(self.refresh, int(refresh_s * 1000))

    def _waiting(self) -> Any:
        from bokeh.models import Div

        self.wait_div = Div(text=f"waiting for the store {html.escape(str(self.reader.path))} to be created …")
        return self.wait_div

    # -------------------------------------------------------------- layout

    def _build(self, snap: Snapshot) -> None:
        """Lay the page out for this store's grid and methods (rebuilt when they change)."""
        from bokeh.layouts import column, row
        from bokeh.models import Div

        figures = self._build_heatmaps(snap)
        cells_table = self._build_cells_table(snap)
        self._build_selected_cell(snap)
        self.layout = column(
            self.title,
            self.header,
            self.heat_title,
            row(*figures),
            Div(text="<h3>per cell</h3>"),
            cells_table,
            Div(text="<h3>selected cell</h3>"),
            row(self.cell_div, self.curve),
            self.trials_table,
            self.landscape_div,
            sizing_mode="stretch_width",
        )
        self.doc.clear()
        self.doc.add_root(self.layout)

    def _build_heatmaps(self, snap: Snapshot) -> list[Any]:
        """One NRMSE map per method, drawn as the export draws them, with one shared colour bar."""
        from bokeh.models import (
            ColorBar,
            Div,
            LinearColorMapper,
            PrintfTickFormatter,
        )
        from bokeh.palettes import Viridis256

        self.grid = (snap.n_haadf, snap.n_chem, snap.methods)
        self.doc.title = f"tomosweep view — {snap.name}"
        self.title.text = f"<h2>tomosweep view — {html.escape(snap.name)}</h2>"
        # reversed viridis, as matplotlib's viridis_r in the export: low (good) NRMSE is yellow
        self.mapper = LinearColorMapper(palette=list(reversed(Viridis256)), low=0.0, high=1.0, nan_color="white")
        self.heat_sources: dict[str, Any] = {}
        x_factors = [str(c) for c in snap.n_chem]
        y_factors = [str(h) for h in snap.n_haadf]  # a y FactorRange starts at the bottom: origin="lower"
        side = max(220, 60 * len(x_factors) + 90)
        figures = [self._heatmap(snap, k, method, x_factors, y_factors, side) for k, method in enumerate(snap.methods)]
        # one colour bar for every panel, as the export's (its scale is shared)
        bar = ColorBar(
            color_mapper=self.mapper,
            title="best mean NRMSE",
            width=14,
            formatter=PrintfTickFormatter(format="%.3f"),  # never mistaken for a cell's two-decimal value
        )
        figures[-1].add_layout(bar, "right")
        figures[-1].width += 110
        self.heat_title = Div(text=f"<h3>{html.escape(snap.name)}: best NRMSE over the tilt grid</h3>")
        return figures

    def _heatmap(
        self, snap: Snapshot, k: int, method: str, x_factors: list[str], y_factors: list[str], side: int
    ) -> Any:
        """One method's map: cells coloured on the shared scale, each value written in its cell."""
        from bokeh.models import ColumnDataSource, FactorRange, HoverTool, TapTool
        from bokeh.plotting import figure

        source = ColumnDataSource(self._heat_data(snap, method, cell_table(snap), (0.0, 1.0)), name=f"heat-{method}")
        fig = figure(
            title=method,
            name=f"heatmap-{method}",
            x_range=FactorRange(*x_factors),
            y_range=FactorRange(*y_factors),
            width=side + (70 if k == 0 else 0),
            height=max(220, 50 * len(y_factors) + 90),
            tools="",
            toolbar_location=None,
            output_backend="svg",  # each cell's value is a <text> a person (and a test) can read
        )
        cells = fig.rect(
            x="x",
            y="y",
            width=1,
            height=1,
            source=source,
            fill_color={"field": "nrmse", "transform": self.mapper},
            line_color="white",
            selection_line_color="red",
            selection_line_width=3,
            nonselection_fill_alpha=1.0,
            nonselection_line_color="white",
        )
        fig.text(
            x="x",
            y="y",
            text="label",
            source=source,
            text_align="center",
            text_baseline="middle",
            text_font_size="11pt",
            text_color="colour",
            nonselection_text_alpha=1.0,  # a selected cell is outlined; the others stay readable
        )
        fig.add_tools(
            TapTool(renderers=[cells]),
            HoverTool(
                renderers=[cells],
                tooltips=[
                    ("cell", "@y HAADF × @x chemical tilts"),
                    ("best NRMSE", "@label"),
                    ("trials", "@done of @budget (@failed failed, @pruned pruned, @running running)"),
                    ("best weights", "@weights"),
                ],
            ),
        )
        fig.xaxis.axis_label = "chemical tilts"
        if k == 0:
            fig.yaxis.axis_label = "HAADF tilts"
        fig.grid.visible = False
        fig.outline_line_color = None
        source.selected.on_change("indices", self._on_heat_select)
        self.heat_sources[method] = source
        return fig

    def _build_cells_table(self, snap: Snapshot) -> Any:
        """Per cell: trials done / failed / pruned / running, best NRMSE and weights; a row selects the cell."""
        from bokeh.models import ColumnDataSource, DataTable, NumberFormatter, TableColumn

        number = NumberFormatter(format="0.0000", nan_format="–")
        self.cells_source = ColumnDataSource(self._cells_data(snap), name="cells")
        self.cells_source.selected.on_change("indices", self._on_table_select)
        cells_table = DataTable(
            source=self.cells_source,
            name="cells-table",
            columns=[
                TableColumn(field="method", title="method", width=110),
                TableColumn(field="cell", title="HAADF × chem", width=100),
                TableColumn(field="trials", title="done / budget", width=100),
                TableColumn(field="failed", title="failed", width=60),
                TableColumn(field="pruned", title="pruned", width=60),
                TableColumn(field="running", title="running", width=60),
                TableColumn(field="best_nrmse", title="best NRMSE", formatter=number, width=90),
                TableColumn(field="best_weights", title="best weights", width=360),
            ],
            index_position=None,
            reorderable=False,
            width=940,
            height=min(420, 28 * (len(self.cells_source.data["method"]) + 1) + 8),
            sortable=True,
        )
        return cells_table

    def _build_selected_cell(self, snap: Snapshot) -> None:
        """The selected cell's best-so-far curve, trials table and landscape (empty until a selection)."""
        from bokeh.models import ColumnDataSource, DataTable, Div
        from bokeh.palettes import Category10_10
        from bokeh.plotting import figure

        palette = {m: Category10_10[k % 10] for k, m in enumerate(snap.methods)}
        self.curve = figure(
            width=440,
            height=280,
            title="best-so-far NRMSE",
            x_axis_label="trial in the cell",
            y_axis_label="best NRMSE",
            tools="pan,wheel_zoom,reset",
            name="curve",
        )
        self.curve_sources = {}
        for method in snap.methods:
            src = ColumnDataSource({"trial": [], "best": [], "nrmse": []})
            self.curve.step(x="trial", y="best", source=src, mode="after", color=palette[method], legend_label=method)
            self.curve.scatter(x="trial", y="nrmse", source=src, color=palette[method], alpha=0.35, size=5)
            self.curve_sources[method] = src
        self.curve.legend.location = "top_right"
        self.curve.visible = False  # until a cell is selected (an empty plot has no range to show)
        self.cell_div = Div(text="<i>select a cell in a heatmap or the table</i>", width=440)
        self.trials_source = ColumnDataSource({}, name="trials")
        self.trials_table = DataTable(
            source=self.trials_source, columns=[], index_position=None, width=1100, height=260
        )
        self.landscape_div = Div(text="", sizing_mode="stretch_width")

    # -------------------------------------------------------------- data

    @staticmethod
    def _heat_data(snap: Snapshot, method: str, table: dict[str, list[Any]], scale: tuple[float, float]) -> dict:
        rows = [k for k, m in enumerate(table["method"]) if m == method]
        middle = (scale[0] + scale[1]) / 2
        values = [table["best_nrmse"][k] for k in rows]
        return {
            "x": [str(table["n_chem"][k]) for k in rows],
            "y": [str(table["n_haadf"][k]) for k in rows],
            "nrmse": values,
            "label": [heat_label(v) for v in values],
            "colour": ["white" if math.isfinite(v) and v > middle else "black" for v in values],
            "done": [table["done"][k] for k in rows],
            "budget": [table["budget"][k] for k in rows],
            "failed": [table["failed"][k] for k in rows],
            "pruned": [table["pruned"][k] for k in rows],
            "running": [table["running"][k] for k in rows],
            "weights": [table["best_weights"][k] or "–" for k in rows],
        }

    @staticmethod
    def _cells_data(snap: Snapshot, table: dict[str, list[Any]] | None = None) -> dict:
        table = table or cell_table(snap)
        return {
            "method": table["method"],
            "n_haadf": table["n_haadf"],
            "n_chem": table["n_chem"],
            "cell": [f"{h} × {c}" for h, c in zip(table["n_haadf"], table["n_chem"], strict=True)],
            "trials": [f"{d} / {b}" for d, b in zip(table["done"], table["budget"], strict=True)],
            "failed": table["failed"],
            "pruned": table["pruned"],
            "running": table["running"],
            "best_nrmse": table["best_nrmse"],
            "best_weights": table["best_weights"],
        }

    def refresh(self) -> None:
        snap = self.reader.read_or_last()
        if snap is None:
            return  # the store does not exist yet (``--wait``), or cannot be read: keep waiting
        if self.grid != (snap.n_haadf, snap.n_chem, snap.methods):
            self._build(snap)  # first read, or a grid grown by `resume --extend`
            self._shown = None
        self.snap = snap
        self.header.text = status_html(snap)
        shown = (snap.n_committed, tuple(sorted(snap.running().items())))
        if shown == self._shown:
            return  # nothing new: the browser keeps what it drew (and a selection in progress)
        self._shown = shown
        table = cell_table(snap)
        scale = colour_scale(table["best_nrmse"])
        self.mapper.update(low=scale[0], high=scale[1])
        for method, source in self.heat_sources.items():
            source.data = self._heat_data(snap, method, table, scale)
        self.cells_source.data = self._cells_data(snap, table)
        if self.cell is not None:
            self._show_cell(self.cell, draw_landscape=False)

    # -------------------------------------------------------------- selection

    def _on_heat_select(self, attr: str, old: list[int], new: list[int]) -> None:
        if self._syncing or not new or self.snap is None:
            return
        source = next(s for s in self.heat_sources.values() if s.selected.indices == new)
        k = new[0]
        self._select((int(source.data["y"][k]), int(source.data["x"][k])))

    def _on_table_select(self, attr: str, old: list[int], new: list[int]) -> None:
        if self._syncing or not new:
            return
        data = self.cells_source.data
        self._select((int(data["n_haadf"][new[0]]), int(data["n_chem"][new[0]])))

    def _select(self, cell: tuple[int, int]) -> None:
        self.cell = cell
        self._syncing = True
        try:
            for source in self.heat_sources.values():  # the cell is outlined in every method's map
                at = zip(source.data["y"], source.data["x"], strict=True)
                source.selected.indices = [k for k, (h, c) in enumerate(at) if (int(h), int(c)) == cell]
        finally:
            self._syncing = False
        self._show_cell(cell, draw_landscape=True)

    def _show_cell(self, cell: tuple[int, int], *, draw_landscape: bool) -> None:
        snap = self.snap
        if snap is None:
            return
        table = cell_table(snap)
        lines = [f"<b>{cell[0]} HAADF × {cell[1]} chemical tilts</b>"]
        for k, method in enumerate(table["method"]):
            if (table["n_haadf"][k], table["n_chem"][k]) != cell:
                continue
            lines.append(
                f"<b>{html.escape(method)}</b>: {table['done'][k]} of {table['budget'][k]} done, "
                f"{table['failed'][k]} failed, {table['pruned'][k]} pruned, {table['running'][k]} running; "
                f"best NRMSE {heat_label(table['best_nrmse'][k])}"
                + (f" ({table['best_nrmse'][k]:.4f})" if math.isfinite(table["best_nrmse"][k]) else "")
            )
            if table["best_weights"][k]:
                lines.append(f"&nbsp;&nbsp;best weights: {html.escape(table['best_weights'][k])}")
        self.cell_div.text = "<br>".join(lines)
        self.curve.visible = True
        for method, src in self.curve_sources.items():
            trial, best = best_so_far(snap, cell, method)
            cols = snap.columns
            rows = (
                (cols["n_haadf"] == cell[0])
                & (cols["n_chem"] == cell[1])
                & (cols["method"] == snap.methods.index(method))
            )
            nrmse = np.where(cols["status"][rows] == 0, cols["nrmse"][rows], np.nan)
            src.data = {"trial": trial, "best": best, "nrmse": nrmse}
        data = cell_trials(snap, cell)
        if [c.field for c in self.trials_table.columns] != list(data):
            self.trials_table.columns = [_trial_column(name, snap) for name in data]
        self.trials_source.data = data
        if draw_landscape and self.landscape is not None and self._landscape_for != cell:
            self._draw_landscape(cell)

    def _draw_landscape(self, cell: tuple[int, int]) -> None:
        self._landscape_for = cell
        self.landscape_div.text = f"<i>drawing the optimiser's landscape at {cell[0]} × {cell[1]} …</i>"
        future = self.executor.submit(self.landscape, self.reader.path, cell)

        def done(fut: concurrent.futures.Future) -> None:
            self.doc.add_next_tick_callback(lambda: self._show_landscape(cell, fut))

        future.add_done_callback(done)

    def _show_landscape(self, cell: tuple[int, int], fut: concurrent.futures.Future) -> None:
        if self.cell != cell:
            return  # another cell was selected meanwhile
        try:
            images = fut.result()
        except TomosweepError as exc:
            self.landscape_div.text = f"<i>no landscape at {cell[0]} × {cell[1]}: {html.escape(str(exc))}</i>"
            return
        except Exception as exc:  # a plotting failure must not take the page down
            log.warning("drawing the landscape at %s failed: %s", cell, exc, exc_info=True)
            self.landscape_div.text = f"<i>drawing the landscape failed: {html.escape(str(exc))}</i>"
            return
        parts = [f"<h3>the optimiser's landscape at {cell[0]} × {cell[1]}</h3>"]
        for caption, png in images:
            encoded = base64.b64encode(png).decode()
            parts.append(
                f'<figure style="display:inline-block;margin:0 1em 1em 0"><img src="data:image/png;base64,{encoded}" '
                f'style="max-width:640px"><figcaption>{html.escape(caption)}</figcaption></figure>'
            )
        self.landscape_div.text = "".join(parts)


def _trial_column(name: str, snap: Snapshot) -> Any:
    from bokeh.models import NumberFormatter, StringFormatter, TableColumn

    if name == "nrmse":
        formatter = NumberFormatter(format="0.0000", nan_format="–")
    elif name in snap.param_names or name == "wall_time_s":
        formatter = NumberFormatter(format="0.[00000]", nan_format="–")
    else:
        formatter = StringFormatter()
    return TableColumn(
        field=name, title=name.replace("_", " "), formatter=formatter, width=280 if name == "error" else 90
    )


# ---------------------------------------------------------------------------- the server


def _probe_port(host: str, port: int) -> int:
    """``port`` if it can be listened on at ``host`` (0: a free one), else ``OSError``.

    Checked here rather than left to Bokeh: tornado's ``bind_sockets`` leaves its socket
    open when the bind fails (a ``ResourceWarning``), and a clear message is wanted anyway.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tornado binds
        probe.bind((host, port))
        probe.listen(1)
        return int(probe.getsockname()[1])


def _origins(host: str, port: int) -> list[str]:
    """Where the page may be opened from (Bokeh checks the websocket's Origin)."""
    names = {"localhost", "127.0.0.1", host}
    if host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname(), socket.getfqdn()}
        with contextlib.suppress(OSError):
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    # Bokeh's allowlist splits host:port at every colon, so an IPv6 literal cannot be listed: a page
    # served on ::1 is opened as http://localhost:PORT (the browser reaches ::1 by that name)
    return sorted(f"{n}:{port}" for n in names if n and ":" not in n)


def page_url(host: str, port: int) -> str:
    if host == "::1":
        return f"http://localhost:{port}/"  # see _origins
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


class ViewServer:
    """The page's Bokeh server, running on its own thread and event loop. Stop with :meth:`stop`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refresh_s: float = 3.0,
        landscape: Landscape | None = None,
    ) -> None:
        self.path = Path(path)
        self.host = host
        self.port = _probe_port(host, port)
        self.refresh_s = refresh_s
        self.reader = StoreReader(self.path, min_interval_s=min(1.0, refresh_s / 2))
        self._landscape = landscape
        # one drawing at a time for every session: the study's workers need the cores
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tomosweep-landscape")
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: Any = None
        self._thread = threading.Thread(target=self._serve, name="tomosweep-view", daemon=True)

    @property
    def url(self) -> str:
        return page_url(self.host, self.port)

    def _document(self, doc: Any) -> None:
        _Page(doc, self.reader, refresh_s=self.refresh_s, landscape=self._landscape, executor=self._executor)

    def _serve(self) -> None:
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import Server
        from tornado.ioloop import IOLoop

        asyncio.set_event_loop(asyncio.new_event_loop())
        loop = IOLoop.current()
        try:
            server = Server(
                {"/": Application(FunctionHandler(self._document))},
                io_loop=loop,
                address=self.host,
                port=self.port,
                allow_websocket_origin=_origins(self.host, self.port),
            )
            server.start()
        except Exception as exc:
            self._error = exc
            self._ready.set()
            loop.close(all_fds=True)
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.start()
        finally:
            server.unlisten()
            server.stop(wait=False)
            loop.close(all_fds=True)

    def start(self, *, timeout: float = 30.0) -> ViewServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TomosweepError(f"the view of {self.path} did not start within {timeout:g} s")
        if self._error is not None:
            why = getattr(self._error, "strerror", None) or self._error
            raise TomosweepError(f"cannot serve the view on {self.host}:{self.port}: {why}; choose another --port")
        log.info("serving %s read-only at %s", self.path, self.url)
        return self

    def stop(self) -> None:
        """Close the server and its sessions; the store was never written."""
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ViewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    path: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    refresh_s: float = 3.0,
    landscape: Landscape | None = None,
    wait: bool = False,
) -> ViewServer:
    """Start serving the live page of the store at ``path``; return the running server.

    Parameters
    ----------
    path
        The study's store. It is opened read-only, never locked: safe beside a driver.
    host, port
        Where to listen; the default is this machine only (127.0.0.1) on a free port.
    refresh_s
        Seconds between two reads of the store by an open page.
    landscape
        Draws a selected cell's landscape (optional; the sweep layer passes one).
    wait
        Serve even though the store does not exist yet (a run about to create it): the
        page says it is waiting. Without it, a missing or unreadable store is an error
        now, before anything is served.
    """
    if refresh_s <= 0 or not math.isfinite(refresh_s):
        raise TomosweepError(f"--refresh must be a positive number of seconds, not {refresh_s}")
    if not (0 <= port <= 65535):
        raise TomosweepError(f"--port must be 0 (a free port) or 1–65535, not {port}")
    if not wait or Path(path).exists():
        StoreReader(path).read()  # a clear error for a missing or damaged store, before serving
    try:
        server = ViewServer(path, host=host, port=port, refresh_s=refresh_s, landscape=landscape)
    except OSError as exc:
        raise TomosweepError(
            f"cannot serve the view on {host}:{port}: {exc.strerror or exc}; choose another --port or --host"
        ) from None
    return server.start()
