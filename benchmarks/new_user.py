"""Where a new user's trials go: one cell, four methods sharing two workers, 16 trials each.

The setting a new user starts from: one cell of 45 HAADF × 9 chemical tilts, the methods fused,
SIRT, Poisson-ML and ML+TV with empty method tables (each method's default ranges), 16 trials
each, 2 workers. The runner feeds the cell with the fewest trials and keeps threads + 1 = 3
trials in flight, so with four methods each method's search is asked one point at a time: fused's
search here is the one the runner builds for that study (:func:`tomosweep.sweep.runner.searches`,
the default ``[budget]``), asked and told sequentially, on the tabulated real objective of fused
(``map_tables.py --table user48`` — nanocubes at 48³ — and ``--table user32`` — the core-shell
cube and the CoNiO composite at 32³; an 11 × 11 grid of real trials over the default ranges,
bicubic in the log weights on log NRMSE, as ``map_cost.py`` does).

Reported per specimen, over ``--seeds`` study seeds:

- fused's median best after 16 trials against its median best after 100 (target: within 5 %);
- **trials in a known-poor region**: of the 16, those proposed within 0.15 (Euclidean, in the unit
  box of the weights' log ranges) of an earlier trial that had scored more than 1.25 × the best so
  far, and that scored more than 1.25 × the best so far themselves — trials the earlier ones had
  already shown to be wasted;
- **poor trials after the start**: of the trials after the initial design, those scoring more than
  1.25 × the best so far (wherever they land).

The search before (on scikit-optimize) is measured by running this script with that version's
install first on ``PYTHONPATH``; it builds its searches with ``_optimisers``.

    nice -n 10 python benchmarks/map_tables.py --table user48
    nice -n 10 python benchmarks/map_tables.py --table user32
    python benchmarks/new_user.py --seeds 5
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from _common import machine, parser, write
from map_cost import Table, load_tables

from tomosweep.sweep import study_from_dict

try:
    from tomosweep.sweep.runner import searches
except ImportError:  # the tomosweep before the search had one interface (run with --before's install on the path)
    from tomosweep.sweep.runner import _optimisers as searches  # pyright: ignore

POOR = 1.25  # a trial scoring above POOR × the best so far is poor
NEAR = 0.15  # unit-box distance (Euclidean) within which an earlier trial speaks for a new one
METHODS = {"fused": {}, "sirt": {}, "poisson_ml": {}, "poisson_ml_tv": {}}


def study(specimen: str, size: int, trials: int, seed: int) -> dict[str, Any]:
    """The new user's study file, as a dictionary."""
    return {
        "name": "new-user",
        "seed": seed,
        "phantom": {"name": specimen, "size": size},
        "acquisition": {"n_haadf": [45], "n_chem": [9]},
        "methods": METHODS,
        "budget": {"trials_per_cell": trials},
    }


def run(table: Table, spec: dict[str, Any], trials: int) -> tuple[list[float], list[dict[str, float]], list[str]]:
    """fused's search of the study, asked and told one trial at a time on the table."""
    built = study_from_dict(spec)
    search = searches(built)[("fused", 45, 9)]
    values, points, by = [], [], []
    for k in range(trials):
        proposal = search.ask(k)
        if proposal is None:
            break
        value, _ = table.fused(proposal.params)
        search.tell(proposal.params, value, key=k)
        values.append(value)
        points.append(proposal.params)
        by.append(proposal.by)
    return values, points, by


def unit(points: list[dict[str, float]], ranges: dict[str, tuple[float, float]]) -> np.ndarray:
    """The points in the unit box of the (log) default ranges."""
    return np.array(
        [
            [(math.log10(p[n]) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) for n, (lo, hi) in ranges.items()]
            for p in points
        ]
    )


def in_known_poor(values: list[float], u: np.ndarray) -> list[int]:
    """The trials proposed next to an earlier poor one, and poor themselves (module docstring)."""
    out = []
    for k in range(1, len(values)):
        best = min(values[:k])
        poor_before = [j for j in range(k) if values[j] > POOR * best]
        near = [j for j in poor_before if float(np.linalg.norm(u[j] - u[k])) < NEAR]
        if near and values[k] > POOR * best:
            out.append(k)
    return out


def specimen_report(key: tuple[str, int, int], table: Table, size: int, seeds: int, short: int, long: int) -> dict:
    specimen = key[0]
    ranges = {"lambda_haadf": (0.01, 100.0), "lambda_tv": (0.05, 20.0)}
    rows = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        values, points, by = run(table, study(specimen, size, short, seed), short)
        wasted = in_known_poor(values, unit(points, ranges))
        start = study_from_dict(study(specimen, size, short, seed)).budget.initial_points
        poor_after = [k for k in range(start, len(values)) if values[k] > POOR * min(values[:k])]
        long_values, _, _ = run(table, study(specimen, size, long, seed), long)
        rows.append(
            {
                "seed": seed,
                f"best_at_{short}": min(values),
                f"best_at_{long}": min(long_values),
                "in_known_poor": len(wasted),
                "which": wasted,
                "poor_after_start": len(poor_after),
                "proposed_by": by,
                "lambda_haadf": [p["lambda_haadf"] for p in points],
                "lambda_tv": [p["lambda_tv"] for p in points],
                "values": values,
                "s": time.perf_counter() - t0,
            }
        )
        print(
            f"{specimen} seed {seed}: best {min(values):.4f} after {short}, {min(long_values):.4f} after {long}; "
            f"{len(wasted)} in a known-poor region, {len(poor_after)} poor after the start",
            flush=True,
        )
    short_med = float(np.median([r[f"best_at_{short}"] for r in rows]))
    long_med = float(np.median([r[f"best_at_{long}"] for r in rows]))
    return {
        "specimen": specimen,
        "size": size,
        "table_best": table.table_best,
        f"median_best_at_{short}": short_med,
        f"median_best_at_{long}": long_med,
        "ratio": short_med / long_med,
        "within_5_percent": bool(short_med <= 1.05 * long_med),
        "median_in_known_poor": float(np.median([r["in_known_poor"] for r in rows])),
        "in_known_poor_per_seed": [r["in_known_poor"] for r in rows],
        "poor_after_start_per_seed": [r["poor_after_start"] for r in rows],
        "rows": rows,
    }


def main() -> None:
    p = parser("Where a new user's trials go (one cell, 45 × 9 tilts, 16 trials)", "new_user.json")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--short", type=int, default=16)
    p.add_argument("--long", type=int, default=100)
    p.add_argument("--tables", nargs="+", default=["user48", "user32"])
    args = p.parse_args()
    report: dict[str, Any] = {"machine": machine(), "setting": __doc__.splitlines()[0], "specimens": []}
    for name in args.tables:
        info, tables = load_tables(name)
        for key, table in tables.items():
            report["specimens"].append(specimen_report(key, table, info["size"], args.seeds, args.short, args.long))
    report["met"] = all(s["within_5_percent"] for s in report["specimens"])
    for s in report["specimens"]:
        print(
            f"{s['specimen']} {s['size']}³: median best {s[f'median_best_at_{args.short}']:.4f} after {args.short}, "
            f"{s[f'median_best_at_{args.long}']:.4f} after {args.long} ({s['ratio']:.3f}×); "
            f"known-poor trials per seed {s['in_known_poor_per_seed']}, poor after the start "
            f"{s['poor_after_start_per_seed']}"
        )
    write(args.out, report)


if __name__ == "__main__":
    main()
