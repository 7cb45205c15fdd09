"""Cluster scaling: trials/minute of one study on the local cluster (1 and 2 workers) and on SLURM.

The same study (fused, 32³ nanocubes, two cells, GP after 4 random points) runs through
``run_study`` on each backend, opened exactly as ``tomosweep run`` opens it:

* ``local-1``, ``local-2``: the embedded LocalCluster with 1 and 2 worker processes;
* ``slurm-2``: two one-core SLURM jobs (``min_jobs = max_jobs = 2``) on loopback, when
  a SLURM controller answers (``bash .ci/slurm.sh start``); otherwise recorded as skipped;
* ``local-cuda``: one worker per GPU with ``device = "gpu"``, when a GPU and dask-cuda are present.

For each: trials/minute over the runner's wall time (first submit to last store
append), the time from opening the cluster to its first worker, and the whole run
including start-up and shut-down.

    python benchmarks/scaling.py [--out benchmarks/results/scaling.json] [--trials 12]
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import machine, parser, write

from tomosweep.sweep import run_study, study_from_dict


def study(trials_per_cell: int, cluster: dict, device: str = "cpu") -> dict:
    return {
        "name": "scaling",
        "seed": 0,
        "device": device,
        "phantom": {"name": "nanocubes", "size": 32},
        "acquisition": {"n_haadf": [20, 40], "n_chem": [12]},
        "methods": {
            "fused": {
                "lambda_haadf": {"low": 0.01, "high": 100.0, "prior": "log"},
                "lambda_tv": {"low": 0.03, "high": 10.0, "prior": "log"},
                "n_iter": 40,
            }
        },
        "budget": {"trials_per_cell": trials_per_cell, "initial_points": 4},
        "cluster": cluster,
    }


def slurm_up() -> str | None:
    if not shutil.which("sinfo"):
        return "no SLURM here (sinfo not found); start one with `bash .ci/slurm.sh start`"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if out.returncode != 0 or "idle" not in out.stdout:
        return f"no idle SLURM node: {(out.stderr or out.stdout).strip()[:120]}"
    return None


def gpu_up() -> str | None:
    from tomosweep.solvers.backend import gpu_available, gpu_unavailable_reason

    if not gpu_available():
        return f"no GPU: {gpu_unavailable_reason()}"
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return "dask-cuda is not installed"
    return None


def measure(name: str, raw: dict, tmp: Path) -> dict:
    seen = {}
    t0 = time.perf_counter()
    summary = run_study(study_from_dict(raw), tmp / f"{name}.zarr", on_client=lambda conn: seen.update(conn=conn))
    total = time.perf_counter() - t0
    conn = seen["conn"]
    result = {
        "backend": conn.backend,
        "cluster": conn.description,
        "trials": summary.n_new,
        "failed": summary.n_failed,
        "runner_wall_s": round(summary.wall_time_s, 2),
        "trials_per_min": round(summary.n_new / summary.wall_time_s * 60, 1),
        "time_to_first_worker_s": round(conn.first_worker_s, 2),
        "total_wall_s": round(total, 2),
    }
    print(f"{name:>10}: {result['trials_per_min']:6.1f} trials/min, first worker after {conn.first_worker_s:.1f} s")
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0], "scaling.json")
    p.add_argument("--trials", type=int, default=12, help="trials per cell (2 cells)")
    args = p.parse_args()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs["local-1"] = measure("local-1", study(args.trials, {"backend": "local", "n_workers": 1}), tmp)
        runs["local-2"] = measure("local-2", study(args.trials, {"backend": "local", "n_workers": 2}), tmp)
        slurm = {
            "backend": "slurm",
            "cores": 1,
            "memory": "2GB",
            "walltime": "00:30:00",
            "interface": "lo",
            "min_jobs": 2,
            "max_jobs": 2,
            "log_directory": str(tmp / "slurm-logs"),
        }
        reason = slurm_up()
        runs["slurm-2"] = {"skipped": reason} if reason else measure("slurm-2", study(args.trials, slurm), tmp)
        reason = gpu_up()
        cuda = {"backend": "local-cuda"}
        runs["local-cuda"] = (
            {"skipped": reason} if reason else measure("local-cuda", study(args.trials, cuda, device="gpu"), tmp)
        )
    base = runs["local-1"]["trials_per_min"]
    report = {
        "benchmark": "scaling",
        "machine": machine(),
        "study": "fused, nanocubes 32³, 40 iterations, cells 20×12 and 40×12, GP after 4 random points",
        "trials_per_cell": args.trials,
        "runs": runs,
        "speedup_vs_local_1": {
            name: round(r["trials_per_min"] / base, 2) for name, r in runs.items() if "trials_per_min" in r
        },
    }
    write(args.out, report)


if __name__ == "__main__":
    main()
