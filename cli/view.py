"""``tomosweep view``: the live page of a store with the landscape drawer, and ``run --view``'s process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tomosweep.cli.common import console, out
from tomosweep.errors import TomosweepError
from tomosweep.sweep.landscape import landscape_pngs
from tomosweep.view import ViewServer, serve

log = logging.getLogger(__name__)


def serve_view(
    store: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    refresh_s: float = 3.0,
    wait: bool = False,
) -> ViewServer:
    """Serve the live page of ``store`` (read-only) with the landscape of a selected cell; see
    :func:`tomosweep.view.serve`."""
    return serve(store, host=host, port=port, refresh_s=refresh_s, landscape=landscape_pngs, wait=wait)


class ViewProcess:
    """``tomosweep view STORE --wait`` in a process of its own, beside a run (``run --view``).

    A process, not a thread of the driver: drawing a landscape takes seconds of Python,
    which must not hold up the driver's commits. It is started before the store exists
    and waits for it; its first line on stdout is the page's address. Its log lines go to
    this module's logger (the study's log), never over the progress bar.
    """

    def __init__(self, store: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> None:
        command = [sys.executable, "-m", "tomosweep.cli", "view", str(store), "--wait"]
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


def view(
    store: Annotated[Path, typer.Argument(help="store to watch, read-only (no lock: safe while a driver writes)")],
    port: Annotated[int, typer.Option("--port", help="port to listen on (default: a free one)")] = 0,
    host: Annotated[
        str, typer.Option("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    ] = "127.0.0.1",
    refresh: Annotated[float, typer.Option("--refresh", help="seconds between two reads of the store")] = 3.0,
    wait: Annotated[bool, typer.Option("--wait", help="serve before the store exists (a run is creating it)")] = False,
) -> None:
    """Serve a live page of a study: NRMSE heatmaps, per-cell trials and curves, progress, workers.

    Prints the page's address on stdout; Ctrl-C stops it."""
    server = serve_view(store, host=host, port=port, refresh_s=refresh, wait=wait)
    try:
        out.print(server.url, markup=False, highlight=False, soft_wrap=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"[yellow]warning:[/] listening on {escape(host)}: whoever reaches it can read the study")
        console.print(f"serving {escape(str(store))} read-only; Ctrl-C stops", highlight=False, soft_wrap=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
