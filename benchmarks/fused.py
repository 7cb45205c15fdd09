"""Seconds per fused multi-modal iteration (Schwartz 2024 eq. 1, Supp. Alg. 1).

CPU: 3 elements at 64³ and 128³. GPU (when CuPy sees a device): 4 elements at 256³,
target ≤ 0.1 s per iteration. Geometry as the paper's simulations: ±70°, 45 HAADF
and 9 chemical tilts; 10 FGP iterations per TV prox. The ML-EM initialisation and
the power-method step estimate are timed apart from the iterations.

    python benchmarks/fused.py [--out benchmarks/results/fused.json]
"""

from __future__ import annotations

import time

import numpy as np
from _common import machine, parser, write

from tomosweep.solvers import Projector, backend, fused

SYMBOLS = ("Co", "Cu", "O", "Au")
Z = np.array([27.0, 29.0, 8.0, 79.0])


def specimen(n: int, n_el: int, rng: np.random.Generator) -> np.ndarray:
    """Random spheres per element: a cheap, structured stand-in for a phantom."""
    grid = np.indices((n, n, n), dtype=np.float32) - n / 2
    volumes = np.zeros((n_el, n, n, n), dtype=np.float32)
    for e in range(n_el):
        for _ in range(6):
            centre = rng.uniform(-n / 4, n / 4, 3)
            radius = rng.uniform(n / 12, n / 6)
            volumes[e][((grid - centre[:, None, None, None]) ** 2).sum(0) < radius**2] = 1.0
    return volumes


def time_case(n: int, n_el: int, device: str, n_iter: int) -> dict:
    rng = np.random.default_rng(0)
    xp = backend.array_module(device)
    truth = specimen(n, n_el, rng)
    haadf_op = Projector(n, np.linspace(-70, 70, 45))
    chem_op = Projector(n, np.linspace(-70, 70, 9))
    haadf = haadf_op.forward(((Z[:n_el, None, None, None] * truth) ** 1.7).sum(0))
    chem = rng.poisson(np.stack([chem_op.forward(v) for v in truth]) * 0.05).astype(np.float32)
    haadf, chem = backend.asarray(haadf, xp, np.float32), backend.asarray(chem, xp, np.float32)
    stamps = []

    def clock(k, costs, volume):
        if xp is not np:
            xp.cuda.Device().synchronize()
        stamps.append(time.perf_counter())

    kwargs = dict(lambda_haadf=30.0, lambda_chem=1.0, lambda_tv=10.0, tv_iter=10)
    fused(haadf_op, haadf, chem_op, chem, SYMBOLS[:n_el], n_iter=1, n_init=1, **kwargs)  # warm-up
    t0 = time.perf_counter()
    result = fused(haadf_op, haadf, chem_op, chem, SYMBOLS[:n_el], n_iter=n_iter, callback=clock, **kwargs)
    total = time.perf_counter() - t0
    per_iter = float(np.diff(stamps).mean())  # stamps at each iterate's cost evaluation
    return {
        "n": n,
        "n_elements": n_el,
        "device": result.device,
        "n_iter": n_iter,
        "seconds_per_iteration": per_iter,
        "setup_s": stamps[0] - t0,
        "total_s": total,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0], "fused.json")
    p.add_argument("--iterations", type=int, default=5)
    args = p.parse_args()
    rows = []
    for n in (64, 128):
        rows.append(time_case(n, 3, "cpu", args.iterations))
        print(rows[-1], flush=True)
    gpu_note = None
    if backend.gpu_available():
        rows.append(time_case(256, 4, "gpu", max(args.iterations, 10)))
        print(rows[-1], flush=True)
    else:
        gpu_note = f"GPU case (256³, 4 elements) not run: {backend.gpu_unavailable_reason()}"
        print(gpu_note)
    write(
        args.out,
        {
            "benchmark": "fused",
            "machine": machine(),
            "results": rows,
            "target": "GPU 256^3, 4 elements: <= 0.1 s per iteration",
            "note": gpu_note,
        },
    )


if __name__ == "__main__":
    main()
