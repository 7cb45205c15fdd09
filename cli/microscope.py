"""``tomosweep plan``, ``replicate`` and ``reconstruct-data``: from a study to the microscope and back.

The one ``tomosweep`` app (:mod:`tomosweep.cli`) holds them; their errors end in one
red line there like every other command's.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tomosweep.cli.common import CliState, TrustOption, consent_to_stored_cluster, console, out, parse_cell
from tomosweep.cli.study import (
    ClusterOption,
    DriverVerboseOption,
    QuietOption,
    RichProgress,
    ViewOption,
    _connected,
    _dask_logs,
    _study_with_view,
    _summary,
)
from tomosweep.errors import InputError
from tomosweep.microscope.heldout import heldout_lines
from tomosweep.microscope.outputs import reconstruct_data_into
from tomosweep.microscope.plan import frontier_figure, parse_cost, snr_figure
from tomosweep.microscope.plan import plan as plan_rows
from tomosweep.microscope.replicate import continue_command, replicate_cells
from tomosweep.results import SweepStore
from tomosweep.results.folders import check_replaceable, check_space, replace_file
from tomosweep.sweep.api import refuse_tune, run_tune

#: what a figure may be saved as (matplotlib's writers that need nothing more installed)
FIGURE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "tif", "tiff", "webp", "eps")


class _LazyBar:
    """A progress bar that appears only once there is progress to show: a command refused
    before its work prints one error line, never an empty bar above it."""

    def __init__(self, *columns: Any, description: str) -> None:
        self._columns = columns
        self._description = description
        self._bar: Progress | None = None
        self._task: Any = None

    def _started(self) -> Progress:
        if self._bar is None:
            self._bar = Progress(*self._columns, console=console, transient=not console.is_terminal)
            self._bar.start()
            self._task = self._bar.add_task(self._description, total=None)
        return self._bar

    def update(self, **kwargs: Any) -> None:
        self._started().update(self._task, **kwargs)

    def advance(self) -> None:
        self._started().advance(self._task)

    def say(self, text: str) -> None:
        """A line above the bar; user and data text, printed as it is (no markup)."""
        (self._bar.console if self._bar is not None else console).print(
            text, markup=False, highlight=False, soft_wrap=True
        )

    def __enter__(self) -> _LazyBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def plan(
    store: Annotated[Path, typer.Argument(help="study store")],
    target: Annotated[float, typer.Option("--target", help="⟨NRMSE⟩ to reach")],
    method: Annotated[str, typer.Option("--method", help="method whose map to read")] = "fused",
    cost: Annotated[
        str | None,
        typer.Option("--cost", help='linear cost, e.g. "chem=10,haadf=1" (default: fewest chemical tilts)'),
    ] = None,
    figure: Annotated[
        Path | None, typer.Option("--figure", help="frontier PNG (default: STORE's name + _plan_METHOD.png beside it)")
    ] = None,
    show: Annotated[int, typer.Option("--show", help="rows to print")] = 10,
    chem_snr_scale: Annotated[
        float, typer.Option("--chem-snr-scale", help="plan at this multiple of the study's chemical SNR (replicated)")
    ] = 1.0,
) -> None:
    """The cheapest acquisitions of the study's grid that reach --target, with the weights to use."""
    refuse_tune(store, "plan (which acquisition reaches an NRMSE)")
    if store.name in ("", ".", ".."):  # `plan .` inside the store: name it, to put the figure beside it
        store = Path(os.path.abspath(store))
    path = figure_path(store, figure, method)
    snr_path = path.with_name(path.name.replace("_plan_", "_snr_") if "_plan_" in path.name else f"snr{path.suffix}")
    with SweepStore.open(store) as opened:
        rows = plan_rows(opened, target, method=method, cost=parse_cost(cost), chem_snr_scale=chem_snr_scale)
        dose_figure = snr_figure(opened, method)
        check_figures([path] + ([snr_path] if dose_figure is not None else []))
        with replace_file(path, command="plan") as tmp:
            frontier_figure(opened, rows, target, method).savefig(tmp, dpi=120, format=path.suffix[1:])
        if dose_figure is not None:
            with replace_file(snr_path, command="plan") as tmp:
                dose_figure.savefig(tmp, dpi=120, format=snr_path.suffix[1:])
            out.print(f"NRMSE against chemical SNR: {snr_path}", markup=False, highlight=False)
    meeting = [r for r in rows if r.meets]
    table = Table(title=f"{method}: cells reaching ⟨NRMSE⟩ ≤ {target:g}, cheapest first")
    for column in ("HAADF", "chem", "best", "replicates mean ± s.d.", "value", "cost", "weights"):
        table.add_column(column)
    for r in meeting[:show]:
        if r.mean is not None:
            rep = f"{r.mean:.3f} ± {r.spread:.3f} (n={r.n_replicates})"
        else:
            rep = f"— ({r.replicates_unused})" if r.replicates_unused else "— (tomosweep replicate)"
        weights = ", ".join(f"{k}={v:.4g}" for k, v in r.weights.items())
        cells = (str(r.n_haadf), str(r.n_chem), f"{r.best:.3f}", rep, f"{r.value:.3f}", f"{r.cost:g}", weights)
        table.add_row(*(escape(c) for c in cells))
    out.print(table)
    stale = [r for r in rows if r.replicates_unused.startswith("stale")]
    if stale:
        shown = ", ".join(f"{r.n_haadf}×{r.n_chem}" for r in stale)
        out.print(
            f"replicates of {shown} ran earlier best weights and are not used (the study found better ones "
            f"since); rerun them: tomosweep replicate {store} --method {method}"
            + "".join(f" --cell {r.n_haadf},{r.n_chem}" for r in stale),
            markup=False,
            highlight=False,
        )
    if not meeting:
        closest = min(rows, key=lambda r: r.value) if rows else None
        hint = f"; the best cell is {closest.n_haadf}×{closest.n_chem} at {closest.value:.3f}" if closest else ""
        out.print(f"no cell of the grid reaches {target:g}{hint}")
    unreplicated = sum(1 for r in meeting if r.mean is None)
    if unreplicated:
        out.print(
            f"{unreplicated} of these cells have no replicates: their value is the optimised best (biased low); "
            f"run tomosweep replicate {store}",
            markup=False,
            highlight=False,
        )
    out.print(f"frontier figure: {path}", markup=False, highlight=False)


def figure_path(store: Path, figure: Path | None, method: str) -> Path:
    """Where plan draws its frontier: ``--figure`` (``.png`` added when it has no suffix, as
    matplotlib does, so the path reported is the path written), else beside the store."""
    if figure is None:
        return store.with_name(f"{store.name.removesuffix('.zarr')}_plan_{method}.png")
    if figure.is_dir():
        raise InputError(f"--figure {figure} is a folder; give a file name, e.g. {figure / 'plan.png'}")
    if not figure.suffix:
        return figure.with_name(figure.name + ".png")
    if figure.suffix[1:].lower() not in FIGURE_FORMATS:
        raise InputError(f"--figure {figure}: unknown figure format {figure.suffix!r}; use {', '.join(FIGURE_FORMATS)}")
    return figure


def check_figures(paths: list[Path]) -> None:
    """Before any drawing: each figure's folder exists and takes files, its name is not the user's."""
    for path in paths:
        folder = path.absolute().parent
        if not folder.is_dir():
            raise InputError(f"--figure {path}: the folder {folder} does not exist; create it first")
        for above in (folder, *folder.parents):
            if (above / "zarr.json").exists() or (above / ".zgroup").exists():
                raise typer.BadParameter(f"--figure must not lie inside the store {above}; write it beside the store")
        check_replaceable(folder, [path.name], overwrite=True, what="--figure in")
        check_space(folder, what="--figure in")


def replicate(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="study store")],
    method: Annotated[str, typer.Option("--method", help="method whose best weights to replicate")] = "fused",
    cell: Annotated[list[str] | None, typer.Option("--cell", help="H,C (repeatable; default: all)")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="fresh noise realisations per cell")] = 4,
    chem_snr_scale: Annotated[
        str | None, typer.Option("--chem-snr-scale", help="e.g. 0.5,1,2: also at these multiples of the chemical SNR")
    ] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="cluster backend (default: the study's)")] = None,
    trust_stored_cluster: TrustOption = False,
) -> None:
    """Rerun cells' best weights under new noise seeds and store the spread (plan uses it).

    Each replicate is stored as it finishes; after an interruption the same command runs
    only the missing ones."""
    state: CliState = ctx.obj
    refuse_tune(store, "replicate (the NRMSE under fresh noise)")
    cells = [parse_cell(c) for c in cell] if cell else None
    try:
        scales = [float(v) for v in chem_snr_scale.split(",")] if chem_snr_scale else None
    except ValueError:
        raise typer.BadParameter(
            f"--chem-snr-scale must be numbers separated by commas, got {chem_snr_scale!r}"
        ) from None
    if cluster is None:
        consent_to_stored_cluster(store, trust=trust_stored_cluster)
    again = continue_command(store, method=method, cells=cells, seeds=seeds, chem_snr_scales=scales, cluster=cluster)
    with _LazyBar(
        TextColumn("replicates"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), description="replicates"
    ) as bar:

        def planned(total: int, done: int) -> None:
            # from here on the store holds each finished replicate: an interruption keeps them
            state.again, state.kept = again, "every finished replicate is stored"
            bar.update(total=total, completed=done)

        result = replicate_cells(
            store,
            method=method,
            cells=cells,
            seeds=seeds,
            chem_snr_scales=scales,
            cluster=cluster,
            on_result=lambda _r: bar.advance(),
            on_plan=planned,
        )
    table = Table(title=f"{method}: best weights under {seeds} fresh noise seeds")
    for column in ("cell", "NRMSE per seed", "mean ± s.d."):
        table.add_column(column)
    for key, entry in result.items():
        values = np.array([v for v in entry["nrmse"] if v is not None], dtype=float)
        summary = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if values.size > 1 else "—"
        _, h, c, *snr = key.split("/")
        table.add_row(
            escape(f"{h}×{c}" + (f" ({snr[0]})" if snr else "")),
            ", ".join("failed" if v is None else f"{v:.3f}" for v in entry["nrmse"]),
            summary,
        )
    out.print(table)


def reconstruct_data(
    data: Annotated[Path, typer.Argument(help="data file (TOML) naming the measured series")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for the volumes and figures")],
    weights: Annotated[
        Path | None, typer.Option("--weights", help="study store: take the weights of the nearest cell")
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help="method (default: fused)")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, gpu or auto")] = "cpu",
    holdout: Annotated[
        float, typer.Option("--holdout", help="fraction of HAADF tilts left out for the check (0: no check)")
    ] = 0.1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an earlier reconstruct-data output")] = False,
) -> None:
    """Align and reconstruct a measured tilt series with a study's weights; write OME-Zarr, npz, tif, PNGs.

    The files are written into a folder beside --out and moved in at the end; --overwrite
    replaces only files an earlier reconstruct-data wrote and nobody changed since."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _LazyBar(*columns, description="iterations") as bar:
        summary = reconstruct_data_into(
            data,
            out_dir,
            weights_store=weights,
            method=method,
            device=device,
            holdout=holdout or None,
            overwrite=overwrite,
            on_iteration=lambda k: bar.update(completed=k),
            on_stage=bar.say,
        )
    for note in summary.notes:
        out.print(f"note: {note}", markup=False, highlight=False)

    for line in heldout_lines(summary.heldout):
        out.print(line, markup=False, highlight=False)
    out.print(
        f"wrote {summary.out}: " + ", ".join(summary.files) + f" ({summary.wall_time_s:.1f} s)",
        markup=False,
        highlight=False,
    )


def tune(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="data file (TOML) naming the measured series, its [methods], [budget]")],
    store: Annotated[Path, typer.Option("--store", "-s", help="new zarr store to create")],
    cluster: ClusterOption = None,
    quiet: QuietOption = False,
    verbose: DriverVerboseOption = False,
    view: ViewOption = False,
) -> None:
    """Tune the weights on the measured series itself: a one-cell study scored by a loss without ground truth.

    The chemical counts are split by Poisson thinning (fit on one part, held-out deviance
    of the other) and HAADF tilts held out; see the data file's [tune] table. Then
    `tomosweep reconstruct-data DATA --weights STORE --out R` reconstructs with the best weights."""
    state: CliState = ctx.obj
    state.store = store
    _dask_logs(state, verbose)
    summary = _study_with_view(
        state,
        view,
        store,
        lambda: run_tune(
            data,
            store,
            cluster=cluster,
            progress=None if quiet else RichProgress(scored_by="loss"),
            on_client=functools.partial(_connected, state),
            on_stage=lambda text: console.print(escape(text), highlight=False),
        ),
    )
    _summary(summary)
    out.print(
        f"next: tomosweep reconstruct-data {data} --weights {store} --out <folder>", markup=False, highlight=False
    )
