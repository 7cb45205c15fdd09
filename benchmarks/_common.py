"""Helpers shared by the benchmark scripts: machine description and JSON output."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def machine() -> dict[str, Any]:
    from tomosweep.solvers import backend

    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "gpu": None,
    }
    if backend.gpu_available():
        import cupy

        info["gpu"] = backend.device_name(cupy)
    return info


def parser(description: str, default_name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / default_name,
        help="where to write the JSON report (default: %(default)s)",
    )
    return p


def trials_to_within(values: list[float], target: float) -> int:
    """Trials until the best so far is at most ``target`` (``len(values) + 1``: never)."""
    best = math.inf
    for k, v in enumerate(values, start=1):
        best = min(best, v)
        if best <= target:
            return k
    return len(values) + 1


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
