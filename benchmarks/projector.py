"""Forward + back projection of a full volume stack: tomosweep vs ASTRA (CPU, slice by slice).

For n = 64, 128, 256 and 45 / 141 tilts over ±70°, times one forward and one back
projection of an ``n × n × n`` volume. tomosweep does each as one sparse × dense
product over all slices; ASTRA's CPU ``line`` projector (the same matrix) is applied
slice by slice through its ``OpTomo`` operator. Matrix build time is reported apart.
Target: ours ≥ 10× faster at n = 128.

    python benchmarks/projector.py [--out benchmarks/results/projector.json] [--sizes 64 128]
"""

from __future__ import annotations

import time

import numpy as np
from _common import best_of, machine, parser, write

from tomosweep.solvers import Projector
from tomosweep.solvers import projector as projector_module


def astra_slice_by_slice(n: int, angles: np.ndarray):
    import astra

    vol = astra.create_vol_geom(n, n)
    geom = astra.create_proj_geom("parallel", 1.0, n, np.deg2rad(angles))
    pid = astra.create_projector("line", geom, vol)
    op = astra.OpTomo(pid)

    def run(volume: np.ndarray) -> None:
        for x in range(volume.shape[2]):
            sino = op.FP(np.ascontiguousarray(volume[:, :, x].T))
            op.BP(sino)

    return run, lambda: astra.projector.delete(pid)


def main() -> None:
    p = parser(__doc__.splitlines()[0], "projector.json")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--tilts", type=int, nargs="+", default=[45, 141])
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        volume = rng.random((n, n, n)).astype(np.float32)
        for n_tilts in args.tilts:
            angles = np.linspace(-70, 70, n_tilts)
            projector_module._cached_matrix.cache_clear()
            t0 = time.perf_counter()
            proj = Projector(n, angles, cache_dir=False)
            build_s = time.perf_counter() - t0
            proj.operators()  # float32 CSR and its transpose, built once per geometry

            def ours() -> None:
                proj.back(proj.forward(volume))  # noqa: B023

            ours_s = best_of(ours, 3)
            row = {
                "n": n,
                "n_tilts": n_tilts,
                "n_slices": n,
                "matrix_build_s": build_s,
                "matrix_nnz": int(proj.matrix.nnz),
                "tomosweep_fwd_back_s": ours_s,
            }
            try:
                run, cleanup = astra_slice_by_slice(n, angles)
            except ImportError:
                row["astra_fwd_back_s"] = None
                row["speedup"] = None
            else:
                astra_s = best_of(lambda: run(volume), 1 if n >= 256 else 2)  # noqa: B023
                cleanup()
                row["astra_fwd_back_s"] = astra_s
                row["speedup"] = astra_s / ours_s
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    write(args.out, {"benchmark": "projector", "machine": machine(), "results": rows})


if __name__ == "__main__":
    main()
