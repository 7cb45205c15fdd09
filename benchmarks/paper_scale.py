"""The price of a paper-scale map: one cell of ``examples/paper_scale.toml`` end to end.

Runs the fused method on the four corner cells of the paper-scale grid (15 and 180
HAADF × 3 and 25 chemical tilts, at the study's 256³ and its budget of 50 trials per
cell) through the real sweep — simulation, shared start, BO, store — on one worker with
the study's device, fits a trial's seconds as ``a + b × projections`` over the corners
(each trial's own wall time, from the store), and adds up the whole 12 × 12 map.
Schwartz 2024 report about 1078 GPU-hours per map; the target is ≤ 11 (1 %).

On a CPU machine run it small (``--n 32 --trials 6``) to check the script; its hours
are CPU-core hours at that size, not the paper's.

``--cell H,C`` (repeatable) runs the named cells instead of the corners: with one cell
(a quick check of the whole GPU path at 256³) there is no fit, and the map's price is
given as if every cell cost what that one did — an upper bound when it is the grid's
largest cell (180,25), a lower bound when it is the smallest.

``--reductions FILE...`` (the JSON of ``map_cost.py --only ladder``) re-prices the map with
what the map surrogate, the adaptive budget and the resolution ladder measured there:
the solver core-seconds each strategy spent, relative to a fixed budget of the same cap
per cell at the top size. Those fractions are measured on a 4 × 4 grid at 16³ → 24³;
that they hold on the 12 × 12 grid at 128³ → 256³ is assumed and said in the report.

    python benchmarks/paper_scale.py [--n 256] [--trials 50] [--device gpu] [--cell 45,9]
    python benchmarks/paper_scale.py --n 32 --trials 4 --reductions benchmarks/results/map_cost_ladder.json
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import tomllib
from argparse import ArgumentTypeError
from pathlib import Path

import numpy as np
from _common import machine, parser, write

from tomosweep.errors import TomosweepError
from tomosweep.results import SweepStore
from tomosweep.sweep.api import run_study
from tomosweep.sweep.memory import trial_bytes
from tomosweep.sweep.spec import study_from_dict

PAPER_GPU_HOURS = 1078.0
STUDY = Path(__file__).parents[1] / "examples" / "paper_scale.toml"


def cell(text: str) -> tuple[int, int]:
    """``"45,9"`` → (45 HAADF tilts, 9 chemical tilts)."""
    try:
        h, c = (int(v) for v in text.split(","))
    except ValueError:
        raise ArgumentTypeError(f"a cell is HAADF,CHEM tilt counts such as 45,9; got {text!r}") from None
    if h < 2 or c < 2:
        raise ArgumentTypeError(f"a cell needs at least 2 tilts of each kind; got {text!r}")
    return h, c


def reductions(paths: list[Path]) -> dict:
    """Per strategy of ``map_cost.py --only ladder`` (one file per specimen, or one for all):
    the median (over seeds, then specimens) of the core-seconds spent relative to a fixed
    budget of its cap per cell at the top size, and of the map's mean best NRMSE over the
    reference at the end."""
    out: dict = {}
    for path in paths:
        _add_reductions(json.loads(path.read_text())["ladder"], out)
    return {
        name: {
            "core_s_fraction": round(statistics.median(v["spent"]), 3),
            "mean_best_over_reference": round(statistics.median(v["quality"]), 4),
        }
        for name, v in out.items()
    }


def _add_reductions(ladder: dict, out: dict) -> None:
    for result in ladder["specimens"].values():
        per_trial = result["core_s_per_trial"]
        top = per_trial[max(per_trial, key=int)]
        cells = len(result["reference_per_cell"])
        for name, summary in result["summary"].items():
            fixed = ladder["cap_per_cell"] * cells * top
            out.setdefault(name, {"spent": [], "quality": []})
            out[name]["spent"].append(summary["median_core_s_spent"] / fixed)
            out[name]["quality"].append(summary["median_mean_best_over_reference"])


def main() -> None:
    p = parser(__doc__.splitlines()[0], "paper_scale.json")
    p.add_argument("--n", type=int, default=None, help="phantom size (default: the study's 256)")
    p.add_argument("--trials", type=int, default=None, help="trials per cell (default: the study's budget)")
    p.add_argument("--device", default=None, help="cpu, gpu or auto (default: the study's)")
    p.add_argument("--store", type=Path, default=None, help="keep the store here (default: a temporary one)")
    p.add_argument(
        "--cell",
        type=cell,
        action="append",
        default=None,
        help="run this cell (HAADF,CHEM tilts, e.g. 45,9; repeatable) instead of the grid's four corners",
    )
    p.add_argument("--reductions", type=Path, nargs="+", default=None, help="map_cost.py's ladder JSON(s)")
    args = p.parse_args()

    raw = tomllib.loads(STUDY.read_text())
    grid_h, grid_c = raw["acquisition"]["n_haadf"], raw["acquisition"]["n_chem"]
    if args.cell:
        cells = sorted(set(args.cell))
    else:  # the grid's corners: a trial's cost is fitted as a + b·(projections) over them
        cells = [(h, c) for h in (min(grid_h), max(grid_h)) for c in (min(grid_c), max(grid_c))]
    # the study's grid is a product: run the product of the cells' counts, report only the cells asked for
    raw["acquisition"]["n_haadf"] = sorted({h for h, _ in cells})
    raw["acquisition"]["n_chem"] = sorted({c for _, c in cells})
    raw["methods"] = {"fused": raw["methods"]["fused"]}
    budget = args.trials or raw["budget"]["trials_per_cell"]
    raw["budget"] = {"trials_per_cell": budget, "initial_points": min(raw["budget"]["initial_points"], budget)}
    if args.n:
        raw["phantom"]["size"] = args.n
    if args.device:
        raw["device"] = args.device
    raw["cluster"] = {"backend": "local-cuda" if raw["device"] == "gpu" else "local", "n_workers": 1}
    study = study_from_dict(raw)
    n = study.phantom.size
    n_el = 4
    if args.store is not None and args.store.exists():
        raise SystemExit(f"{args.store} exists; remove it or pass another --store")

    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "corners.zarr"
        t0 = time.perf_counter()
        try:
            summary = run_study(study, path)
        except TomosweepError as exc:  # no GPU, no dask-cuda, a bad option: one line, not a traceback
            raise SystemExit(f"paper_scale: {exc}") from None
        wall = time.perf_counter() - t0
        with SweepStore.open(path) as store:
            records = [r for r in store.records() if r.method == "fused"]
    per_cell = {}
    for h, c in cells:
        mine = [r.wall_time_s for r in records if (r.n_haadf, r.n_chem) == (h, c) and r.ok]
        per_cell[(h, c)] = float(np.mean(mine)) if mine else float("nan")
    rays = np.array([h + n_el * c for h, c in per_cell])
    seconds = np.array(list(per_cell.values()))
    if len(set(rays.tolist())) >= 2 and np.all(np.isfinite(seconds)):
        b, a = np.polyfit(rays, seconds, 1)
        fit = {"fixed": round(float(a), 3), "per_projection": round(float(b), 5)}
        map_s = sum(budget * max(a + b * (hh + n_el * cc), 0.0) for hh in grid_h for cc in grid_c)
        map_note = "every cell's trial time from the cells' fit"
    else:  # one cell (or one ray count): no fit, every cell priced as the measured one
        fit = None
        map_s = budget * len(grid_h) * len(grid_c) * float(np.nanmean(seconds))
        map_note = "every cell priced as the measured cell (no fit from one cell)"
    hours = map_s / 3600
    largest = (max(grid_h), max(grid_c))
    report = {
        "machine": machine(),
        "device": study.device,
        "n": n,
        "trials_per_cell": budget,
        "trials": summary.n_new,
        "failed": summary.n_failed,
        "wall_seconds": round(wall, 1),
        "seconds_per_trial": {f"{h}x{c}": round(v, 2) for (h, c), v in per_cell.items()},
        "cells": [list(c) for c in cells],
        "fit_seconds": fit,
        "map_device_hours": round(hours, 2),
        "paper_gpu_hours": PAPER_GPU_HOURS,
        "fraction_of_paper": round(hours / PAPER_GPU_HOURS, 4),
        "target_hours": PAPER_GPU_HOURS / 100,
        "peak_memory_estimate_gb": round(
            trial_bytes("fused", n=n, n_elements=n_el, n_haadf=largest[0], n_chem=largest[1]) / 1e9, 2
        ),
        "note": f"device-hours with one trial at a time per device; {map_note}",
    }
    if args.reductions is not None:
        found = reductions(args.reductions)
        report["repriced"] = {
            name: {**v, "map_device_hours": round(hours * v["core_s_fraction"], 2)} for name, v in found.items()
        }
        report["repriced_note"] = (
            "measured: each strategy's core-seconds spent relative to a fixed budget of its cap per cell, and the "
            "quality it reached, on a 4 × 4 grid, 16³ → 24³, fused, tables of real trials (map_cost.py --only "
            "ladder); assumed: that the fractions hold on the 12 × 12 grid at 128³ → 256³ with 50 trials per cell "
            "(a rung there costs (1/2)³ of a top trial, against (2/3)³ measured)"
        )
    write(args.out, report)
    for name, v in report.get("repriced", {}).items():
        print(f"  {name}: {v['core_s_fraction']:.2f} × → {v['map_device_hours']:.2f} device-hours")
    print(
        f"{n}³: {', '.join(f'{k} {v:.1f} s' for k, v in report['seconds_per_trial'].items())} per trial; "
        f"the 12 × 12 map at {budget} trials per cell ≈ {hours:.1f} device-hours "
        f"({100 * hours / PAPER_GPU_HOURS:.2f} % of the paper's ~1078)"
    )


if __name__ == "__main__":
    main()
