"""How long ``tomosweep export`` takes on a large map: a store of N cells with fake trials.

The store is a real one (the study validates, every trial goes through ``SweepStore.append``),
but its trials are made up (NRMSE a smooth function of the weights and the cell), so a map of
1,000 cells is built in seconds instead of GPU-days. Then the ``export`` command runs on it
in a fresh process, as a user would run it, and its wall time is reported.

    python benchmarks/export_scale.py [--cells 1000] [--trials 2]
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, parser, write

from tomosweep.results import FAILED, OK, SweepStore, TrialRecord
from tomosweep.sweep.spec import study_from_dict


def grid(cells: int) -> tuple[list[int], list[int]]:
    """Tilt counts for about ``cells`` cells, HAADF × chemical roughly 8 : 5."""
    n_c = max(1, round(math.sqrt(cells * 5 / 8)))
    n_h = max(1, math.ceil(cells / n_c))
    return [5 + 2 * i for i in range(n_h)], [3 + i for i in range(n_c)]


def build_store(path: Path, *, cells: int = 1000, trials: int = 2, seed: int = 0) -> SweepStore:
    """A closed store of about ``cells`` cells × ``trials`` fake fused trials (one in 20 failed)."""
    n_haadf, n_chem = grid(cells)
    study = study_from_dict(
        {
            "name": f"export-{len(n_haadf) * len(n_chem)}",
            "seed": seed,
            "phantom": {"name": "nanocubes", "size": 16},
            "acquisition": {"n_haadf": n_haadf, "n_chem": n_chem},
            "methods": {
                "fused": {
                    "lambda_haadf": {"low": 0.1, "high": 10.0, "prior": "log"},
                    "lambda_tv": {"low": 0.01, "high": 1.0, "prior": "log"},
                    "n_iter": 20,
                }
            },
            "budget": {"trials_per_cell": trials, "initial_points": 1},
        }
    )
    rng = np.random.default_rng(seed)
    store = SweepStore.create(
        path,
        spec=study.to_json(),
        spec_hash=study.content_hash(),
        methods=list(study.methods),
        param_names=list(study.param_names),
        elements=("Co", "Cu", "O", "Au"),
        n_haadf=n_haadf,
        n_chem=n_chem,
    )
    fixed = study.fixed("fused")
    row = 0
    for _ in range(trials):
        for h in n_haadf:
            for c in n_chem:
                params = {**fixed, "lambda_haadf": 10 ** rng.uniform(-1, 1), "lambda_tv": 10 ** rng.uniform(-2, 0)}
                value = 0.2 + 3 / (h + c) + 0.05 * math.log10(params["lambda_haadf"]) ** 2
                failed = row % 20 == 19
                store.append(
                    TrialRecord(
                        method="fused",
                        n_haadf=h,
                        n_chem=c,
                        params=params,
                        status=FAILED if failed else OK,
                        nrmse=math.nan if failed else value,
                        nrmse_elements=() if failed else (value,) * 4,
                        iterations=20,
                        wall_time_s=1.0,
                        worker="w",
                        error="DivergenceError: NaN" if failed else "",
                        finished_at=time.time(),
                    )
                )
                row += 1
    store.close()
    return store


def time_export(store: Path, out: Path) -> dict[str, Any]:
    """``tomosweep export`` in a fresh process: wall seconds and exit status."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "export", str(store), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    return {"seconds": round(time.perf_counter() - t0, 2), "exit": done.returncode, "stderr": done.stderr[-500:]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0], "export_scale.json")
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--trials", type=int, default=2, help="fake trials per cell")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_store(Path(tmp) / "s.zarr", cells=args.cells, trials=args.trials)
        built = time.perf_counter() - t0
        with SweepStore.open(Path(tmp) / "s.zarr") as opened:
            n_cells, n_trials = len(opened.n_haadf) * len(opened.n_chem), opened.n_committed
        timed = time_export(Path(tmp) / "s.zarr", Path(tmp) / "export")
    report = {
        "machine": machine(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cells": n_cells,
        "trials": n_trials,
        "build_s": round(built, 2),
        "export": timed,
    }
    print(f"{n_cells} cells, {n_trials} trials: store built in {built:.1f} s, export {timed['seconds']} s")
    write(args.out, report)
    return report


if __name__ == "__main__":
    main()
