r"""SIRT with non-negativity (Yuan 2021 §2.1).

Solves the least-squares problem of Yuan 2021 eq. 11,

.. math:: X^* = \arg\min_{X \ge 0} \lVert I - W X \rVert_2^2,

with the simultaneous iterative reconstruction technique: every iteration uses all
projections at once,

.. math:: X^{k+1} = \max\!\bigl(0,\; X^k + \omega\, C\, W^T R\,(I - W X^k)\bigr),

where :math:`R = \mathrm{diag}(1/\sum_j w_{ij})` and :math:`C = \mathrm{diag}(1/\sum_i
w_{ij})` (inverse row and column sums; zero where a sum is zero), ω the relaxation
(1 by default, as in ASTRA's SIRT) and the max the non-negativity constraint of §2.1
("setting individual negative voxels to zero in each iteration"). SIRT semi-converges
on noisy data, so the iteration count is itself a regularisation parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.solvers import backend, validation
from tomosweep.solvers.projector import Projector
from tomosweep.solvers.result import Callback, CostLog, Result


def safe_inverse(xp: Any, sums: Any) -> Any:
    """1/sums where sums > 0, else 0 (SIRT's R and C: rays or pixels the geometry never touches)."""
    out = xp.zeros_like(sums)
    mask = sums > 1e-12
    out[mask] = 1.0 / sums[mask]
    return out


def sirt_iterate(
    forward: Callable[[Any], Any],
    back: Callable[[Any], Any],
    data: Any,
    inv_row: Any,
    inv_col: Any,
    x0: Any,
    *,
    n_iter: int,
    relaxation: float,
    nonneg: bool,
    log: CostLog,
    xp: Any,
) -> tuple[Any, int]:
    """The SIRT loop for any linear operator given as ``forward``/``back`` callables.

    ``data`` and ``inv_row`` live in the measurement space, ``x0`` and ``inv_col`` in
    the image space; ``inv_row``/``inv_col`` broadcast against them. Returns the final
    iterate and the number of iterations run. Shared by :func:`sirt` and HEBT.
    """
    x = x0
    done = 0
    for k in range(n_iter):
        residual = data - forward(x)
        if log.record(k, {"data": xp.vdot(residual, residual).real}, x):
            return x, done
        x = x + (relaxation * inv_col) * back(inv_row * residual)
        if nonneg:
            xp.maximum(x, 0, out=x)
        done = k + 1
    residual = data - forward(x)
    log.record(done, {"data": xp.vdot(residual, residual).real}, x)
    return x, done


def sirt(
    projector: Projector,
    tilt_series: Any,
    *,
    n_iter: int = 50,
    relaxation: float = 1.0,
    nonneg: bool = True,
    x0: Any = None,
    device: str | None = None,
    callback: Callback | None = None,
) -> Result:
    """Reconstruct one modality with non-negative SIRT (Yuan 2021 §2.1, eq. 11).

    Parameters
    ----------
    projector : Projector
        Geometry of ``tilt_series``.
    tilt_series : array, shape (n_angles, n_det, n_x)
        Measured projections (HAADF intensities or one element's counts).
    n_iter : int
        Iterations (a regularisation parameter: SIRT semi-converges on noisy data).
    relaxation : float
        ω in the update rule, in (0, 2).
    nonneg : bool
        Clip negative voxels to zero after every update (Yuan 2021 §2.1).
    x0 : array, optional
        Starting volume ``(n, n, n_x)``; zeros by default.
    device : {"cpu", "gpu", "auto"}, optional
        Where to compute; by default where ``tilt_series`` lives.
    callback : callable, optional
        ``callback(k, costs, volume)``; return True to stop.

    Returns
    -------
    Result
        ``volume`` of shape ``(n, n, n_x)``; ``costs["data"]`` = ‖I − WX‖² per iterate.
    """
    n_iter = validation.positive_int(n_iter, "n_iter", minimum=0)
    validation.relaxation(relaxation)
    xp = backend.choose_xp(tilt_series, device=device)
    tilt_series = validation.finite_array(tilt_series, "tilt_series")
    n_x = validation.tilt_series_shape(tilt_series, projector, "tilt_series")
    dtype = np.float64 if tilt_series.dtype == np.float64 else np.float32
    b = backend.asarray(tilt_series, xp, dtype).reshape(projector.shape[0], n_x)
    if x0 is None:
        x = xp.zeros((projector.shape[1], n_x), dtype=dtype)
    else:
        x0 = validation.finite_array(x0, "x0")
        if tuple(x0.shape) != (projector.n, projector.n, n_x):
            raise InputError(f"x0 must have shape {(projector.n, projector.n, n_x)}, got {tuple(x0.shape)}")
        x = backend.asarray(x0, xp, dtype).reshape(projector.shape[1], n_x).copy()
    inv_row = safe_inverse(xp, projector.row_sums(xp, dtype))[:, None]
    inv_col = safe_inverse(xp, projector.col_sums(xp, dtype))[:, None]
    log = CostLog("SIRT", callback)
    x, done = sirt_iterate(
        projector.forward_matrix,
        projector.back_matrix,
        b,
        inv_row,
        inv_col,
        x,
        n_iter=n_iter,
        relaxation=float(relaxation),
        nonneg=nonneg,
        log=log,
        xp=xp,
    )
    return log.result(x.reshape(projector.n, projector.n, n_x), done, backend.device_name(xp))


def sirt_per_element(
    projector: Projector,
    chem_tilt_series: Any,
    *,
    n_iter: int = 20,
    relaxation: float = 1.0,
    nonneg: bool = True,
    device: str | None = None,
) -> Result:
    r"""Conventional chemical tomography: one :func:`sirt` per element map (Yuan 2021 eq. 11).

    ``chem_tilt_series`` is ``(n_elements, n_angles, n_det, n_x)``; the result's volume is
    ``(n_elements, n_y, n_z, n_x)`` and its costs are summed over the elements.
    """
    runs = [
        sirt(projector, c, n_iter=n_iter, relaxation=relaxation, nonneg=nonneg, device=device) for c in chem_tilt_series
    ]
    xp = backend.get_array_module(runs[0].volume)
    return Result(
        volume=xp.stack([r.volume for r in runs]),
        costs={k: np.sum([r.costs[k] for r in runs], axis=0) for k in runs[0].costs},
        iterations=runs[0].iterations,
        wall_time_s=sum(r.wall_time_s for r in runs),
        device=runs[0].device,
        info={"elements": len(runs)},
    )
