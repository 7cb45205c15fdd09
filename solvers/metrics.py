r"""Image-quality metrics against a ground truth.

* :func:`nrmse` — Schwartz 2024, Methods ("Multi-modal simulations…"): both volumes
  are z-normalised (zero mean, unit standard deviation), then

  .. math:: \mathrm{NRMSE}(x, y) = \sqrt{\frac{\sum (y - x)^2}{\sum y^2}}

  with ``x`` the reconstruction and ``y`` the ground truth; per element, and the
  mean over elements is the map value of Schwartz 2024 Fig. 4a.
* :func:`ssim_structure` — the structure component of SSIM, Yuan 2021 §3.1.2
  eq. 19–22 (sample covariances with N − 1, C = 0 by default as in the paper).
* :func:`scaled_mse` — MSE after the scale factor that minimises it (Yuan 2021
  §3.1.2, for reconstructions not on the ground truth's scale); :func:`mse` plain.

All take NumPy or CuPy arrays and return Python floats (or a NumPy array per channel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.solvers import backend


def _pair(x: Any, y: Any, name: str) -> tuple[Any, Any, Any]:
    xp = backend.get_array_module(x, y)
    x = backend.asarray(x, xp, np.float64)
    y = backend.asarray(y, xp, np.float64)
    if x.shape != y.shape:
        raise InputError(f"{name}: reconstruction shape {x.shape} != ground-truth shape {y.shape}")
    if x.size < 2:
        raise InputError(f"{name}: need at least 2 voxels, got {x.size}")
    if not (bool(xp.all(xp.isfinite(x))) and bool(xp.all(xp.isfinite(y)))):
        raise InputError(f"{name}: inputs contain NaN or infinite values")
    return xp, x, y


def _per_channel(fn, x: Any, y: Any, channel_axis: int | None) -> Any:
    if channel_axis is None:
        return fn(x, y)
    xs = np.moveaxis(backend.to_numpy(x), channel_axis, 0)
    ys = np.moveaxis(backend.to_numpy(y), channel_axis, 0)
    if xs.shape != ys.shape:
        raise InputError(f"reconstruction shape {xs.shape} != ground-truth shape {ys.shape}")
    return np.array([fn(a, b) for a, b in zip(xs, ys, strict=True)])


def _zscore(xp: Any, v: Any, what: str) -> Any:
    std = float(v.std())
    if std == 0.0:
        raise InputError(f"nrmse: the {what} is constant, so it cannot be z-normalised")
    return (v - v.mean()) / std


def _nrmse_one(x: Any, y: Any) -> float:
    xp, x, y = _pair(x, y, "nrmse")
    yz = _zscore(xp, y, "ground truth")
    if float(x.std()) == 0.0:
        xz = xp.zeros_like(x)  # a flat reconstruction carries no structure: NRMSE = 1
    else:
        xz = _zscore(xp, x, "reconstruction")
    return float(xp.sqrt(((yz - xz) ** 2).sum() / (yz**2).sum()))


def nrmse(reconstruction: Any, ground_truth: Any, *, channel_axis: int | None = None) -> Any:
    """Normalised RMSE after z-normalisation (Schwartz 2024, Methods).

    Parameters
    ----------
    reconstruction, ground_truth : array
        Same shape. With ``channel_axis``, each channel (element) is scored alone.
    channel_axis : int, optional
        Axis holding elements; then an array of per-element NRMSE is returned (take
        ``.mean()`` for the ⟨NRMSE⟩ of Schwartz 2024 Fig. 4a).

    Returns
    -------
    float or ndarray
        0 for a perfect reconstruction, 1 for a flat one, up to 2 for an inverted one.
    """
    return _per_channel(_nrmse_one, reconstruction, ground_truth, channel_axis)


def _ssim_one(x: Any, y: Any, c: float = 0.0) -> float:
    xp, x, y = _pair(x, y, "ssim_structure")
    n = x.size
    dx, dy = x - x.mean(), y - y.mean()
    sxy = float((dx * dy).sum()) / (n - 1)  # eq. 20
    sx = float(xp.sqrt((dx**2).sum() / (n - 1)))  # eq. 21
    sy = float(xp.sqrt((dy**2).sum() / (n - 1)))  # eq. 22
    denom = sx * sy + c
    if denom == 0.0:
        raise InputError("ssim_structure: an input is constant and C = 0; pass c > 0")
    return (sxy + c) / denom  # eq. 19


def ssim_structure(reconstruction: Any, ground_truth: Any, *, c: float = 0.0, channel_axis: int | None = None) -> Any:
    """Structure component of SSIM, Yuan 2021 eq. 19–22 (``c`` = C, zero in the paper)."""
    return _per_channel(lambda a, b: _ssim_one(a, b, c), reconstruction, ground_truth, channel_axis)


def mse(reconstruction: Any, ground_truth: Any) -> float:
    """Mean squared error, no scaling (Yuan 2021 §3.1.2, for weight-fraction maps)."""
    xp, x, y = _pair(reconstruction, ground_truth, "mse")
    return float(((x - y) ** 2).mean())


def scaled_mse(reconstruction: Any, ground_truth: Any) -> tuple[float, float]:
    """MSE with the optimal scale factor, Yuan 2021 §3.1.2.

    Returns ``(mse, scale)`` with ``scale = ⟨x, y⟩ / ⟨x, x⟩`` minimising
    ``mean((scale·x − y)²)``.
    """
    xp, x, y = _pair(reconstruction, ground_truth, "scaled_mse")
    xx = float((x * x).sum())
    scale = float((x * y).sum()) / xx if xx > 0 else 0.0
    return float(((scale * x - y) ** 2).mean()), scale
