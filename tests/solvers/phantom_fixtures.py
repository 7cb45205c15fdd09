"""A small noisy multi-element specimen for solver tests (not the product's phantoms).

Two oxide particles (Co–O and Cu–O) with Au inclusions, extruded along x.
"""

from __future__ import annotations

import numpy as np

from tomosweep.solvers import Projector

ELEMENTS = ("Co", "Cu", "O", "Au")
Z = np.array([27.0, 29.0, 8.0, 79.0])


def specimen(n: int, n_x: int) -> np.ndarray:
    yy, zz = np.mgrid[:n, :n] - n / 2 + 0.5
    s = n / 64
    part_a = (yy + 8 * s) ** 2 + zz**2 < (14 * s) ** 2
    part_b = (yy - 14 * s) ** 2 + (zz - 5 * s) ** 2 < (9 * s) ** 2
    gold = ((yy + 8 * s) ** 2 + (zz + 2 * s) ** 2 < (4 * s) ** 2) | (
        (yy - 14 * s) ** 2 + (zz - 12 * s) ** 2 < (3 * s) ** 2
    )
    maps = np.stack([part_a & ~gold, part_b & ~gold, (part_a | part_b) & ~gold, gold]).astype(float)
    return np.repeat(maps[..., None], n_x, axis=-1)


def acquisition(n=48, n_x=2, n_haadf=45, n_chem=9, counts=0.05, seed=0, gamma=1.7):
    """Noisy HAADF (high dose) and chemical (≈1–2 counts/pixel) tilt series, ±70°."""
    rng = np.random.default_rng(seed)
    truth = specimen(n, n_x)
    haadf_op = Projector(n, np.linspace(-70, 70, n_haadf))
    chem_op = Projector(n, np.linspace(-70, 70, n_chem))
    haadf = haadf_op.forward(((Z[:, None, None, None] * truth) ** gamma).sum(0))
    haadf = rng.poisson(haadf * 0.1) / 0.1
    chem = rng.poisson(np.stack([chem_op.forward(t) for t in truth]) * counts).astype(float)
    return truth, haadf_op, haadf, chem_op, chem
