"""The commands of a study: ``run``, ``resume``, ``status``, ``check``, ``export``, ``reconstruct``,
``methods`` and ``job-script`` (the app that holds them: :mod:`tomosweep.cli`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tomosweep.cli.common import (
    CliState,
    FormatOption,
    TableFormat,
    TrustOption,
    add_file_handler,
    consent_to_stored_cluster,
    console,
    out,
    parse_cell,
    print_data,
    setup_logging,
)
from tomosweep.cli.view import ViewProcess
from tomosweep.errors import TomosweepError
from tomosweep.sweep.api import (
    export_store,
    reconstruct_cell,
    remove_stale_certificates,
    resume_study,
    run_study,
    study_status,
    worker_job_script,
)
from tomosweep.sweep.check import check_store
from tomosweep.sweep.ladder import ladder_problems, stored_rungs
from tomosweep.sweep.methods import METHODS
from tomosweep.sweep.runner import EXHAUSTED


class RichProgress:
    """A live bar: trials done/total, failed, best NRMSE so far, ETA."""

    def __init__(self, *, scored_by: str = "NRMSE") -> None:
        self._bar = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TextColumn(f"best {scored_by} {{task.fields[best]}}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: Any = None

    @staticmethod
    def _best(best: float | None) -> str:
        return "–" if best is None or not math.isfinite(best) else f"{best:.4f}"

    def start(self, *, total: int, done: int, failed: int, best: float | None) -> None:
        """Show the bar at ``done`` of ``total`` trials, with the failures and best NRMSE so far."""
        self._bar.start()
        self._task = self._bar.add_task("trials", total=total, completed=done, failed=failed, best=self._best(best))

    def update(self, record: Any, *, done: int, failed: int, best: float | None) -> None:
        """Move the bar after ``record`` was committed; a failed trial gets a line of its own."""
        self._bar.update(self._task, completed=done, failed=failed, best=self._best(best))
        if not record.ok:
            self._bar.console.print(
                f"[yellow]failed trial[/] {escape(str(record.method))} {record.n_haadf}×{record.n_chem}: "
                f"{escape(str(record.error))}",
                highlight=False,
            )

    def close(self) -> None:
        """Stop the live bar (its last state stays on the terminal)."""
        self._bar.stop()


def _dask_logs(state: CliState, verbose: bool) -> None:
    """Unless ``--verbose``: Dask's log lines stay out of the terminal (local workers drop
    everything below CRITICAL; see :func:`tomosweep.cluster.local.worker_log_level`)."""
    if not verbose:
        os.environ["TOMOSWEEP_DASK_LOG_LEVEL"] = "CRITICAL"
    elif not state.terminal_log:
        setup_logging(state, 1, None)  # `run -v` shows tomosweep's own lines with Dask's
    state.driver_verbose = verbose


def _log_to_file(state: CliState) -> None:
    """The driver's log beside its store (``STORE.log``, or the global ``--log-file``): tomosweep's
    own INFO lines and Dask's warnings; Dask's lines leave the terminal unless ``--verbose``.

    Called once the cluster is up: starting a local cluster resets the level of every
    stream handler of the ``distributed`` logger, a file handler included.
    """
    if state.store is None:
        return
    path = state.log_file or f"{state.store}.log"
    add_file_handler(logging.getLogger("tomosweep"), path, logging.INFO)
    distributed = logging.getLogger("distributed")
    if not state.driver_verbose:
        for handler in list(distributed.handlers):
            if type(handler) is logging.StreamHandler:
                distributed.removeHandler(handler)
    add_file_handler(distributed, path, logging.WARNING)


def _connected(state: CliState, conn: Any) -> None:
    _log_to_file(state)
    for warning in getattr(conn, "warnings", ()):  # e.g. TLS turned off: the terminal and the study's log
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        logging.getLogger("tomosweep.cluster").warning("%s", warning)
    console.print(
        f"[bold]{escape(str(conn.description))}[/] — first worker after {conn.first_worker_s:.1f} s", highlight=False
    )
    link = conn.dashboard
    console.print(
        f"Dask scheduler {conn.client.scheduler.address}" + (f" — dashboard {link}" if link else ""),
        markup=False,
        highlight=False,
    )
    if state.view is not None:
        try:
            console.print(
                f"live view {state.view.url()} (read-only; `tomosweep view` serves it after the run)",
                soft_wrap=True,
            )
        except TomosweepError as exc:  # the study goes on without its page
            console.print(f"[yellow]warning:[/] {escape(str(exc))}", highlight=False)


ClusterOption = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        "-c",
        help="run on this backend instead of the study's [cluster] one (local, local-cuda, slurm, pbs, lsf, sge; "
        "its settings then come from the Dask config), or on the scheduler at a tcp:// or tls:// address",
    ),
]


QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]
DriverVerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="show tomosweep's and Dask's log lines (default: into STORE.log)")
]
ViewOption = Annotated[
    bool, typer.Option("--view", help="serve the live page of the store alongside the run (see `tomosweep view`)")
]


def _study_with_view(state: CliState, view: bool, store: Path, call: Any) -> Any:
    """Run ``call()`` with `tomosweep view STORE` serving beside it (``--view``), stopped after."""
    if not view:
        return call()

    state.view = ViewProcess(store)
    try:
        return call()
    finally:
        state.view.stop()
        state.view = None


WarmStartOption = Annotated[
    Path | None,
    typer.Option(
        "--warm-start",
        help="an earlier study's store: each cell's first points are the best points of its nearest "
        "cell there (same method), before random draws",
    ),
]


def _summary(summary: Any) -> None:
    state = "complete" if summary.complete else "incomplete"
    console.print(
        f"[green]{summary.n_new} new trials[/] in {summary.wall_time_s:.1f} s; store {escape(str(summary.store))} "
        f"holds {summary.n_trials} trials ({summary.n_failed} failed), budget {summary.budget}: {state}.",
        highlight=False,
    )
    for (method, h, c), why in summary.stop_reasons:
        cell = f"{method} at {h} HAADF × {c} chemical tilts"
        if why == EXHAUSTED:
            line = (
                f"{cell}: {why}; the cell stopped early "
                "(the objective is deterministic, so repeating a point teaches nothing)."
            )
        else:
            line = f"{cell} stopped early (budget.stop_tolerance): {why}."
        console.print(Text(line))


def run(
    ctx: typer.Context,
    study: Annotated[Path, typer.Argument(help="study file (TOML)")],
    store: Annotated[Path, typer.Option("--store", "-s", help="new zarr store to create")],
    cluster: ClusterOption = None,
    quiet: QuietOption = False,
    verbose: DriverVerboseOption = False,
    warm_start: WarmStartOption = None,
    view: ViewOption = False,
) -> None:
    """Run a study: create STORE and spend the whole budget."""
    state: CliState = ctx.obj
    state.store = store
    _dask_logs(state, verbose)
    summary = _study_with_view(
        state,
        view,
        store,
        lambda: run_study(
            study,
            store,
            cluster=cluster,
            progress=None if quiet else RichProgress(),
            on_client=functools.partial(_connected, state),
            warm_start=warm_start,
        ),
    )
    _summary(summary)


def resume(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="store written by `tomosweep run`")],
    study: Annotated[
        Path | None, typer.Option("--study", help="study file to check against (or to extend with)")
    ] = None,
    extend: Annotated[
        bool, typer.Option("--extend", help="accept a study file that raises trials_per_cell or grows the grid")
    ] = False,
    cluster: ClusterOption = None,
    quiet: QuietOption = False,
    verbose: DriverVerboseOption = False,
    warm_start: WarmStartOption = None,
    view: ViewOption = False,
    trust_stored_cluster: TrustOption = False,
) -> None:
    """Resume a study after a crash or Ctrl-C (or extend it): finish the budget from the stored trials."""
    state: CliState = ctx.obj
    state.store = store
    if study is not None and extend:  # an interrupted extension: the same command finishes it
        state.again = f"tomosweep resume {store} --study {study} --extend"
    _dask_logs(state, verbose)
    if cluster is None and study is None:
        consent_to_stored_cluster(store, trust=trust_stored_cluster)
    summary = _study_with_view(
        state,
        view,
        store,
        lambda: resume_study(
            store,
            study=study,
            extend=extend,
            cluster=cluster,
            progress=None if quiet else RichProgress(),
            on_client=functools.partial(_connected, state),
            warm_start=warm_start,
        ),
    )
    _summary(summary)


def status(
    store: Annotated[Path, typer.Argument(help="store to summarise")],
    fmt: FormatOption = TableFormat.table,
) -> None:
    """Table of cells: trials done / failed, best NRMSE, best parameters (--format csv|json for scripts)."""
    frame = study_status(store)
    if fmt is not TableFormat.table:
        print_data(frame, fmt=fmt)
        return
    score = "best_loss" if "best_loss" in frame.columns else "best_nrmse"  # a tune's loss, a study's NRMSE
    fixed = (
        "method",
        "n_haadf",
        "n_chem",
        "trials",
        "budget",
        "failed",
        "n_pruned",
        "solver_s_saved",
        score,
        "loss",
        "stopped",
    )
    # a parameter no cell has a best for (a method's fixed one left out of the study) is a column of dashes
    params = [c for c in frame.columns if c not in fixed and frame[c].notna().any()]
    rows = frame.to_dict("records")
    table = _status_table(store, rows, params, wide=True, score=score)
    if _measure(table).maximum > out.width:
        table = _status_table(store, rows, params, wide=False, score=score)
    out.print(table)
    if "loss" in frame.columns:
        out.print(Text(f"loss (a tune of measured data, no ground truth): {rows[0]['loss']}"))
        out.print(Text(f"reconstruct with its best weights: tomosweep reconstruct-data DATA.toml --weights {store}"))
    stopped = [r for r in rows if r.get("stopped")]
    if stopped:
        out.print(Text(f"{len(stopped)} cell(s) stopped before their cap (budget.stop_tolerance):"))
        for r in stopped:
            out.print(Text(f"  {r['method']} {r['n_haadf']}×{r['n_chem']} after {r['trials']} trials: {r['stopped']}"))
    for size, path, n in stored_rungs(store):
        out.print(Text(f"ladder rung {size}³: {n} trials (tomosweep status {path})"))
    others = ladder_problems(store)
    if others:
        out.print(Text(f"{len(others)} thing(s) under ladder/ are not rungs of this study: `tomosweep check {store}`"))
    if frame["n_pruned"].sum():
        out.print(
            f"{int(frame['n_pruned'].sum())} trials pruned by the median stopping rule, saving about "
            f"{frame['solver_s_saved'].sum():.0f} s of solver time (an upper bound)."
        )


def _fmt(value: Any) -> str:
    """A number as a table shows it: four significant digits, a dash where there is none."""
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _measure(table: Table) -> Any:
    """The widths ``table`` can take: ``minimum`` with every cell wrapped at its longest word,
    ``maximum`` with nothing wrapped (a :class:`rich.measure.Measurement`)."""
    return Measurement.get(out, out.options.update_width(1_000_000), table)


def _new_table(title: str, **kwargs: Any) -> Table:
    """A table whose title is text, never markup (a store path may hold brackets)."""
    return Table(title=Text(title), title_justify="left", caption_justify="left", **kwargs)


def _column(table: Table, header: str, *, right: bool = False, min_width: int | None = None) -> None:
    # fold, never "…": a number or name longer than its column goes on over two lines, whole
    table.add_column(header, justify="right" if right else "left", overflow="fold", min_width=min_width)


def _status_table(store: Path, rows: list[dict], params: list[str], *, wide: bool, score: str) -> Table:
    """One row per (method, cell). ``wide``: a column per parameter; otherwise the best parameters
    as ``name=value`` pairs in one column that wraps between pairs (fits 80 columns)."""
    table = _new_table(str(store))
    _column(table, "method")
    _column(table, "HAADF×chem" if wide else "tilts", right=True)
    for header in ("trials", "failed", "pruned", "best loss" if score == "best_loss" else "best NRMSE"):
        _column(table, header, right=True)
    for p in params if wide else ["best parameters"]:
        _column(table, p, right=wide)
    for row in rows:
        cells = [
            row["method"],
            f"{row['n_haadf']}×{row['n_chem']}",
            f"{row['trials']}/{row['budget']}",
            str(row["failed"]),
            str(row["n_pruned"]),
            _fmt(row[score]),
        ]
        if wide:
            cells += [_fmt(row[p]) for p in params]
        else:
            given = [f"{p}={_fmt(row[p])}" for p in params if isinstance(row[p], float) and math.isfinite(row[p])]
            cells.append(" ".join(given) or "–")
        table.add_row(*(Text(cell) for cell in cells))
    if not wide:
        table.caption = Text("tilts: HAADF × chemical", style="table.caption")
    return table


def check(
    store: Annotated[Path, typer.Argument(help="store to check")],
    repair: Annotated[
        bool, typer.Option("--repair", help="rebuild the maps and reset unreadable optimiser states (never trials)")
    ] = False,
) -> None:
    """Report a store's health: attributes, shapes, every trial readable, maps, optimiser state.
    Removes the TLS certificates that killed drivers of this host left behind, and says so."""
    for folder in remove_stale_certificates(store):
        out.print(f"removed {folder}: TLS certificates left by a driver that is gone", markup=False, highlight=False)
    findings = check_store(store, repair=repair)
    if not findings:
        out.print(f"{store}: healthy")
        return
    for line in findings:
        out.print(f"{store}: {line}", markup=False, highlight=False)
    if repair:
        left = check_store(store)  # what the repair could not prove stays, and is said again
        if not left:
            out.print(f"{store}: repaired (only added back: committed trials untouched)")
            return
        out.print(f"{store}: {len(left)} finding(s) left as they are (repair only adds what the trials prove)")
    raise typer.Exit(1)


def export(
    store: Annotated[Path, typer.Argument(help="store to export")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for the files")],
    cell: Annotated[
        str | None, typer.Option("--cell", help="H,C: also draw this cell's objective as the optimiser sees it")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace the files of an earlier export in --out (nothing else)")
    ] = False,
) -> None:
    """Heatmaps (PNG+SVG), best-weights maps, best-params table, trials CSV and Parquet,
    convergence plot, and with --cell the GP's view of that cell's objective."""
    for path in export_store(store, out_dir, cell=parse_cell(cell) if cell else None, overwrite=overwrite):
        out.print(str(path))


def reconstruct(
    store: Annotated[Path, typer.Argument(help="store to read the best parameters from")],
    cell: Annotated[str, typer.Option("--cell", help="H,C: HAADF tilts, chemical tilts")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="output .npz, .h5, .zarr or .hspy (a HyperSpy signal)")],
    method: Annotated[str | None, typer.Option("--method", help="method (default: the study's first)")] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="replace an existing output written by tomosweep (never a store or another file)"
        ),
    ] = False,
) -> None:
    """Rerun a cell's best trial and save its element volumes with the NRMSE they get."""
    path, metrics = reconstruct_cell(store, parse_cell(cell), out_file, method=method, overwrite=overwrite)
    out.print(f"wrote {path}; NRMSE " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def methods(fmt: FormatOption = TableFormat.table) -> None:
    """List the methods a study can use, their parameters, defaults and default ranges."""
    rows = [
        {
            "method": method.name,
            "parameter": p.name,
            "type": p.kind,
            "default": p.default,
            "low": p.low,
            "high": p.high,
            "prior": p.prior,
            "searched": p.searched,
            "meaning": p.doc,
        }
        for method in METHODS.values()
        for p in method.params
    ]
    if fmt is not TableFormat.table:
        import pandas as pd  # deferred: pandas is slow to import, and only this table needs it

        print_data(pd.DataFrame(rows, columns=list(_METHOD_COLUMNS)), fmt=fmt)
        return
    # one table while the meanings get 30 columns or more; else one table per method
    # (no method column), so a meaning never shrinks to a word per line
    table = _methods_table("methods", rows, with_method=True)
    if _measure(table).minimum <= out.width:
        out.print(table)
    else:
        for name in dict.fromkeys(row["method"] for row in rows):
            out.print(_methods_table(name, [row for row in rows if row["method"] == name], with_method=False))
    out.print(
        "A method table left empty (e.g. [methods.fused]) searches the parameters marked 'searched'.",
        markup=False,
        highlight=False,
    )


_METHOD_COLUMNS = ("method", "parameter", "type", "default", "low", "high", "prior", "searched", "meaning")


def _methods_table(title: str, rows: list[dict], *, with_method: bool) -> Table:
    """The parameters of ``rows``: all methods with a method column, or one method's without it,
    the prior beside the range and light rules, to leave the meanings room at 80 columns."""
    if with_method:
        table = _new_table(title)
        headers = ("method", "parameter", "type", "default", "range", "prior", "empty table")
    else:
        table = _new_table(title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        headers = ("parameter", "type", "default", "range", "if empty")
    for header in headers:
        _column(table, header)
    table.add_column("meaning", overflow="fold", min_width=30 if with_method else None)
    for row in rows:
        span = f"{row['low']:g}–{row['high']:g}"
        cells = [row["method"]] * with_method + [
            row["parameter"],
            row["type"],
            f"{row['default']:g}",
            *((span, row["prior"]) if with_method else (f"{span} {row['prior']}",)),
            "searched" if row["searched"] else "fixed",
            row["meaning"],
        ]
        table.add_row(*(Text(cell) for cell in cells))
    return table


def job_script(
    study: Annotated[Path, typer.Argument(help="study file (TOML) with a slurm, pbs, lsf or sge [cluster]")],
    cluster: ClusterOption = None,
) -> None:
    """Print the batch script each worker job would run (nothing is submitted)."""
    out.print(worker_job_script(study, cluster=cluster), markup=False, highlight=False, soft_wrap=True)
