"""The sweep layer of ``tomosweep view``: the driver's heartbeat, the landscape drawer, ``run --view``.

The page itself is :mod:`tomosweep.results.view` (it reads only the store). What it
cannot know on its own comes from here: the workers connected and the trials in flight
(:class:`Heartbeat`, written by the driver beside the store) and the optimiser's view of
a cell (:func:`landscape_pngs`, which needs the sweep's optimiser).
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tomosweep.errors import TomosweepError
from tomosweep.results import SweepStore
from tomosweep.results.view import ViewServer, live_file_is_ours, serve, write_live

log = logging.getLogger(__name__)

#: seconds between two heartbeats of a running driver
HEARTBEAT_S = 2.0


class Heartbeat:
    """Publishes a running driver's state beside its store, every ``interval_s`` seconds.

    A daemon thread writes ``<store>.live.json`` (see :mod:`tomosweep.results.view`):
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


def landscape_pngs(store: Path, cell: tuple[int, int]) -> list[tuple[str, bytes]]:
    """Each method's objective at ``cell`` as its GP sees it (the export's ``objective_*.png``), as PNG."""
    from tomosweep.results.export import objective_figure, searched_ranges
    from tomosweep.sweep.api import cell_surrogates

    images = []
    with SweepStore.open(store) as opened:
        surrogates = cell_surrogates(opened, cell)
        for method, result in surrogates.items():
            ranges = searched_ranges(opened, method)
            prior = {name: str(rng.get("prior", "linear")) for name, rng in ranges.items()}
            title = f"{method}, {cell[0]} HAADF × {cell[1]} chemical tilts ({len(result.x_iters)} trials)"
            fig = objective_figure(result, prior, title)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
            if "matplotlib.pyplot" in sys.modules:  # skopt draws through pyplot, which keeps its figures
                sys.modules["matplotlib.pyplot"].close(fig)
            images.append(
                (f"{method}: the GP's mean log NRMSE (partial dependence), trials as dots", buffer.getvalue())
            )
    return images


def serve_view(
    store: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    refresh_s: float = 3.0,
    wait: bool = False,
) -> ViewServer:
    """Serve the live page of ``store`` (read-only) with the landscape of a selected cell; see
    :func:`tomosweep.results.view.serve`."""
    return serve(store, host=host, port=port, refresh_s=refresh_s, landscape=landscape_pngs, wait=wait)


class ViewProcess:
    """``tomosweep view STORE --wait`` in a process of its own, beside a run (``run --view``).

    A process, not a thread of the driver: drawing a landscape takes seconds of Python,
    which must not hold up the driver's commits. It is started before the store exists
    and waits for it; its first line on stdout is the page's address. Its log lines go to
    this module's logger (the study's log), never over the progress bar.
    """

    def __init__(self, store: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> None:
        command = [sys.executable, "-m", "tomosweep.sweep.cli", "view", str(store), "--wait"]
        command += ["--host", host, "--port", str(port)]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._url: str | None = None
        self._errors: list[str] = []
        self._have_url = threading.Event()
        threading.Thread(target=self._read_stdout, name="tomosweep-view-stdout", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="tomosweep-view-stderr", daemon=True).start()

    def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if self._url is None and line.startswith("http"):
                self._url = line.strip()
                self._have_url.set()
        self._have_url.set()  # the process ended: no address will come

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._errors.append(line.rstrip())
            log.debug("view: %s", line.rstrip())

    def url(self, *, timeout: float = 30.0) -> str:
        """The page's address, once the page is served; a :class:`TomosweepError` if it is not."""
        self._have_url.wait(timeout)
        if self._url is None:
            said = next((e for e in reversed(self._errors) if e.startswith("error:")), "")
            raise TomosweepError(
                "the live view did not start" + (f" ({said.removeprefix('error:').strip()})" if said else "")
            )
        return self._url

    def stop(self) -> None:
        """End the view process (only it: it was started here)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
