"""What the ``tomosweep`` commands share: the consoles, the state of one invocation, the log's
set-up, the options and the consent a stored cluster needs.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tomosweep.cluster.settings import stored_settings_problem
from tomosweep.errors import TomosweepError
from tomosweep.microscope.replicate import stored_cluster_needs_consent
from tomosweep.nofollow import NoFollowFileHandler
from tomosweep.results import SweepStore
from tomosweep.results.spreadsheet import csv_text


@dataclass
class CliState:
    """What one ``tomosweep`` invocation carries from its global options to its command, and on to
    the line that ends it (an interruption, a signal, an operating-system error).

    :func:`tomosweep.cli.main` makes one and hands it to the app as typer's context
    object; a command reads it as ``ctx.obj``.
    """

    #: ``--verbose`` on the terminal: tomosweep's log lines are shown there already
    terminal_log: bool = False
    #: the global ``--log-file`` (a driver's log goes there instead of beside its store)
    log_file: Path | None = None
    #: ``run -v`` / ``resume -v``: Dask's log lines stay on the terminal
    driver_verbose: bool = True
    #: the store a run or resume writes: an interruption says how to resume it
    store: Path | None = None
    #: for a command with its own way on: the command that continues it, and what is kept
    again: str | None = None
    kept: str | None = None
    #: the live page served beside a run (``--view``)
    view: Any = None
    #: stopped by SIGTERM, not Ctrl-C (exit 143)
    terminated: bool = False


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logging(state: CliState, verbose: int, log_file: Path | None) -> None:
    """tomosweep's own loggers: INFO (``-v``) or DEBUG (``-vv``) on the terminal, and the
    whole INFO record to ``--log-file`` (a study's driver also logs beside its store)."""
    logger = logging.getLogger("tomosweep")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if verbose:
        state.terminal_log = True
        terminal = logging.StreamHandler()
        terminal.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        terminal.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        logger.addHandler(terminal)
    if log_file is not None:
        state.log_file = log_file
        add_file_handler(logger, log_file, logging.DEBUG if verbose > 1 else logging.INFO)


def add_file_handler(logger: Any, path: Path | str, level: int) -> None:
    """Log ``logger`` to the file at ``path`` from ``level`` on (once: a second call adds nothing)."""
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == str(Path(path).resolve()):
            return

    handler = NoFollowFileHandler(path, delay=True)  # created only when there is something to say
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)


def _console(*, stderr: bool) -> Console:
    """A console that wraps only on a terminal: piped or redirected output keeps every line whole
    (no path or number cut at 80 columns), as a script or ``grep`` expects."""
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, soft_wrap=not tty, width=None if tty else 100_000)


console = _console(stderr=True)
out = _console(stderr=False)


TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust-stored-cluster",
        help="use a non-local [cluster] stored in the store (a scheduler address, a batch backend and its "
        "prologue) without asking: for scripts, once you have read it",
    ),
]


class TableFormat(enum.StrEnum):
    """How a command that prints a table prints it."""

    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[
    TableFormat,
    typer.Option(
        "--format",
        case_sensitive=False,
        help="table: for reading (fits the terminal, never cuts a number or a name); csv or json: the same data "
        "in full precision, plain on stdout, for scripts",
    ),
]


def _plain(value: Any) -> Any:
    """A JSON value: NumPy scalars as Python numbers, NaN (no value) as null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_data(frame: Any, *, fmt: TableFormat) -> None:
    """Write a pandas table to stdout as CSV or JSON (a list of row objects), plain text.

    No Rich: no markup read, no wrapping, no colour, whatever the terminal. Floats keep
    every digit (CSV as pandas writes them, JSON as Python's ``repr``); a missing value is
    an empty CSV field or JSON ``null``. A CSV string cell that a spreadsheet would run as a
    formula gets a ``'`` before it (:mod:`tomosweep.results.spreadsheet`); JSON keeps it as it is.
    """
    if fmt is TableFormat.csv:
        typer.echo(csv_text(frame), nl=False)
    else:
        records = [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
        typer.echo(json.dumps(records, indent=2, ensure_ascii=False, allow_nan=False))


class ClusterConsentError(TomosweepError):
    """A stored non-local cluster that the user did not confirm."""


def consent_to_stored_cluster(store: Path, *, trust: bool) -> None:
    """A store's own non-local ``[cluster]`` is used only with consent (docs/architecture.md: nobody else gets in).

    A received store may name a scheduler to send the study to, or a batch backend whose
    prologue runs under the user's account. It is shown, then asked for on a terminal;
    without one it is refused unless ``--trust-stored-cluster`` (or ``--cluster``/``--study``
    names the cluster instead).
    """
    try:
        with SweepStore.open(store) as opened:
            stored = opened.spec.get("cluster") if isinstance(opened.spec, dict) else None
    except TomosweepError:
        return  # the command itself reports the store's problem
    described = stored_cluster_needs_consent(stored if isinstance(stored, dict) else None)
    if described is None:
        return
    # a value that would run as a command is refused before it is shown as something to agree to
    unsafe = stored_settings_problem(stored) if isinstance(stored, dict) else None
    if unsafe:
        raise ClusterConsentError(
            f"{store} stores a [cluster] section that cannot be used ({unsafe}); nothing was run: "
            "pass --cluster local (or another) to choose one"
        )
    console.print(
        f"{store} stores a cluster beyond this machine: {described}", markup=False, highlight=False, soft_wrap=True
    )
    if trust:
        console.print("using it (--trust-stored-cluster)", highlight=False)
        return
    if sys.stdin is not None and sys.stdin.isatty() and console.is_terminal:
        if typer.confirm("connect to it with the store's settings?", default=False, err=True):
            return
        raise ClusterConsentError(
            f"the cluster stored in {store} was not used; pass --cluster local (or another) to choose one"
        )
    raise ClusterConsentError(
        f"{store} stores a non-local cluster, not used without consent: pass --trust-stored-cluster to use it, "
        "or --cluster local (or another) to choose one"
    )


def parse_cell(cell: str) -> tuple[int, int]:
    """``--cell H,C`` (or ``HxC``) as (HAADF tilts, chemical tilts), or typer's usage error."""
    try:
        h, c = (int(v) for v in cell.replace("x", ",").split(","))
    except ValueError:
        raise typer.BadParameter(f"--cell must be H,C (HAADF tilts, chemical tilts), e.g. 45,9; got {cell!r}") from None
    return h, c
