"""Tabulate the real fused/SIRT objective over the searched weights, per cell (JSON out).

The search benchmarks (``map_cost.py``) compare optimisers over hundreds of runs; a real
24³ fused trial costs ~4.5 s on one core, so every optimiser run would cost minutes. This
script evaluates the real objective (:func:`tomosweep.sweep.trial.run_trial`, the same
code a worker runs) once on a log-spaced grid of the searched weights per cell, with its
solver seconds, and ``map_cost.py`` interpolates the table (bicubic in log weights on log
NRMSE). Every number the search benchmarks report is therefore the real objective up to
that interpolation; ``map_cost.py`` checks the interpolation against real trials.

    nice -n 10 python benchmarks/map_tables.py --table cell   # one cell, 24³, 11 × 11
    nice -n 10 python benchmarks/map_tables.py --table map    # 4 × 4 cells, 16³, 5 × 5, ≤ 50 iterations (+ SIRT)
    nice -n 10 python benchmarks/map_tables.py --table map24  # the same at 24³ (fused only): the ladder's top rung
    nice -n 10 python benchmarks/map_tables.py --table user48 # a new user's cell, 45 × 9 tilts, 48³ (new_user.py)
    nice -n 10 python benchmarks/map_tables.py --table user32 # the same at 32³, two more specimens

A table's specimens may be split over processes (``--specimens conio_composite --out
OTHER.json``); merge the ``cells`` of the two files into one afterwards.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from _common import machine, parser, write

from tomosweep.sweep import study_from_dict
from tomosweep.sweep.trial import TrialTask, run_trial

TABLES = {
    # the single-cell problem of the issue: 24³ nanocubes, 30 HAADF × 8 chemical tilts, default fused ranges
    "cell": {"specimens": ["nanocubes"], "size": 24, "n_haadf": [30], "n_chem": [8], "grid": 11, "sirt": False},
    "map": {
        "specimens": ["nanocubes", "conio_composite"],
        "size": 16,
        "n_haadf": [8, 15, 30, 60],
        "n_chem": [3, 6, 12, 24],
        "grid": 5,
        "sirt": True,
        "n_iter": 50,  # at most 50 FISTA iterations (default 150): what two shared cores afford
    },
}
# the same map one rung up the resolution ladder (map_cost.py's ladder 16³ → 24³)
TABLES["map24"] = {**TABLES["map"], "size": 24, "sirt": False}
# a new user's cell (benchmarks/new_user.py): 45 HAADF × 9 chemical tilts, fused's default ranges and
# iterations; nanocubes at 48³, two more specimens at 32³
TABLES["user48"] = {"specimens": ["nanocubes"], "size": 48, "n_haadf": [45], "n_chem": [9], "grid": 11, "sirt": False}
TABLES["user32"] = {**TABLES["user48"], "specimens": ["core_shell_cube", "conio_composite"], "size": 32}


# the fused method's default ranges (sweep/methods.py), written out when n_iter is also given
DEFAULT_FUSED_RANGES = {
    "lambda_haadf": {"low": 0.01, "high": 100.0, "prior": "log"},
    "lambda_tv": {"low": 0.05, "high": 20.0, "prior": "log"},
}


def spec(specimen: str, size: int, n_haadf: list[int], n_chem: list[int], n_iter: int | None = None) -> dict:
    return {
        "name": "tables",
        "seed": 0,
        "phantom": {"name": specimen, "size": size},
        "acquisition": {"n_haadf": n_haadf, "n_chem": n_chem},
        "methods": {"fused": {} if n_iter is None else {**DEFAULT_FUSED_RANGES, "n_iter": n_iter}, "sirt": {}},
        "budget": {"trials_per_cell": 1, "initial_points": 1},
    }


def tabulate(name: str, out: Path, only: list[str] | None = None) -> dict:
    setup = TABLES[name]
    report = json.loads(out.read_text()) if out.exists() else {"benchmark": "map_tables", "table": name, **setup}
    report["machine"] = machine()
    report.setdefault("cells", {})
    for specimen in only or setup["specimens"]:
        study = study_from_dict(spec(specimen, setup["size"], setup["n_haadf"], setup["n_chem"], setup.get("n_iter")))
        study_json = json.dumps(study.to_json(), sort_keys=True)
        fused = study.searched("fused")
        axes = {n: np.geomspace(r.low, r.high, setup["grid"]).tolist() for n, r in fused.items()}
        report["axes"] = axes
        for h in setup["n_haadf"]:
            for c in setup["n_chem"]:
                key = f"{specimen}/{h}/{c}"
                if key in report["cells"]:
                    continue
                t0 = time.perf_counter()
                values, seconds = [], []
                for a in axes["lambda_haadf"]:
                    for t in axes["lambda_tv"]:
                        params = {**study.fixed("fused"), "lambda_haadf": a, "lambda_tv": t}
                        r = run_trial(TrialTask(study_json, "fused", h, c, params))
                        values.append(r.nrmse if r.ok and math.isfinite(r.nrmse) else None)
                        seconds.append(r.wall_time_s)
                entry = {"fused": values, "fused_s": seconds}
                if setup["sirt"]:
                    rng = study.searched("sirt")["n_iter"]
                    iters = sorted({int(round(v)) for v in np.geomspace(rng.low, rng.high, 10)})
                    sirt = [run_trial(TrialTask(study_json, "sirt", h, c, {"n_iter": k})) for k in iters]
                    entry["sirt_n_iter"] = iters
                    entry["sirt"] = [r.nrmse if r.ok else None for r in sirt]
                    entry["sirt_s"] = [r.wall_time_s for r in sirt]
                report["cells"][key] = entry
                ok = [v for v in values if v is not None]
                print(key, f"best {min(ok):.4f}", f"{time.perf_counter() - t0:.0f} s", flush=True)
                write(out, report)  # after every cell: an interrupted run keeps what it did
    return report


def main() -> None:
    p = parser(__doc__.splitlines()[0], "map_tables_cell.json")
    p.add_argument("--table", choices=sorted(TABLES), default="cell")
    p.add_argument("--specimens", nargs="+", default=None, help="only these of the table's specimens")
    args = p.parse_args()
    out = args.out if args.out.name != "map_tables_cell.json" else args.out.with_name(f"map_tables_{args.table}.json")
    tabulate(args.table, out, args.specimens)


if __name__ == "__main__":
    main()
