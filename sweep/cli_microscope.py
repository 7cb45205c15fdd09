"""``tomosweep plan``, ``replicate`` and ``reconstruct-data``: from a study to the microscope and back.

:func:`register` adds them to the one ``tomosweep`` app (:mod:`tomosweep.sweep.cli`,
which also runs as ``python -m``, so the app is handed over rather than imported); errors
end in one red line there like every other command's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)
out = Console()


def _parse_cell(cell: str) -> tuple[int, int]:
    from tomosweep.sweep.cli import _parse_cell as parse

    return parse(cell)


def register(app: typer.Typer) -> None:
    """Add plan, replicate and reconstruct-data to ``app``."""
    app.command()(plan)
    app.command()(replicate)
    app.command("reconstruct-data")(reconstruct_data)


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
    from tomosweep.results import SweepStore
    from tomosweep.results.plan import frontier_figure, parse_cost, snr_figure
    from tomosweep.results.plan import plan as plan_rows

    with SweepStore.open(store) as opened:
        rows = plan_rows(opened, target, method=method, cost=parse_cost(cost), chem_snr_scale=chem_snr_scale)
        path = figure or store.with_name(f"{store.name.removesuffix('.zarr')}_plan_{method}.png")
        if path.resolve().is_relative_to(store.resolve()):
            raise typer.BadParameter("--figure must not lie inside the store")
        frontier_figure(opened, rows, target, method).savefig(path, dpi=120)
        dose_figure = snr_figure(opened, method)
        if dose_figure is not None:
            snr_path = path.with_name(path.name.replace("_plan_", "_snr_") if "_plan_" in path.name else "snr.png")
            dose_figure.savefig(snr_path, dpi=120)
            out.print(f"NRMSE against chemical SNR: {snr_path}")
    meeting = [r for r in rows if r.meets]
    table = Table(title=f"{method}: cells reaching ⟨NRMSE⟩ ≤ {target:g}, cheapest first")
    for column in ("HAADF", "chem", "best", "replicates mean ± s.d.", "value", "cost", "weights"):
        table.add_column(column)
    for r in meeting[:show]:
        rep = f"{r.mean:.3f} ± {r.spread:.3f} (n={r.n_replicates})" if r.mean is not None else "— (tomosweep replicate)"
        weights = ", ".join(f"{k}={v:.4g}" for k, v in r.weights.items())
        table.add_row(str(r.n_haadf), str(r.n_chem), f"{r.best:.3f}", rep, f"{r.value:.3f}", f"{r.cost:g}", weights)
    out.print(table)
    if not meeting:
        closest = min(rows, key=lambda r: r.value) if rows else None
        hint = f"; the best cell is {closest.n_haadf}×{closest.n_chem} at {closest.value:.3f}" if closest else ""
        out.print(f"no cell of the grid reaches {target:g}{hint}")
    unreplicated = sum(1 for r in meeting if r.mean is None)
    if unreplicated:
        out.print(
            f"{unreplicated} of these cells have no replicates: their value is the optimised best (biased low); "
            f"run tomosweep replicate {store}"
        )
    out.print(f"frontier figure: {path}")


def replicate(
    store: Annotated[Path, typer.Argument(help="study store")],
    method: Annotated[str, typer.Option("--method")] = "fused",
    cell: Annotated[list[str] | None, typer.Option("--cell", help="H,C (repeatable; default: all)")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="fresh noise realisations per cell")] = 4,
    chem_snr_scale: Annotated[
        str | None, typer.Option("--chem-snr-scale", help="e.g. 0.5,1,2: also at these multiples of the chemical SNR")
    ] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="cluster backend (default: the study's)")] = None,
) -> None:
    """Rerun cells' best weights under new noise seeds and store the spread (plan uses it)."""
    from tomosweep.sweep.microscope import replicate_cells

    cells = [_parse_cell(c) for c in cell] if cell else None
    try:
        scales = [float(v) for v in chem_snr_scale.split(",")] if chem_snr_scale else None
    except ValueError:
        raise typer.BadParameter(
            f"--chem-snr-scale must be numbers separated by commas, got {chem_snr_scale!r}"
        ) from None
    with Progress(
        TextColumn("replicates"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("replicates", total=None)
        result = replicate_cells(
            store,
            method=method,
            cells=cells,
            seeds=seeds,
            chem_snr_scales=scales,
            cluster=cluster,
            on_result=lambda _r: bar.advance(task),
        )
    table = Table(title=f"{method}: best weights under {seeds} fresh noise seeds")
    for column in ("cell", "NRMSE per seed", "mean ± s.d."):
        table.add_column(column)
    import numpy as np

    for key, entry in result.items():
        values = np.array([v for v in entry["nrmse"] if v is not None], dtype=float)
        summary = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if values.size > 1 else "—"
        _, h, c, *snr = key.split("/")
        table.add_row(
            f"{h}×{c}" + (f" ({snr[0]})" if snr else ""),
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
    """Align and reconstruct a measured tilt series with a study's weights; write OME-Zarr, npz, tif, PNGs."""
    from tomosweep.sweep.microscope import reconstruct_data as run

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("iterations", total=None)
        summary = run(
            data,
            out_dir,
            weights_store=weights,
            method=method,
            device=device,
            holdout=holdout or None,
            overwrite=overwrite,
            on_iteration=lambda k: bar.update(task, completed=k),
            on_stage=lambda text: bar.console.print(text),
        )
    for note in summary.notes:
        out.print(f"note: {note}")
    if summary.heldout:
        h = summary.heldout
        angles = ", ".join(f"{a:g}°" for a in h["left_out_angles"])
        out.print(f"held-out check: HAADF tilts {angles} predicted with relative error {h['relative_error']:.3f}")
    out.print(f"wrote {summary.out}: " + ", ".join(summary.files) + f" ({summary.wall_time_s:.1f} s)")
