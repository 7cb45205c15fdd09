"""The live page's Bokeh server: ``tomosweep view S.zarr`` (:func:`serve`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import socket
import threading
from pathlib import Path
from typing import Any

from tomosweep.errors import TomosweepError
from tomosweep.view.page import Landscape, Page
from tomosweep.view.snapshot import StoreReader

log = logging.getLogger(__name__)


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
            names |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    # Bokeh's allowlist splits host:port at every colon, so an IPv6 literal cannot be listed: a page
    # served on ::1 is opened as http://localhost:PORT (the browser reaches ::1 by that name)
    return sorted(f"{n}:{port}" for n in names if n and ":" not in n)


def page_url(host: str, port: int) -> str:
    """The address to open the page served on ``host``:``port`` at."""
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
        """The page's address (see :func:`page_url`)."""
        return page_url(self.host, self.port)

    def _document(self, doc: Any) -> None:
        Page(doc, self.reader, refresh_s=self.refresh_s, landscape=self._landscape, executor=self._executor)

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
        """Serve the page; a clear error if it is not up within ``timeout`` seconds or the port is taken."""
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
