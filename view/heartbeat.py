"""The driver's heartbeat beside a store: its file format, its writer and its reader.

The heartbeat (``S.zarr.live.json``, beside the store like ``S.zarr.log``) is written by
the driver every few seconds (:class:`Heartbeat`), atomically (temporary file +
``os.replace``), and read by the live page (:func:`read_live`)::

    {"format": "tomosweep-live", "version": 1, "pid": …, "host": …, "started": epoch s,
     "updated": epoch s, "state": "running" | "finished" | "stopped",
     "workers": n, "threads": n, "running": {"method/n_haadf/n_chem": n, …},
     "budget": total trials, "dashboard": Dask dashboard link or null}

It tells the page what the store cannot: the workers connected and the trials in flight.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tomosweep.nofollow import open_no_follow

log = logging.getLogger(__name__)

LIVE_FORMAT = "tomosweep-live"
LIVE_VERSION = 1
#: seconds without a heartbeat after which the driver counts as gone
STALE_S = 20.0


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


#: seconds between two heartbeats of a running driver
HEARTBEAT_S = 2.0


class Heartbeat:
    """Publishes a running driver's state beside its store, every ``interval_s`` seconds.

    A daemon thread writes ``<store>.live.json`` (the format above):
    the workers and threads the scheduler reports, the trials in flight per cell, the
    budget and the dashboard link. The driver loop only hands over the tickets in flight
    (:meth:`set_running`); the thread does the rest, so a long trial does not silence it.
    Nothing here may stop a study: a failed write is logged and tried again.
    """

    def __init__(
        self, store: str | os.PathLike[str], client: Any, *, budget: int, interval_s: float | None = None
    ) -> None:
        self.store = Path(store)
        self.client = client
        self.budget = budget
        self.interval_s = HEARTBEAT_S if interval_s is None else interval_s
        self._running: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self._dashboard = None
        with contextlib.suppress(Exception):  # a client without a dashboard, or a scheduler that is going
            self._dashboard = client.dashboard_link
        self._workers = (0, 0)

    def set_running(self, keys: Iterable[str]) -> None:
        """The cells of the trials in flight now (``method/n_haadf/n_chem``, one per trial)."""
        self._running = dict(collections.Counter(keys))  # a new dict: the thread reads it whole

    def _payload(self, state: str) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self._started,
            "updated": time.time(),
            "state": state,
            "workers": self._workers[0],
            "threads": self._workers[1],
            "running": self._running if state == "running" else {},
            "budget": self.budget,
            "dashboard": self._dashboard,
        }

    def _beat(self) -> None:
        try:
            threads = self.client.nthreads()
            self._workers = (len(threads), int(sum(threads.values())))
        except Exception as exc:  # a scheduler that is restarting answers nothing for a moment
            log.debug("heartbeat: the scheduler did not answer (%s)", exc)
        try:
            write_live(self.store, self._payload("running"))
        except OSError as exc:
            log.debug("heartbeat: cannot write beside %s (%s)", self.store, exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._beat()
            self._stop.wait(self.interval_s)

    def start(self) -> Heartbeat:
        """Start beating on a thread of its own (not at all beside a file that is not a heartbeat)."""
        if not live_file_is_ours(self.store):
            log.warning("%s.live.json is not a tomosweep heartbeat: the view will not show workers", self.store)
            return self
        self._thread = threading.Thread(target=self._loop, name="tomosweep-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, finished: bool) -> None:
        """Stop beating and say how the driver ended (``finished`` or ``stopped``)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._thread = None
        try:
            write_live(self.store, self._payload("finished" if finished else "stopped"))
        except OSError as exc:
            log.debug("heartbeat: cannot write beside %s (%s)", self.store, exc)
