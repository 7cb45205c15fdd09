r"""The in-plane turn of the tilt axis, estimated from the series itself.

A series whose tilt axis is turned by :math:`\varphi` from the image's x axis puts the axis at
detector position :math:`c(x) = c_0 + x\tan\varphi` in the image column :math:`x`. In each column the
centre of mass across the axis follows :math:`s(\theta) + c(x) + y(x)\cos\theta - z(x)\sin\theta`
(a parallel projection conserves mass; :math:`s(\theta)` is the drift across the axis, the same for
every column, and :math:`y, z` the mass centre of the specimen's slice). Subtracting the mean over
columns at each tilt removes the drift; a least-squares fit of :math:`c + y\cos\theta - z\sin\theta`
per column gives :math:`c(x)`, and a line through :math:`c(x)` (weighted by the columns' mass) gives
:math:`\tan\varphi` — the centre-of-mass tracking of IMOD's and ETSpy's tilt-axis tools. The columns
used are those holding specimen at every tilt. A column is a slice only to first order in
:math:`\varphi`, so the estimate is repeated on the series turned by the estimate so far until the
correction is below 0.01°.

The mass-profile alternative (the turn that makes each slice's mass most constant over tilts, as the
direction check of :func:`tomosweep.series.files.tilt_axis_misfit`) is biased towards large turns:
a profile taken along a turned direction is smoother, so it varies less between tilts whatever the
turn (``benchmarks/tilt_axis.py`` measures both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tomosweep.errors import InputError

# a column is used when it holds at least this fraction of the fullest column's mass at every tilt
_MIN_COLUMN_MASS = 0.2
_MIN_COLUMNS = 5
_TOLERANCE = 0.01  # degrees
_MAX_ROUNDS = 6
LIMIT = 10.0  # degrees: a turn estimated beyond this is refused (a wrong tilt_axis, or no isolated specimen)


@dataclass(frozen=True)
class AxisTurn:
    """A tilt-axis turn estimated from a series (module docstring).

    Attributes
    ----------
    angle : float
        Degrees to turn the images by (``tilt_axis_angle``, in the layout's frame).
    columns : int
        Columns across the axis that held specimen at every tilt and entered the fit.
    rounds : int
        Estimates repeated on the turned series.
    spread : float
        Root-mean-square distance of the columns' axis positions from the fitted line, pixels.
    """

    angle: float
    columns: int
    rounds: int
    spread: float

    def as_dict(self) -> dict[str, Any]:
        """The estimate as plain JSON values."""
        return {
            "from": "auto",
            "method": "centre-of-mass tracking of the columns across the axis",
            "angle_deg": float(self.angle),
            "columns": int(self.columns),
            "rounds": int(self.rounds),
            "axis_spread_px": float(self.spread),
        }


def _turn(stack: np.ndarray, angle: float) -> np.ndarray:
    from scipy.ndimage import rotate

    if not angle:
        return stack
    return np.stack([rotate(image, angle, reshape=False, order=1, mode="nearest") for image in stack])


def _column_axis(stack: np.ndarray, angles: np.ndarray) -> tuple[float, int, float]:
    """One estimate of the turn (degrees), the columns used and the spread of their axis positions."""
    n, rows, cols = stack.shape
    mass = stack.sum(axis=1)  # (n, cols)
    used = mass.min(axis=0) > _MIN_COLUMN_MASS * mass.max()
    if used.sum() < _MIN_COLUMNS:
        raise InputError(
            f'tilt_axis_angle = "auto": only {int(used.sum())} columns across the axis hold specimen at every tilt '
            f"(at least {_MIN_COLUMNS} are needed); give tilt_axis_angle in degrees"
        )
    det = np.arange(rows) - (rows - 1) / 2
    centre = np.einsum("nrc,r->nc", stack[:, :, used], det) / mass[:, used]
    relative = centre - centre.mean(axis=1, keepdims=True)
    t = np.radians(angles)
    design = np.stack([np.ones_like(t), np.cos(t), -np.sin(t)], axis=1)
    coef, *_ = np.linalg.lstsq(design, relative, rcond=None)
    x = (np.arange(cols) - (cols - 1) / 2)[used]
    weight = np.sqrt(mass[:, used].min(axis=0))
    slope, intercept = np.polyfit(x, coef[0], 1, w=weight)
    spread = float(np.sqrt(np.average((coef[0] - (slope * x + intercept)) ** 2, weights=weight**2)))
    return float(np.degrees(np.arctan(slope))), int(used.sum()), spread


def estimate_tilt_axis_angle(stack: np.ndarray, angles: np.ndarray) -> AxisTurn:
    """The turn that puts the tilt axis along x (module docstring).

    Parameters
    ----------
    stack : ndarray (n, n_det, n_x)
        The series in tomosweep's layout, its vacuum level subtracted (a flat background pulls every
        centre of mass towards the detector centre).
    angles : ndarray (n,)
        Tilts in degrees.

    Returns
    -------
    AxisTurn
        ``angle`` is what ``tilt_axis_angle`` would be for these images.

    Raises
    ------
    InputError
        Fewer than five columns hold specimen at every tilt, or the estimate is beyond ±10°.
    """
    stack = np.clip(np.asarray(stack, dtype=float), 0.0, None)
    angles = np.asarray(angles, dtype=float)
    total, columns, spread, rounds = 0.0, 0, 0.0, 0
    while rounds < _MAX_ROUNDS:
        rounds += 1
        step, columns, spread = _column_axis(_turn(stack, total), angles)
        total += step
        if abs(total) > LIMIT:
            raise InputError(
                f'tilt_axis_angle = "auto": the tilt axis looks turned by more than {LIMIT:g}° ({total:.1f}°); check '
                "tilt_axis, or give tilt_axis_angle in degrees"
            )
        if abs(step) < _TOLERANCE:
            break
    return AxisTurn(angle=total, columns=columns, rounds=rounds, spread=spread)


def profile_misfit_angle(stack: np.ndarray, *, span: float = LIMIT, step: float = 0.5) -> float:
    """The mass-profile alternative (module docstring), for ``benchmarks/tilt_axis.py``: the turn whose
    slices' mass profile along the axis changes least between tilts, on a grid with a parabola through
    the best three points.

    Parameters
    ----------
    stack : ndarray (n, n_det, n_x)
        The series, its vacuum level subtracted.
    span, step : float
        The grid of turns searched, degrees.

    Returns
    -------
    float
        The turn, degrees.
    """
    stack = np.clip(np.asarray(stack, dtype=float), 0.0, None)
    _, rows, cols = stack.shape
    r = np.arange(rows) - (rows - 1) / 2
    c = np.arange(cols) - (cols - 1) / 2
    rr, cc = np.meshgrid(r, c, indexing="ij")
    x = np.arange(cols, dtype=float)

    def misfit(turn: float) -> float:
        a = np.radians(turn)
        u = cc * np.cos(a) + rr * np.sin(a) + (cols - 1) / 2
        lower = np.floor(u).astype(int)
        w = u - lower
        keep = (lower >= 0) & (lower + 1 < cols)
        profiles = np.stack(
            [
                np.bincount(lower[keep], (im * (1 - w))[keep], minlength=cols)[:cols]
                + np.bincount(lower[keep] + 1, (im * w)[keep], minlength=cols)[:cols]
                for im in stack
            ]
        )
        profiles = profiles / np.maximum(profiles.sum(axis=1, keepdims=True), 1e-300)
        centre = (cols - 1) / 2
        centred = np.stack([np.interp(x, x - (p @ x - centre), p, left=0.0, right=0.0) for p in profiles])
        return float(np.mean((centred - centred.mean(axis=0)) ** 2))

    grid = np.arange(-span, span + step / 2, step)
    values = np.array([misfit(g) for g in grid])
    i = int(np.clip(np.argmin(values), 1, grid.size - 2))
    a, b, c3 = values[i - 1 : i + 2]
    curvature = a - 2 * b + c3
    return float(grid[i] + (0.5 * (a - c3) / curvature * step if curvature > 0 else 0.0))
