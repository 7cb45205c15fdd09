"""What a whole map costs: per-cell against map surrogates, adaptive budgets, and Optuna (JSON out).

The objective is the real one, tabulated by ``map_tables.py`` (every grid point a real
trial through :func:`tomosweep.sweep.trial.run_trial`, with its solver seconds) and
interpolated bicubically in log weights on log NRMSE; ``--check`` reruns real trials at
points the searches chose and reports the interpolation's error. That makes hundreds of
searches affordable on two shared cores; every NRMSE here is the interpolated table's.

1. ``cell``: one cell (fused, 24³ nanocubes, 30 HAADF × 8 chemical tilts, default fused
   ranges: λ_haadf, λ_tv), 24 trials, sequential. tomosweep's GP-Hedge as it is now and
   as it was (the committed ``sweep/optimizer.py`` at ``--before``), its random search,
   and Optuna's GPSampler and TPESampler (a benchmark-only dependency: ``pip install
   optuna torch``) on the same objective and space. Median best after 8/16/24 trials and
   median trials to come within 5 % of the best any run found.
2. ``map``: a 4 × 4 grid (16³ nanocubes, 8-60 HAADF × 3-24 chemical tilts) through the
   real :class:`~tomosweep.sweep.runner.Runner` (one trial at a time, in-process Dask),
   per strategy — cell (independent), cell + neighbour warm starts (today's default),
   map, map + adaptive budget — for fused and SIRT: total trials and solver core-seconds
   until every cell is within 5 % of its reference (the best any strategy found for that
   cell in any run), and the map's mean best NRMSE at equal total trials.

    nice -n 10 python benchmarks/map_cost.py [--only cell map] [--seeds 5] [--check 4]
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, parser, trials_to_within, write

HERE = Path(__file__).parent
REPO = HERE.parent
SPACE = {"lambda_haadf": (0.01, 100.0, "log", "real"), "lambda_tv": (0.05, 20.0, "log", "real")}


class Table:
    """One cell's tabulated objective: bicubic in (log10 λ_haadf, log10 λ_tv) on log NRMSE;
    SIRT linear in log n_iter. Solver seconds from the nearest tabulated point."""

    def __init__(self, entry: dict[str, Any], axes: dict[str, list[float]]) -> None:
        from scipy.interpolate import RectBivariateSpline

        self.a = np.log10(axes["lambda_haadf"])
        self.t = np.log10(axes["lambda_tv"])
        values = np.array([math.nan if v is None else v for v in entry["fused"]], dtype=float)
        worst = np.nanmax(values)
        grid = np.log(np.where(np.isfinite(values), values, worst)).reshape(len(self.a), len(self.t))
        self.spline = RectBivariateSpline(self.a, self.t, grid, kx=3, ky=3)
        self.seconds = np.asarray(entry["fused_s"], dtype=float).reshape(len(self.a), len(self.t))
        self.table_best = float(np.exp(grid.min()))
        if "sirt" in entry:
            self.sirt_iters = np.log(entry["sirt_n_iter"])
            self.sirt_values = np.log([v if v is not None else 2.0 for v in entry["sirt"]])
            self.sirt_seconds = np.asarray(entry["sirt_s"], dtype=float)

    def fused(self, params: dict[str, float]) -> tuple[float, float]:
        a = float(np.clip(math.log10(params["lambda_haadf"]), self.a[0], self.a[-1]))
        t = float(np.clip(math.log10(params["lambda_tv"]), self.t[0], self.t[-1]))
        i = int(np.argmin(abs(self.a - a)))
        j = int(np.argmin(abs(self.t - t)))
        return float(np.exp(self.spline(a, t)[0, 0])), float(self.seconds[i, j])

    def sirt(self, params: dict[str, float]) -> tuple[float, float]:
        x = math.log(params["n_iter"])
        value = float(np.exp(np.interp(x, self.sirt_iters, self.sirt_values)))
        return value, float(self.sirt_seconds[int(np.argmin(abs(self.sirt_iters - x)))])


TABLES_DIR = HERE / "results"


def load_tables(name: str) -> tuple[dict[str, Any], dict[tuple[str, int, int], Table]]:
    report = json.loads((TABLES_DIR / f"map_tables_{name}.json").read_text())
    tables = {}
    for key, entry in report["cells"].items():
        specimen, h, c = key.split("/")
        tables[(specimen, int(h), int(c))] = Table(entry, report["axes"])
    return report, tables


# ---------------------------------------------------------------------- one cell


def before_optimizer(commit: str) -> Any:
    """The per-cell optimiser as committed at ``commit`` (``sweep/optimizer.py``, self-contained, on
    scikit-optimize: what a user had before the search stood on scikit-learn alone)."""
    source = subprocess.run(
        ["git", "show", f"{commit}:sweep/optimizer.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "optimizer_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("optimizer_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["optimizer_before"] = module
    spec.loader.exec_module(module)
    return module.CellOptimizer


def run_tomosweep(cls: Any, objective: Any, n: int, seed: int, **options: Any) -> tuple[list[float], list[dict]]:
    opt = cls(SPACE, n_initial=5, seed=seed, **options)
    values, points = [], []
    for k in range(n):
        proposal = opt.ask(k)
        value, _ = objective(proposal.params)
        opt.tell(proposal.params, value, key=k)
        values.append(value)
        points.append(proposal.params)
    return values, points


def run_optuna(sampler_name: str, objective: Any, n: int, seed: int) -> tuple[list[float], list[dict]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.GPSampler(seed=seed) if sampler_name == "gp" else optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    values, points = [], []

    def fn(trial: Any) -> float:
        params = {
            name: trial.suggest_float(name, low, high, log=prior == "log")
            for name, (low, high, prior, _) in SPACE.items()
        }
        value, _ = objective(params)
        values.append(value)
        points.append(params)
        return value

    study.optimize(fn, n_trials=n)
    return values, points


def one_cell(seeds: int, n: int, before: str, check: int) -> dict[str, Any]:
    from tomosweep.search.cell import cell_search

    report, tables = load_tables("cell")
    ((key, table),) = tables.items()
    samplers: dict[str, Any] = {
        "tomosweep_gp": lambda s: run_tomosweep(cell_search, table.fused, n, s),
        "tomosweep_random": lambda s: run_tomosweep(cell_search, table.fused, n, s, sampler="random"),
    }
    try:
        import skopt  # noqa: F401

        samplers["tomosweep_gp_before"] = lambda s: run_tomosweep(before_optimizer(before), table.fused, n, s)
    except ImportError:
        print("scikit-optimize is not installed: the optimiser before is left out", flush=True)
    try:
        import optuna  # noqa: F401

        samplers["optuna_tpe"] = lambda s: run_optuna("tpe", table.fused, n, s)
        try:
            import torch  # noqa: F401  (Optuna's GPSampler needs it)

            samplers["optuna_gp"] = lambda s: run_optuna("gp", table.fused, n, s)
        except ImportError:
            print("torch is not installed: Optuna's GPSampler is left out", flush=True)
    except ImportError:
        print("optuna is not installed: its samplers are left out", flush=True)
    runs: dict[str, list[list[float]]] = {}
    points: dict[str, list[list[dict]]] = {}
    seconds: dict[str, float] = {}
    for name, fn in samplers.items():
        t0 = time.perf_counter()
        for seed in range(seeds):
            values, chosen = fn(seed)
            runs.setdefault(name, []).append(values)
            points.setdefault(name, []).append(chosen)
        seconds[name] = (time.perf_counter() - t0) / seeds
        print(name, [round(min(v), 4) for v in runs[name]], f"{seconds[name]:.1f} s per run", flush=True)
    reference = min(min(v) for vs in runs.values() for v in vs)
    target = 1.05 * reference
    summary = {}
    for name, vs in runs.items():
        summary[name] = {
            **{f"median_best_at_{k}": statistics.median(min(v[:k]) for v in vs) for k in (8, 16, n)},
            "median_trials_to_within_5pct": statistics.median(trials_to_within(v, target) for v in vs),
            "trials_to_within_5pct": [trials_to_within(v, target) for v in vs],
            "best_per_seed": [min(v) for v in vs],
            "driver_s_per_run": seconds[name],
        }
    checks = []
    if check:
        checks = check_table(
            key,
            table,
            [
                p[int(np.argmin(v))]
                for vs, ps in zip(runs.values(), points.values(), strict=True)
                for v, p in zip(vs, ps, strict=True)
            ][:check],
        )
    better_optuna = min(
        (summary[k] for k in ("optuna_gp", "optuna_tpe") if k in summary),
        key=lambda s: s["median_trials_to_within_5pct"],
        default=None,
    )
    met = None
    if better_optuna is not None:
        ours = summary["tomosweep_gp"]
        met = {
            f"at_{k}": ours[f"median_best_at_{k}"]
            <= min(summary[o][f"median_best_at_{k}"] for o in ("optuna_gp", "optuna_tpe") if o in summary)
            for k in (8, 16, n)
        }
        met["trials_to_5pct"] = ours["median_trials_to_within_5pct"] <= min(
            summary[o]["median_trials_to_within_5pct"] for o in ("optuna_gp", "optuna_tpe") if o in summary
        )
        met["gp_le_half_random"] = (
            ours["median_trials_to_within_5pct"] <= summary["tomosweep_random"]["median_trials_to_within_5pct"] / 2
        )
    return {
        "problem": f"fused, {report['size']}³ {key[0]}, {key[1]} HAADF × {key[2]} chemical tilts, default ranges "
        "(lambda_haadf 0.01-100, lambda_tv 0.05-20, log), sequential",
        "table": f"{report['grid']} × {report['grid']} real trials, bicubic in log weights on log NRMSE",
        "table_best": table.table_best,
        "trials": n,
        "seeds": seeds,
        "reference_best": reference,
        "summary": summary,
        "interpolation_check": checks,
        "target": "tomosweep_gp no worse than the better Optuna sampler at 8, 16, 24 trials and in trials to 5 %",
        "met": met,
    }


def check_table(key: tuple[str, int, int], table: Table, points: list[dict]) -> list[dict]:
    """Real trials at ``points``: how far the interpolated table is from the objective."""
    from tomosweep.sweep import study_from_dict
    from tomosweep.sweep.trial import TrialTask, run_trial

    specimen, h, c = key
    spec = {
        "name": "check",
        "seed": 0,
        "phantom": {"name": specimen, "size": 24},
        "acquisition": {"n_haadf": [h], "n_chem": [c]},
        "methods": {"fused": {}},
        "budget": {"trials_per_cell": 1, "initial_points": 1},
    }
    study = study_from_dict(spec)
    study_json = json.dumps(study.to_json(), sort_keys=True)
    out = []
    for p in points:
        real = run_trial(TrialTask(study_json, "fused", h, c, {**study.fixed("fused"), **p})).nrmse
        interpolated, _ = table.fused(p)
        out.append({"params": p, "real": real, "table": interpolated, "relative_error": interpolated / real - 1})
        print("check", out[-1], flush=True)
    return out


# ---------------------------------------------------------------------- the map

STRATEGIES = {
    "cell": {"surrogate": "cell", "warm_start": False},
    "cell_warm": {"surrogate": "cell", "warm_start": True},
    "map": {"surrogate": "map"},
    "map_adaptive": {"surrogate": "map", "stop_tolerance": 0.01, "stop_patience": 3},
}


def map_spec(
    report: dict[str, Any], method: str, strategy: str, seed: int, cap: int, specimen: str | None = None
) -> dict[str, Any]:
    from map_tables import DEFAULT_FUSED_RANGES

    fused = {**DEFAULT_FUSED_RANGES, "n_iter": report["n_iter"]} if report.get("n_iter") else {}
    searched = {"fused": fused, "sirt": {}}[method]
    return {
        "name": f"map-{method}-{strategy}",
        "seed": seed,
        "phantom": {"name": specimen or report["specimens"][0], "size": report["size"]},
        "acquisition": {"n_haadf": report["n_haadf"], "n_chem": report["n_chem"]},
        "methods": {method: searched},
        "budget": {"trials_per_cell": cap, "initial_points": 5, **STRATEGIES[strategy]},
    }


def table_record(task: Any, value: float, seconds: float) -> Any:
    """The record a worker would have sent for ``task``, with the table's NRMSE and seconds."""
    from tomosweep.results import OK, TrialRecord

    return TrialRecord(
        method=task.method,
        n_haadf=task.n_haadf,
        n_chem=task.n_chem,
        params=dict(task.params),
        status=OK,
        nrmse=value,
        nrmse_elements=(value,),
        wall_time_s=seconds,
        finished_at=time.time(),
    )


def table_trial(tables: dict[tuple[str, int, int], Table], specimen: str) -> Any:
    """A trial function that answers from the tables (what a worker would have computed)."""

    def trial(task: Any) -> Any:
        table = tables[(specimen, task.n_haadf, task.n_chem)]
        return table_record(task, *getattr(table, task.method)(dict(task.params)))

    return trial


def run_map(spec: dict[str, Any], trial: Any, path: Path, client: Any) -> tuple[list[Any], dict[str, Any], float]:
    from tomosweep.results import SweepStore
    from tomosweep.sweep import study_from_dict
    from tomosweep.sweep.api import create_store
    from tomosweep.sweep.runner import Runner

    study = study_from_dict(spec)
    t0 = time.perf_counter()
    with create_store(study, path, elements=("x",)) as store:
        Runner(study, store, client, slots=1, queue_extra=0, trial_fn=trial).run()
    driver_s = time.perf_counter() - t0
    with SweepStore.open(path) as store:
        return store.records(), store.optimiser_state(), driver_s


def map_cost(
    seeds: int,
    cap: int = 12,
    methods: tuple[str, ...] = ("fused", "sirt"),
    specimen: str | None = None,
    table: str = "map",
) -> dict[str, Any]:
    from distributed import Client

    report, tables = load_tables(table)
    specimen = specimen or report["specimens"][0]
    trial = table_trial(tables, specimen)
    cells = [(h, c) for h in report["n_haadf"] for c in report["n_chem"]]
    out: dict[str, Any] = {
        "grid": [report["n_haadf"], report["n_chem"]],
        "problem": f"{report['size']}³ {specimen}; fused (lambda_haadf, lambda_tv, default ranges) and SIRT "
        f"(n_iter 2-200); tables of real trials ({report['grid']} × {report['grid']} per cell for fused)",
        "cap_per_cell": cap,
        "seeds": seeds,
        "methods": {},
    }
    with (
        Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0") as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for method in methods:
            runs: dict[str, list[dict[str, Any]]] = {}
            for strategy in STRATEGIES:
                for seed in range(seeds):
                    path = Path(tmp) / f"{method}-{strategy}-{seed}.zarr"
                    records, states, driver_s = run_map(
                        map_spec(report, method, strategy, seed, cap, specimen), trial, path, client
                    )
                    stopped = {k: v.get("stopped") for k, v in states.items() if v.get("stopped")}
                    runs.setdefault(strategy, []).append(
                        {
                            "seq": [((r.n_haadf, r.n_chem), r.nrmse, r.wall_time_s) for r in records],
                            "driver_s": driver_s,
                            "stopped": len(stopped),
                        }
                    )
                    print(
                        method,
                        strategy,
                        seed,
                        len(records),
                        "trials",
                        f"{driver_s:.0f} s driver",
                        f"{len(stopped)} cells stopped",
                        flush=True,
                    )
            reference = {
                cell: min(v for rs in runs.values() for r in rs for (k, v, _) in r["seq"] if k == cell)
                for cell in cells
            }
            out["methods"][method] = summarise(runs, reference, cells)
            print(json.dumps(out["methods"][method]["summary"], indent=1), flush=True)
    return out


def summarise(runs: dict[str, list[dict[str, Any]]], reference: dict[Any, float], cells: list[Any]) -> dict[str, Any]:
    """Per strategy: trials and solver seconds until every cell is within 5 % of its
    reference (in commit order), and the mean of the cells' best at equal total trials."""
    summary: dict[str, Any] = {}
    for strategy, rs in runs.items():
        per_run = []
        for r in rs:
            best = dict.fromkeys(cells, math.inf)
            reached_at = seconds_at = None
            spent_s = 0.0
            means = {}
            for n, (cell, value, seconds) in enumerate(r["seq"], start=1):
                best[cell] = min(best[cell], value)
                spent_s += seconds
                if reached_at is None and all(best[k] <= 1.05 * reference[k] for k in cells):
                    reached_at, seconds_at = n, spent_s
                if n % len(cells) == 0:
                    means[n] = float(np.mean([best[k] for k in cells]))
            per_run.append(
                {
                    "trials_spent": len(r["seq"]),
                    "solver_s_spent": spent_s,
                    "trials_until_every_cell_within_5pct": reached_at,
                    "solver_s_until_every_cell_within_5pct": seconds_at,
                    "cells_within_5pct_at_end": sum(best[k] <= 1.05 * reference[k] for k in cells),
                    "mean_best_at_equal_trials": means,
                    "cells_stopped_early": r["stopped"],
                    "driver_s": r["driver_s"],
                }
            )
        reached = [p["trials_until_every_cell_within_5pct"] for p in per_run]
        summary[strategy] = {
            "runs": per_run,
            "median_trials_until_every_cell_within_5pct": None if None in reached else statistics.median(reached),
            "median_solver_s_until_every_cell_within_5pct": None
            if None in reached
            else statistics.median(p["solver_s_until_every_cell_within_5pct"] for p in per_run),
            "median_trials_spent": statistics.median(p["trials_spent"] for p in per_run),
            "median_cells_within_5pct_at_end": statistics.median(p["cells_within_5pct_at_end"] for p in per_run),
        }
    return {"reference_per_cell": {f"{h}x{c}": v for (h, c), v in reference.items()}, "summary": summary}


# ---------------------------------------------------------------------- ladder and workers


def load_sized(names: tuple[str, ...]) -> dict[tuple[str, int, int, int], Table]:
    """Tables of several ``map_tables.py`` runs keyed (specimen, size, n_haadf, n_chem)."""
    out = {}
    for name in names:
        if name != names[0] and not (TABLES_DIR / f"map_tables_{name}.json").exists():
            continue  # a table split over processes (map_tables.py --specimens ... --out ...) may be one file
        report, tables = load_tables(name)
        out.update({(sp, report["size"], h, c): t for (sp, h, c), t in tables.items()})
    return out


def sized_trial(tables: dict[tuple[str, int, int, int], Table], delay: float = 0.0) -> Any:
    """A trial answered from the table of its study's specimen and size; with ``delay``,
    it takes ``delay`` × its tabulated solver seconds, so trials in flight overlap as on a
    cluster (the order results arrive in is then the cluster's, not the asking order)."""
    phantoms: dict[str, tuple[str, int]] = {}

    def trial(task: Any) -> Any:
        if task.study_json not in phantoms:
            phantom = json.loads(task.study_json)["phantom"]
            phantoms[task.study_json] = (phantom["name"], phantom["size"])
        specimen, size = phantoms[task.study_json]
        value, seconds = tables[(specimen, size, task.n_haadf, task.n_chem)].fused(dict(task.params))
        if delay:
            time.sleep(delay * seconds)
        return table_record(task, value, seconds)

    return trial


def fused_map_spec(specimen: str, size: int, seed: int, cap: int, **budget: Any) -> dict[str, Any]:
    from map_tables import DEFAULT_FUSED_RANGES, TABLES

    setup = TABLES["map"]
    return {
        "name": f"map-{specimen}",
        "seed": seed,
        "phantom": {"name": specimen, "size": size},
        "acquisition": {"n_haadf": setup["n_haadf"], "n_chem": setup["n_chem"]},
        "methods": {"fused": {**DEFAULT_FUSED_RANGES, "n_iter": setup["n_iter"]}},
        "budget": {"trials_per_cell": cap, "initial_points": 5, **budget},
    }


def run_sized(spec: dict[str, Any], trial: Any, path: Path, client: Any, slots: int = 1) -> list[list[Any]]:
    """Run a (possibly laddered) study through the product's own ladder and runner, ``slots``
    trials in flight; the committed trials of each rung, then of the study, in commit order."""
    from tomosweep.results import SweepStore
    from tomosweep.sweep import study_from_dict
    from tomosweep.sweep.api import create_store
    from tomosweep.sweep.ladder import climb
    from tomosweep.sweep.runner import Runner

    study = study_from_dict(spec)

    def runner(s: Any, store: Any, warm: list[Any]) -> Any:
        return Runner(s, store, client, slots=slots, queue_extra=0, trial_fn=trial, warm_from=warm).run()

    def create(s: Any, p: Path) -> Any:
        return create_store(s, p, elements=("x",))

    with create_store(study, path, elements=("x",)) as store:
        earlier = climb(study, path, runner, create=create)
        runner(study, store, earlier)
    stores = [*(path / "ladder" / str(size) for size in study.budget.ladder), path]
    out = []
    for p in stores:
        with SweepStore.open(p) as opened:
            out.append(opened.records())
    return out


def transfer(tables: dict[tuple[str, int, int, int], Table], low: int, high: int) -> dict[str, Any]:
    """Per cell: NRMSE at ``high`` with the best weights of the ``low`` table, against the
    ``high`` table's best (both minimised on a fine grid of the interpolated tables)."""
    grid = np.linspace(0, 1, 61)
    out: dict[str, Any] = {}
    for (specimen, size, h, c), table in sorted(tables.items()):
        if size != low or (specimen, high, h, c) not in tables:
            continue
        top = tables[(specimen, high, h, c)]

        def best(t: Table) -> tuple[dict[str, float], float]:
            a = t.a[0] + grid * (t.a[-1] - t.a[0])
            v = t.t[0] + grid * (t.t[-1] - t.t[0])
            values = t.spline(a, v)
            i, j = np.unravel_index(int(np.argmin(values)), values.shape)
            return {"lambda_haadf": 10 ** a[i], "lambda_tv": 10 ** v[j]}, float(np.exp(values[i, j]))

        low_point, _ = best(table)
        high_point, high_best = best(top)
        moved, _ = top.fused(low_point)
        out.setdefault(specimen, {})[f"{h}x{c}"] = {
            "with_low_best": moved,
            "high_best": high_best,
            "low_point": low_point,
            "high_point": high_point,
        }
    summary = {}
    for specimen, cells in out.items():
        ratios = [v["with_low_best"] / v["high_best"] for v in cells.values()]
        # where the best point moves between the sizes, per weight, in decades
        shift = {
            name: statistics.median(math.log10(v["high_point"][name] / v["low_point"][name]) for v in cells.values())
            for name in SPACE
        }
        summary[specimen] = {
            "median_ratio": statistics.median(ratios),
            "max_ratio": max(ratios),
            "median_shift_decades": shift,
            "cells": cells,
        }
    return summary


def price(per_run: list[dict[str, Any]], per_trial: dict[Any, float], low: int, high: int) -> dict[str, Any]:
    """A ladder strategy's runs in solver core-seconds: its rung trials at the small size's
    price, its top-size trials at the top size's."""
    for p in per_run:
        rung_s = p["rung_trials"] * per_trial[str(low)]
        reached = p["top_trials_until_every_cell_within_5pct"]
        p["core_s_until_every_cell_within_5pct"] = None if reached is None else rung_s + reached * per_trial[str(high)]
        p["core_s_spent"] = rung_s + p["top_trials_spent"] * per_trial[str(high)]
    reached = [p["core_s_until_every_cell_within_5pct"] for p in per_run]
    trials = [p["top_trials_until_every_cell_within_5pct"] for p in per_run]
    return {
        "runs": per_run,
        "median_top_trials_until_every_cell_within_5pct": None if None in trials else statistics.median(trials),
        "median_core_s_until_every_cell_within_5pct": None if None in reached else statistics.median(reached),
        "runs_reaching_5pct": sum(x is not None for x in reached),
        "median_core_s_spent": statistics.median(p["core_s_spent"] for p in per_run),
        "median_mean_best_over_reference": statistics.median(p["mean_best_over_reference"] for p in per_run),
    }


def trial_seconds(specimen: str, sizes: tuple[int, ...], rounds: int = 3) -> dict[str, float]:
    """Solver seconds of one real fused trial per size (median over the grid's four corner
    cells and ``rounds`` rounds, the sizes interleaved so a shared machine's load falls on
    all alike; each cell run once before, so its simulation and projector are cached)."""
    from map_tables import TABLES, spec

    from tomosweep.sweep import study_from_dict
    from tomosweep.sweep.trial import TrialTask, run_trial

    setup = TABLES["map"]
    corners = [
        (h, c) for h in (setup["n_haadf"][0], setup["n_haadf"][-1]) for c in (setup["n_chem"][0], setup["n_chem"][-1])
    ]
    studies = {}
    for size in sizes:
        study = study_from_dict(spec(specimen, size, setup["n_haadf"], setup["n_chem"], setup["n_iter"]))
        studies[size] = (study, json.dumps(study.to_json(), sort_keys=True))
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    for k in range(rounds + 1):
        for size, (study, text) in studies.items():
            for h, c in corners:
                centre = {n: math.sqrt(r.low * r.high) for n, r in study.searched("fused").items()}
                record = run_trial(TrialTask(text, "fused", h, c, {**study.fixed("fused"), **centre}))
                if not record.ok:
                    raise RuntimeError(f"a timing trial failed: {record.error}")
                if k:  # the first round fills the caches
                    seconds[size].append(record.wall_time_s)
    return {str(size): statistics.median(v) for size, v in seconds.items()}


def reprice(paths: list[Path]) -> None:
    """Re-price ladder reports with solver seconds measured now (``trial_seconds``)."""
    for path in paths:
        report = json.loads(path.read_text())
        ladder = report["ladder"]
        low, high = ladder["sizes"]
        for specimen, result in ladder["specimens"].items():
            per_trial = trial_seconds(specimen, (low, high))
            result["core_s_per_trial"] = per_trial
            for name, summary in result["summary"].items():
                result["summary"][name] = price(summary["runs"], per_trial, low, high)
                print(specimen, name, {k: v for k, v in result["summary"][name].items() if k != "runs"}, flush=True)
        write(path, report)


def ladder_cost(seeds: int, cap: int, rung_trials: tuple[int, ...], only: list[str] | None = None) -> dict[str, Any]:
    """Direct map search at the top size against the ladder (small size first), fused, per
    specimen: solver core-seconds and trials until every top-size cell is within 5 % of
    its reference (the best any run found there, or the table's best if lower)."""
    from distributed import Client

    tables = load_sized(("map", "map24"))
    low, high = 16, 24
    specimens = [sp for sp in sorted({k[0] for k in tables if k[1] == high}) if not only or sp in only]
    cells = sorted({(k[2], k[3]) for k in tables if k[1] == high})
    strategies = {
        "direct map": {},
        "direct map + adaptive": {"stop_tolerance": 0.01},
        **{f"ladder {low}³→{high}³, {k} per cell": {"ladder": [low], "ladder_trials": k} for k in rung_trials},
        **{
            f"ladder {low}³→{high}³, {k} per cell + adaptive": {
                "ladder": [low],
                "ladder_trials": k,
                "stop_tolerance": 0.01,
            }
            for k in rung_trials
        },
    }
    trial = sized_trial(tables)
    out: dict[str, Any] = {
        "sizes": [low, high],
        "cap_per_cell": cap,
        "seeds": seeds,
        "transfer": transfer(tables, low, high),
        "specimens": {},
    }
    print(json.dumps({k: {m: v[m] for m in ("median_ratio", "max_ratio")} for k, v in out["transfer"].items()}))
    with (
        Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0") as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for specimen in specimens:
            # solver seconds per trial, timed on real trials: the tables' own were taken under varying load
            per_trial = trial_seconds(specimen, (low, high))
            runs: dict[str, list[dict[str, Any]]] = {}
            for name, budget in strategies.items():
                for seed in range(seeds):
                    path = Path(tmp) / f"{specimen}-{len(runs)}-{seed}.zarr"
                    rungs = run_sized(fused_map_spec(specimen, high, seed, cap, **budget), trial, path, client)
                    runs.setdefault(name, []).append({"rung_trials": sum(len(r) for r in rungs[:-1]), "top": rungs[-1]})
                    print(specimen, name, seed, [len(r) for r in rungs], flush=True)
            reference = {
                cell: min(
                    [r.nrmse for rs in runs.values() for run in rs for r in run["top"] if (r.n_haadf, r.n_chem) == cell]
                    + [tables[(specimen, high, *cell)].table_best]
                )
                for cell in cells
            }
            summary = {}
            for name, rs in runs.items():
                per_run = []
                for run in rs:
                    best = dict.fromkeys(cells, math.inf)
                    reached = None
                    for n, r in enumerate(run["top"], start=1):
                        cell = (r.n_haadf, r.n_chem)
                        best[cell] = min(best[cell], r.nrmse)
                        if reached is None and all(best[k] <= 1.05 * reference[k] for k in cells):
                            reached = n
                    per_run.append(
                        {
                            "rung_trials": run["rung_trials"],
                            "top_trials_spent": len(run["top"]),
                            "top_trials_until_every_cell_within_5pct": reached,
                            "cells_within_5pct_at_end": sum(best[k] <= 1.05 * reference[k] for k in cells),
                            "mean_best_over_reference": float(np.mean([best[k] / reference[k] for k in cells])),
                        }
                    )
                summary[name] = price(per_run, per_trial, low, high)
                print(specimen, name, {k: v for k, v in summary[name].items() if k != "runs"}, flush=True)
            out["specimens"][specimen] = {
                "core_s_per_trial": per_trial,
                "reference_per_cell": {f"{h}x{c}": v for (h, c), v in reference.items()},
                "summary": summary,
            }
    return out


def workers(
    seeds: int, cap: int, in_flight: tuple[int, ...] = (1, 2, 4), delay: float = 0.05, only: list[str] | None = None
) -> dict[str, Any]:
    """The map surrogate with 1, 2 and 4 trials in flight on the same budget (fused, 16³
    tables, both specimens): the median over seeds of the map's mean best / reference at
    the end and halfway. Trials sleep ``delay`` × their tabulated seconds on as many
    threads as are in flight, so results arrive out of order as on a cluster."""
    from distributed import Client

    tables = load_sized(("map",))
    specimens = [sp for sp in sorted({k[0] for k in tables}) if not only or sp in only]
    cells = sorted({(k[2], k[3]) for k in tables})
    out: dict[str, Any] = {"in_flight": list(in_flight), "cap_per_cell": cap, "seeds": seeds, "specimens": {}}
    trial = sized_trial(tables, delay=delay)
    for specimen in specimens:
        runs: dict[int, list[list[Any]]] = {}
        for k in in_flight:
            with (
                Client(processes=False, n_workers=1, threads_per_worker=k, dashboard_address="127.0.0.1:0") as client,
                tempfile.TemporaryDirectory() as tmp,
            ):
                for seed in range(seeds):
                    records = run_sized(
                        fused_map_spec(specimen, 16, seed, cap), trial, Path(tmp) / f"{seed}.zarr", client, slots=k
                    )[-1]
                    runs.setdefault(k, []).append(records)
                    print(specimen, k, "in flight, seed", seed, len(records), flush=True)
        reference = {
            cell: min(
                [r.nrmse for rs in runs.values() for rec in rs for r in rec if (r.n_haadf, r.n_chem) == cell]
                + [tables[(specimen, 16, *cell)].table_best]
            )
            for cell in cells
        }

        def mean_ratio(records: list[Any], n: int, reference: dict[Any, float] = reference) -> float:
            best = dict.fromkeys(cells, math.inf)
            for r in records[:n]:
                best[(r.n_haadf, r.n_chem)] = min(best[(r.n_haadf, r.n_chem)], r.nrmse)
            return float(np.mean([best[c] / reference[c] for c in cells]))

        total = cap * len(cells)
        out["specimens"][specimen] = {
            str(k): {
                "median_mean_best_over_reference_at_end": statistics.median(mean_ratio(r, total) for r in rs),
                "median_mean_best_over_reference_halfway": statistics.median(mean_ratio(r, total // 2) for r in rs),
                "per_seed_at_end": [mean_ratio(r, total) for r in rs],
            }
            for k, rs in runs.items()
        }
        print(specimen, json.dumps(out["specimens"][specimen]), flush=True)
    return out


# ---------------------------------------------------------------------- ask time


def ask_time(per_cell: tuple[int, ...] = (5, 10, 25, 50)) -> dict[str, Any]:
    """Driver seconds of one map ask on a 12 × 12 grid (the paper's) against the trials told."""
    from tomosweep.search.map import map_searches

    hs = [10, 14, 20, 28, 40, 56, 80, 113, 160, 226, 320, 452][:12]
    cs = [2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 90][:12]
    cells = [(h, c) for h in hs for c in cs]
    rows = []
    for n in per_cell:
        opts = map_searches("fused", cells, SPACE, seed=0, n_initial=5)
        rng = np.random.default_rng(n)
        for (h, c), opt in opts.items():
            for _ in range(n):
                a, t = 10 ** rng.uniform(-2, 2), 10 ** rng.uniform(math.log10(0.05), math.log10(20))
                value = 0.2 + 0.05 * math.log10(a * h / 100) ** 2 + 0.05 * math.log10(t) ** 2 + 0.3 / c
                opt.tell({"lambda_haadf": a, "lambda_tv": t}, value)
        times = []
        for k, cell in enumerate([(40, 8), (10, 2), (452, 90)]):
            t0 = time.perf_counter()
            opts[cell].ask(k)
            times.append(time.perf_counter() - t0)
        rows.append({"trials": n * len(cells), "ask_s": times, "max_ask_s": max(times)})
        print(rows[-1], flush=True)
    return {"grid": "12 × 12", "rows": rows, "target_s_at_7200": 1.0, "met": rows[-1]["max_ask_s"] <= 1.0}


def main() -> None:
    p = parser(__doc__.splitlines()[0], "map_cost.json")
    p.add_argument(
        "--only",
        nargs="+",
        choices=("cell", "map", "ask", "ladder", "workers", "transfer"),
        default=["cell", "map", "ask", "ladder", "workers"],
    )
    p.add_argument("--rung-trials", nargs="+", type=int, default=[4], help="ladder_trials in the ladder section")
    p.add_argument("--specimens", nargs="+", default=None, help="ladder and workers: only these specimens")
    p.add_argument("--reprice", nargs="+", type=Path, default=None, help="re-price these ladder reports and stop")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--before", default="6fa525d", help="the commit whose optimiser is 'before'")
    p.add_argument("--map-seeds", type=int, default=3)
    p.add_argument("--cap", type=int, default=12, help="trials_per_cell in the map section")
    p.add_argument("--methods", nargs="+", default=["fused", "sirt"])
    p.add_argument("--table", default="map", help="the map section's tables: map (16³) or map24 (24³, fused only)")
    p.add_argument("--check", type=int, default=0, help="real trials to check the table with")
    p.add_argument("--tables", type=Path, default=None, help="where map_tables.py wrote its tables")
    args = p.parse_args()
    if args.reprice:
        reprice(args.reprice)
        return
    if args.tables is not None:
        global TABLES_DIR
        TABLES_DIR = args.tables
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.update({"benchmark": "map_cost", "machine": machine()})
    if "cell" in args.only:
        out["cell"] = one_cell(args.seeds, args.trials, args.before, args.check)
        print(json.dumps(out["cell"]["summary"], indent=1), flush=True)
    if "map" in args.only:
        for specimen in args.specimens or [None]:
            key = "map" if specimen in (None, "nanocubes") else f"map_{specimen}"
            key += "" if args.table == "map" else f"_{args.table}"
            result = map_cost(
                args.map_seeds, cap=args.cap, methods=tuple(args.methods), specimen=specimen, table=args.table
            )
            # a run for one method keeps what an earlier run measured for the others
            result["methods"] = {**out.get(key, {}).get("methods", {}), **result["methods"]}
            out[key] = result
    if "ask" in args.only:
        out["ask_time"] = ask_time()
    if "transfer" in args.only:  # the ladder section's first part alone: the tables, no search
        out["transfer"] = transfer(load_sized(("map", "map24")), 16, 24)
        for specimen, found in out["transfer"].items():
            print(specimen, {k: v for k, v in found.items() if k != "cells"}, flush=True)
    if "ladder" in args.only:
        out["ladder"] = ladder_cost(args.map_seeds, args.cap, tuple(args.rung_trials), args.specimens)
    if "workers" in args.only:
        out["workers"] = workers(args.map_seeds, args.cap, only=args.specimens)
    write(args.out, out)


if __name__ == "__main__":
    main()
