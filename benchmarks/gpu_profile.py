"""Where one fused iteration spends its time: sparse products, TV prox, elementwise work.

One FISTA iteration of the fused method (Schwartz 2024 eq. 1, Supp. Alg. 1, as in
``solvers/fused.py``) applies the HAADF and chemical projectors and their adjoints
(sparse matrix × dense matrix products, "SpMM"), one TV prox by FGP (``tv_iter`` inner
iterations), one TV norm, and elementwise work in between (the HAADF model
:math:`\\sum_i (Z_i x_i)^\\gamma`, the Poisson log, gradient assembly, extrapolation,
the scalar costs of the backtracking test). This script runs the solver from a shared
start with ``tol = 0`` so every iteration is counted, and times each part by wrapping
the public projector products and the TV functions with device synchronisations;
elementwise work is the rest of the iteration. A second, unwrapped run gives the
iteration time without those synchronisations.

The default is the paper's simulation geometry: 256³ × 4 elements (Co, Cu, O, Au),
±70°, 45 HAADF and 9 chemical tilts, on the GPU. On a CPU machine check the script
small::

    python benchmarks/gpu_profile.py --n 32 --device cpu --out /tmp/profile.json
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from _common import machine, parser, write

# benchmarks/fused.py: the same structured stand-in specimen and element list
from fused import SYMBOLS, Z, specimen

from tomosweep.errors import TomosweepError
from tomosweep.solvers import Projector, backend, fused_start
from tomosweep.solvers import fused as fused_solver

# the modules whose names the solver calls (``tomosweep.solvers.fused`` the attribute is the function)
FUSED_MODULE = importlib.import_module("tomosweep.solvers.fused")
TV_MODULE = importlib.import_module("tomosweep.solvers.tv")

PARTS = ("spmm", "tv_prox", "tv_norm")


class PartTimer:
    """Seconds and calls per part, each call fenced by device synchronisations."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.calls = dict.fromkeys(PARTS, 0)

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds[part] += time.perf_counter() - t0
            self.calls[part] += 1
            return out

        return timed

    def snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        return dict(self.seconds), dict(self.calls)


@contextlib.contextmanager
def instrumented(timer: PartTimer) -> Iterator[None]:
    """Time the projector products and the TV functions wherever the solver calls them.

    The products are the public ``Projector.forward_matrix``/``back_matrix`` (patched on
    the class); the TV functions are patched in every solver module that imported them
    by name.
    """
    originals: list[tuple[Any, str, Any]] = [
        (Projector, "forward_matrix", Projector.forward_matrix),
        (Projector, "back_matrix", Projector.back_matrix),
    ]
    for module in (FUSED_MODULE, TV_MODULE):
        for name in ("tv_prox", "tv_norm"):
            if hasattr(module, name):
                originals.append((module, name, getattr(module, name)))
    try:
        for owner, name, fn in originals:
            part = "spmm" if owner is Projector else name
            setattr(owner, name, timer.wrap(part, fn))
        yield
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)


def problem(n: int, n_el: int, n_haadf: int, n_chem: int, xp: Any) -> dict[str, Any]:
    """Projectors and simulated data on ``xp``'s device (as ``benchmarks/fused.py``)."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    truth = specimen(n, n_el, rng)
    t1 = time.perf_counter()
    haadf_op = Projector(n, np.linspace(-70, 70, n_haadf))
    chem_op = Projector(n, np.linspace(-70, 70, n_chem))
    t2 = time.perf_counter()
    haadf = haadf_op.forward(((Z[:n_el, None, None, None] * truth) ** 1.7).sum(0))
    chem = rng.poisson(np.stack([chem_op.forward(v) for v in truth]) * 0.05).astype(np.float32)
    haadf, chem = backend.asarray(haadf, xp, np.float32), backend.asarray(chem, xp, np.float32)
    # the device copies of the operators are made once, outside the timed runs
    for op in (haadf_op, chem_op):
        op.operators(xp, np.float32)
    return {
        "haadf_op": haadf_op,
        "haadf": haadf,
        "chem_op": chem_op,
        "chem": chem,
        "elements": SYMBOLS[:n_el],
        "setup_seconds": {
            "specimen": round(t1 - t0, 3),
            "projectors": round(t2 - t1, 3),
            "simulate_and_upload": round(time.perf_counter() - t2, 3),
        },
        "nnz": {"haadf": int(haadf_op.matrix.nnz), "chem": int(chem_op.matrix.nnz)},
    }


def run(data: dict[str, Any], start: Any, n_iter: int, tv_iter: int, sync: Callable[[], None]) -> dict[str, Any]:
    """One solver run from ``start``; a timestamp (after a sync) at every iterate."""
    stamps: list[float] = []
    marks: list[Any] = []
    timer = data.get("timer")

    def clock(k: int, costs: Any, volume: Any) -> None:
        sync()
        stamps.append(time.perf_counter())
        if timer is not None:
            marks.append(timer.snapshot())

    result = fused_solver(
        data["haadf_op"],
        data["haadf"],
        data["chem_op"],
        data["chem"],
        data["elements"],
        lambda_haadf=30.0,
        lambda_chem=1.0,
        lambda_tv=10.0,
        tv_iter=tv_iter,
        n_iter=n_iter,
        tol=0.0,
        start=start,
        callback=clock,
    )
    return {"stamps": stamps, "marks": marks, "result": result}


def split(stamps: list[float], marks: list[Any]) -> list[dict[str, float]]:
    """Per iteration: total seconds, each part's seconds, elementwise = the rest."""
    rows = []
    for k in range(1, len(stamps)):
        total = stamps[k] - stamps[k - 1]
        (sec_a, calls_a), (sec_b, calls_b) = marks[k - 1], marks[k]
        row = {"total": total}
        for part in PARTS:
            row[part] = sec_b[part] - sec_a[part]
            row[f"{part}_calls"] = calls_b[part] - calls_a[part]
        row["elementwise"] = total - sum(row[p] for p in PARTS)
        rows.append(row)
    return rows


def layout_copy_seconds(data: dict[str, Any], xp: Any, sync: Callable[[], None], repeat: int = 5) -> dict[str, float]:
    """What turning one iterate and one residual into Fortran order costs on the device.

    cupyx's CSR × dense product passes its dense operand through ``asfortranarray``; the
    solver's arrays are C-ordered, so each SpMM on the GPU may include such a copy.
    """
    if not backend.is_gpu(xp):
        return {}
    n = data["chem_op"].n
    n_el, n_x = data["chem"].shape[0], data["chem"].shape[-1]
    shapes = {"volume_all_elements": (n * n, n_el * n_x), "volume_one_channel": (n * n, n_x)}
    out = {}
    for name, shape in shapes.items():
        a = xp.ones(shape, dtype=np.float32)
        xp.asfortranarray(a)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeat):
            xp.asfortranarray(a)
        sync()
        out[name] = (time.perf_counter() - t0) / repeat
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0], "gpu_profile.json")
    p.add_argument("--n", type=int, default=256, help="volume edge (default: 256)")
    p.add_argument("--elements", type=int, default=4, choices=range(1, 5), help="chemical maps (default: 4)")
    p.add_argument("--haadf", type=int, default=45, help="HAADF tilts (default: 45)")
    p.add_argument("--chem", type=int, default=9, help="chemical tilts (default: 9)")
    p.add_argument("--iterations", type=int, default=5, help="timed fused iterations per run (default: 5)")
    p.add_argument("--tv-iter", type=int, default=10, help="FGP iterations per TV prox (default: 10)")
    p.add_argument("--device", default="gpu", help="cpu, gpu or auto (default: gpu)")
    args = p.parse_args()
    if args.n < 8 or args.iterations < 1:
        p.error("--n must be ≥ 8 and --iterations ≥ 1")

    try:
        xp = backend.array_module(args.device)
    except TomosweepError as exc:  # no GPU, no CuPy: one line, not a traceback
        raise SystemExit(f"gpu_profile: {exc}") from None

    def sync() -> None:
        if backend.is_gpu(xp):
            xp.cuda.Device().synchronize()

    data = problem(args.n, args.elements, args.haadf, args.chem, xp)
    t0 = time.perf_counter()
    start = fused_start(data["haadf_op"], data["haadf"], data["chem_op"], data["chem"], data["elements"])
    sync()
    start_s = time.perf_counter() - t0
    run(data, start, 1, args.tv_iter, sync)  # warm-up: CuPy compiles its kernels on first use
    plain = run(data, start, args.iterations, args.tv_iter, sync)
    timer = PartTimer(sync)
    with instrumented(timer):
        timed = run({**data, "timer": timer}, start, args.iterations, args.tv_iter, sync)
    rows = split(timed["stamps"], timed["marks"])
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    plain_per_iter = statistics.median(np.diff(plain["stamps"]).tolist())
    parts = ("spmm", "tv_prox", "tv_norm", "elementwise")
    info = timed["result"].info
    memory = None
    if backend.is_gpu(xp):
        memory = round(xp.get_default_memory_pool().total_bytes() / 1e9, 3)
    report = {
        "benchmark": "gpu_profile",
        "machine": machine(),
        "device": timed["result"].device,
        "geometry": {
            "n": args.n,
            "n_elements": args.elements,
            "n_haadf_tilts": args.haadf,
            "n_chem_tilts": args.chem,
            "tilt_range_deg": [-70, 70],
            "tv_iter": args.tv_iter,
            "dtype": "float32",
        },
        "nnz": data["nnz"],
        "setup_seconds": {**data["setup_seconds"], "fused_start": round(start_s, 3)},
        "iterations_timed": len(rows),
        "seconds_per_iteration": round(plain_per_iter, 5),
        "seconds_per_iteration_instrumented": round(median["total"], 5),
        "split_seconds": {part: round(median[part], 5) for part in parts},
        "split_fraction": {part: round(median[part] / median["total"], 3) for part in parts},
        "calls_per_iteration": {part: median[f"{part}_calls"] for part in PARTS},
        "backtracks": int(info.get("backtracks", 0)),
        "per_iteration": [{k: round(v, 5) for k, v in r.items()} for r in rows],
        "spmm_operand_fortran_copy_seconds": {k: round(v, 5) for k, v in layout_copy_seconds(data, xp, sync).items()},
        "gpu_memory_pool_gb": memory,
        "target": "GPU, 256^3 x 4 elements, 45 HAADF + 9 chemical tilts: <= 0.1 s per iteration",
        "note": (
            "median over the timed iterations; each part fenced by device synchronisations, "
            "elementwise = iteration total - SpMM - TV prox - TV norm (includes the scalar cost reads)"
        ),
    }
    write(args.out, report)
    fractions = ", ".join(f"{k} {100 * v:.0f} %" for k, v in report["split_fraction"].items())
    print(
        f"{report['device']}: {args.n}³ × {args.elements}, {args.haadf} HAADF + {args.chem} chemical tilts: "
        f"{plain_per_iter:.4f} s per fused iteration ({fractions})"
    )


if __name__ == "__main__":
    main()
