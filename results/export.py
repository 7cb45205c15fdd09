"""Exports of a sweep store: NRMSE heatmaps, best-weights maps, trials CSV/Parquet,
convergence, and the optimiser's view of one cell's objective.

Everything is read through :class:`~tomosweep.results.store.SweepStore`. The heatmap
follows Schwartz 2024 Fig. 4a: one panel per method, chemical tilts along x, HAADF
tilts along y, the best mean NRMSE written in each cell, one colour scale shared by
all panels so methods compare at a glance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import StoreError
from tomosweep.results.folders import StagedOutput, check_replaceable, check_space
from tomosweep.results.spreadsheet import write_csv
from tomosweep.results.store import SweepStore, pruning_summary


def trials_frame(store: SweepStore) -> Any:
    """Every committed trial as a pandas DataFrame (one row per trial, flat columns)."""
    import pandas as pd

    cols = store.columns()
    n = store.n_committed
    meta = [json.loads(str(m)) for m in cols["meta"]]
    frame: dict[str, Any] = {
        "trial_id": np.arange(n),
        "method": [store.methods[int(m)] for m in cols["method"]],
        "n_haadf": cols["n_haadf"],
        "n_chem": cols["n_chem"],
        "status": [("ok", "failed", "pruned")[int(code)] for code in cols["status"]],
        "nrmse": cols["nrmse"],
    }
    for k, element in enumerate(store.elements):
        frame[f"nrmse_{element}"] = cols["nrmse_elements"][:, k] if n else np.array([])
    for k, name in enumerate(store.param_names):
        frame[name] = cols["params"][:, k] if n else np.array([])
    frame["iterations"] = cols["iterations"]
    frame["wall_time_s"] = cols["wall_time_s"]
    for field in ("worker", "device", "attempts", "finished_at", "error", "proposed_by"):
        frame[field] = [m.get(field, "") for m in meta]
    frame["final_costs"] = [json.dumps(m.get("info", {}).get("final_costs", {})) for m in meta]
    return pd.DataFrame(frame)


def scored_by(store: SweepStore) -> str:
    """What a store's values are: ``"mean NRMSE"`` for a study, the held-out ``"loss"`` of a tune
    (``tomosweep tune``: a loss the data give, no ground truth)."""
    return "loss (held out, no ground truth)" if "data" in store.spec else "mean NRMSE"


def best_params_frame(store: SweepStore) -> Any:
    """One row per (method, cell): best NRMSE, its parameters, trial and failure counts,
    and ``stopped``: why the cell stopped before its cap (empty while it has not)."""
    import pandas as pd

    spec_methods = store.spec.get("methods", {})
    pruned = pruning_summary(store.records())
    states = store.optimiser_state()
    rows = []
    for method in store.methods:
        maps = store.maps(method)
        # a tune's searched sensitivities (sensitivity_<element>) belong to every method it searched
        names = [
            n
            for n in store.param_names
            if n in spec_methods.get(method, store.param_names) or n.startswith("sensitivity_")
        ]
        for i, h in enumerate(store.n_haadf):
            for j, c in enumerate(store.n_chem):
                row = {
                    "method": method,
                    "n_haadf": h,
                    "n_chem": c,
                    "best_nrmse": maps["best_nrmse"][i, j],
                    "n_trials": int(maps["n_trials"][i, j]),
                    "n_failed": int(maps["n_failed"][i, j]),
                    "n_pruned": int(pruned.get((method, h, c), {}).get("n_pruned", 0)),
                    "solver_s_saved": round(float(pruned.get((method, h, c), {}).get("saved_s", 0.0)), 3),
                }
                for name in names:
                    row[name] = maps["best_params"][i, j, store.param_names.index(name)]
                state = states.get(f"{method}/{h}/{c}")
                row["stopped"] = str(state.get("stopped") or "") if isinstance(state, dict) else ""
                rows.append(row)
    return pd.DataFrame(rows)


def _grid_panels(store: SweepStore, n_panels: int, *, width_per_panel: float, extra: float) -> tuple[Any, Any]:
    """A row of panels, each sized for the store's tilt grid (a ``Figure``: no pyplot, no backend)."""
    from matplotlib.figure import Figure

    height = max(3.2, 0.6 * len(store.n_haadf) + 1.8)
    fig = Figure(figsize=(width_per_panel * n_panels + extra, height), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)


def heatmap_figure(store: SweepStore) -> Any:
    """The NRMSE map of every method side by side (Schwartz 2024 Fig. 4a style)."""
    methods = store.methods
    grids = [store.maps(m)["best_nrmse"] for m in methods]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmax = vmin + 1e-3
    n_h, n_c = len(store.n_haadf), len(store.n_chem)
    fig, axes = _grid_panels(store, len(methods), width_per_panel=max(3.2, 0.75 * n_c + 1.6), extra=1.2)
    image = None
    for ax, method, grid in zip(axes[0], methods, grids, strict=True):
        image = ax.imshow(grid, origin="lower", cmap="viridis_r", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(n_c), [str(v) for v in store.n_chem])
        ax.set_yticks(range(n_h), [str(v) for v in store.n_haadf])
        ax.set_xlabel("chemical tilts")
        ax.set_title(method)
        middle = (vmin + vmax) / 2
        for i in range(n_h):
            for j in range(n_c):
                value = grid[i, j]
                text = "–" if not np.isfinite(value) else f"{value:.2f}"
                colour = "white" if np.isfinite(value) and value > middle else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    axes[0, 0].set_ylabel("HAADF tilts")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label=f"best {scored_by(store)}", shrink=0.9)
    name = store.spec.get("name", "study")
    fig.suptitle(f"{name}: best {scored_by(store)} over the tilt grid")
    return fig


#: the most cells drawn one panel each; a larger map's convergence is summarised per method
CONVERGENCE_PANELS = 36


def _best_so_far(store: SweepStore, cols: Mapping[str, np.ndarray], method: int, h: int, c: int) -> np.ndarray:
    """A cell's best mean NRMSE after each of its trials of ``method`` (NaN until one finished)."""
    rows = (cols["n_haadf"] == h) & (cols["n_chem"] == c) & (cols["method"] == method)
    values = np.where(cols["status"][rows] == 0, cols["nrmse"][rows], np.inf)
    best = np.minimum.accumulate(values) if values.size else values
    return np.where(np.isfinite(best), best, np.nan)


def convergence_figure(store: SweepStore) -> Any:
    """Best-so-far mean NRMSE against trial number: one panel per cell, one line per method,
    up to :data:`CONVERGENCE_PANELS` cells; beyond, one panel per method summarising every
    cell (:func:`convergence_summary`), since a panel per cell of a 1,000-cell map takes
    minutes to lay out and cannot be read."""
    from matplotlib.figure import Figure

    n_h, n_c = len(store.n_haadf), len(store.n_chem)
    if n_h * n_c > CONVERGENCE_PANELS:
        return convergence_summary(store)
    fig = Figure(figsize=(2.4 * n_c + 1.4, 1.9 * n_h + 1), layout="constrained")
    axes = fig.subplots(
        n_h,
        n_c,
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    cols = store.columns()
    for i, h in enumerate(store.n_haadf):
        for j, c in enumerate(store.n_chem):
            ax = axes[n_h - 1 - i, j]  # high HAADF counts on top, as in the heatmap
            for m, method in enumerate(store.methods):
                best = _best_so_far(store, cols, m, h, c)
                if best.size:
                    ax.step(np.arange(1, best.size + 1), best, where="post", label=method)
            ax.set_title(f"{h} HAADF × {c} chem", fontsize=8)
            ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("trial", fontsize=8)
    for row in axes:
        row[0].set_ylabel(f"best {scored_by(store)}", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if not handles:
        for ax in axes.ravel():
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                break
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle(f"best-so-far {scored_by(store)} per cell")
    return fig


def convergence_summary(store: SweepStore) -> Any:
    """Best-so-far mean NRMSE against trial number for a large map: one panel per method,
    every cell's curve as a faint line, with the median over the cells and the band
    between their 10th and 90th percentiles at each trial number."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n_cells = len(store.n_haadf) * len(store.n_chem)
    methods = store.methods
    fig = Figure(figsize=(4.2 * len(methods) + 0.6, 3.6), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    cols = store.columns()
    for m, (ax, method) in enumerate(zip(axes, methods, strict=True)):
        curves = [
            curve for h in store.n_haadf for c in store.n_chem if (curve := _best_so_far(store, cols, m, h, c)).size
        ]
        if curves:
            longest = max(curve.size for curve in curves)
            table = np.full((len(curves), longest), np.nan)
            for k, curve in enumerate(curves):
                table[k, : curve.size] = curve
            x = np.arange(1, longest + 1)
            ax.add_collection(
                LineCollection(
                    [np.column_stack([np.arange(1, curve.size + 1), curve]) for curve in curves],
                    colors="0.6",
                    linewidths=0.4,
                    alpha=0.25,
                )
            )
            finished = np.isfinite(table).any(axis=0)
            if finished.any():
                with np.errstate(all="ignore"):
                    low, median, high = np.nanpercentile(table[:, finished], [10, 50, 90], axis=0)
                ax.fill_between(x[finished], low, high, color="C0", alpha=0.3, label="10–90 % of cells")
                ax.plot(x[finished], median, color="C0", label="median cell")
            ax.autoscale_view()
            ax.legend(fontsize=8)
        ax.set_title(f"{method}: {len(curves)} of {n_cells} cells", fontsize=9)
        ax.set_xlabel("trial of the cell", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(f"best {scored_by(store)}", fontsize=8)
    fig.suptitle(f"best-so-far {scored_by(store)} over every cell")
    return fig


def searched_ranges(store: SweepStore, method: str) -> dict[str, dict[str, Any]]:
    """The parameters ``method`` searched in this study, with their stored ranges."""
    table = store.spec.get("methods", {}).get(method, {})
    return {name: value for name, value in table.items() if isinstance(value, dict)}


def best_weights_figure(store: SweepStore, method: str) -> Any:
    """One map per searched parameter: the best trial's value in every cell (same layout
    as the NRMSE heatmap), so a drift of the best weights over the tilt grid shows."""
    from matplotlib.colors import LogNorm, Normalize

    ranges = searched_ranges(store, method)
    best = store.maps(method)["best_params"]
    n_h, n_c = len(store.n_haadf), len(store.n_chem)
    fig, axes = _grid_panels(store, len(ranges), width_per_panel=max(3.2, 0.75 * n_c + 1.9), extra=0.5)
    for ax, (name, rng) in zip(axes[0], ranges.items(), strict=True):
        grid = best[:, :, store.param_names.index(name)]
        low, high = float(rng["low"]), float(rng["high"])
        norm = LogNorm(low, high) if rng.get("prior") == "log" and low > 0 else Normalize(low, high)
        image = ax.imshow(grid, origin="lower", cmap="cividis", norm=norm, aspect="auto")
        for i in range(n_h):
            for j in range(n_c):
                value = grid[i, j]
                text = "–" if not np.isfinite(value) else f"{value:.3g}"
                light = np.isfinite(value) and sum(image.cmap(norm(value))[:3]) > 1.5
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="k" if light or not np.isfinite(value) else "w",
                )
        ax.set_xticks(range(n_c), [str(v) for v in store.n_chem])
        ax.set_yticks(range(n_h), [str(v) for v in store.n_haadf])
        ax.set_xlabel("chemical tilts")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, shrink=0.85)
    axes[0, 0].set_ylabel("HAADF tilts")
    fig.suptitle(f"{method}: best weights over the tilt grid")
    return fig


def objective_figure(surface: Any, title: str, *, n_points: int = 30, n_samples: int = 250) -> Any:
    """The optimiser's view of one cell's objective: the partial dependence of its GP's mean
    (Friedman 2001, §8.2: the mean averaged over the other weights, drawn uniformly in the
    search's box) over every searched weight (diagonal) and every pair (below it), the trials
    as dots and the best as a star; with one searched weight, the GP mean along it.

    ``surface`` carries ``names``, ``log`` (a log axis per weight), ``points`` and ``values``
    (the trials, values in the GP's units), ``mean(unit)`` (the GP's mean at unit-box points) and
    ``space`` (``from_unit``/``to_unit`` of one point); see :class:`tomosweep.search.cell.Surface`.
    """
    from matplotlib.figure import Figure

    names = list(surface.names)
    d = len(names)
    points = np.asarray(surface.points, dtype=float).reshape(-1, d)
    values = np.asarray(surface.values, dtype=float)
    best = int(np.argmin(values))
    grid = np.linspace(0.0, 1.0, n_points)
    rng = np.random.default_rng(0)
    background = rng.random((n_samples, d))

    def axis_values(k: int) -> np.ndarray:
        """The grid along weight ``k`` in its own units."""
        unit = np.full((n_points, d), 0.5)
        unit[:, k] = grid
        return np.array([surface.space.from_unit(u)[k] for u in unit], dtype=float)

    def dependence(dims: tuple[int, ...]) -> np.ndarray:
        shape = (n_points,) * len(dims)
        out = np.empty(shape)
        for index in np.ndindex(*shape):
            X = background.copy()
            for k, i in zip(dims, index, strict=True):
                X[:, k] = grid[i]
            out[index] = float(np.mean(surface.mean(X)))
        return out

    if d == 1:
        fig = Figure(figsize=(5, 3.5), layout="constrained")
        ax = fig.subplots()
        ax.plot(axis_values(0), surface.mean(grid[:, None]), label="GP mean")
        ax.plot(points[:, 0], values, "k.", label="trials")
        ax.set_xscale("log" if surface.log[0] else "linear")
        ax.set_xlabel(names[0])
        ax.set_ylabel("log NRMSE")
        ax.legend(fontsize=8)
    else:
        fig = Figure(figsize=(2.6 * d + 1.5, 2.6 * d + 1.2), layout="constrained")
        axes = fig.subplots(d, d, squeeze=False)
        for i in range(d):
            for j in range(d):
                ax = axes[i, j]
                if j > i:
                    ax.set_visible(False)
                    continue
                if i == j:
                    ax.plot(axis_values(i), dependence((i,)))
                    ax.set_xscale("log" if surface.log[i] else "linear")
                    ax.set_ylabel("partial dependence", fontsize=8)
                else:
                    xs, ys = axis_values(j), axis_values(i)
                    ax.contourf(xs, ys, dependence((i, j)), levels=10, cmap="viridis_r")
                    ax.plot(points[:, j], points[:, i], "k.", markersize=3)
                    ax.plot(points[best, j], points[best, i], "r*", markersize=10)
                    ax.set_xscale("log" if surface.log[j] else "linear")
                    ax.set_yscale("log" if surface.log[i] else "linear")
                    if j == 0:
                        ax.set_ylabel(names[i])
                if i == d - 1:
                    ax.set_xlabel(names[j])
    fig.suptitle(title, y=1.02)
    return fig


def export_names(store: SweepStore, cell: tuple[int, int] | None = None) -> list[str]:
    """The files :func:`export` writes for ``store`` (and ``cell``)."""
    names = ["trials.csv", "trials.parquet", "best_params.csv", "nrmse_heatmap.png", "nrmse_heatmap.svg"]
    names.append("convergence.png")
    for method in store.methods:
        if searched_ranges(store, method):
            names.append(f"best_weights_{method}.png")
            if cell is not None:
                names.append(f"objective_{method}_{cell[0]}x{cell[1]}.png")
    return names


def check_export_folder(store: SweepStore, out: str | os.PathLike[str], names: list[str], *, overwrite: bool) -> Path:
    """Refuse an output folder that is a file, inside a store, or holds files export would
    replace (unless ``overwrite``, which replaces those files and touches nothing else), or whose
    disk is read-only or full. A file of those names that tomosweep did not write (or that
    was changed since: see :mod:`tomosweep.results.folders`) is never replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StoreError(f"--out {out} is a file; export writes a folder of files: choose a folder path")
    resolved, inside = out.resolve(), Path(store.path).resolve()
    if resolved == inside or inside in resolved.parents:
        raise StoreError(f"--out {out} is inside the store {store.path}; write the export next to the store")
    for folder in (resolved, *resolved.parents):
        if (folder / "zarr.json").exists():
            raise StoreError(f"--out {out} is inside the zarr store {folder}; write the export elsewhere")

    check_replaceable(out, names, overwrite=overwrite, error=StoreError)
    check_space(out)
    return out


def export(
    store: SweepStore,
    out: str | os.PathLike[str],
    *,
    cell: tuple[int, int] | None = None,
    surrogates: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write every export of ``store`` into ``out`` (created); return the files written.

    ``surrogates`` maps a method to the fitted surface of ``cell`` (see
    :func:`objective_figure`); the sweep layer builds them, this module only draws.
    Files of an earlier export in ``out`` are replaced only with ``overwrite``.
    """
    out = check_export_folder(store, out, export_names(store, cell), overwrite=overwrite)
    # written beside the folder and moved in at the end: an interrupted export changes nothing
    with StagedOutput(out, command="export") as staged:
        written = _write_export(store, staged.stage, cell=cell, surrogates=surrogates)
        staged.commit()
    return [out / path.name for path in written]


def _write_export(
    store: SweepStore, out: Path, *, cell: tuple[int, int] | None, surrogates: Mapping[str, Any] | None
) -> list[Path]:
    written = []
    trials = trials_frame(store)
    write_csv(trials, out / "trials.csv")  # spreadsheet-safe; Parquet keeps the store's strings as they are
    trials.to_parquet(out / "trials.parquet", index=False)
    written += [out / "trials.csv", out / "trials.parquet"]
    best = best_params_frame(store)
    write_csv(best, out / "best_params.csv")
    written.append(out / "best_params.csv")
    fig = heatmap_figure(store)
    for suffix in (".png", ".svg"):
        fig.savefig(out / f"nrmse_heatmap{suffix}", dpi=150)
        written.append(out / f"nrmse_heatmap{suffix}")
    fig = convergence_figure(store)
    fig.savefig(out / "convergence.png", dpi=120)
    written.append(out / "convergence.png")
    for method in store.methods:
        if not searched_ranges(store, method):
            continue
        fig = best_weights_figure(store, method)
        fig.savefig(out / f"best_weights_{method}.png", dpi=120)
        written.append(out / f"best_weights_{method}.png")
        if cell is not None and surrogates and method in surrogates:
            n = len(surrogates[method].points)
            title = (
                f"{method}, {cell[0]} HAADF × {cell[1]} chemical tilts\n"
                f"the optimiser's GP: mean log NRMSE over {n} trials (partial dependence)"
            )
            fig = objective_figure(surrogates[method], title)
            path = out / f"objective_{method}_{cell[0]}x{cell[1]}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            written.append(path)
    return written
