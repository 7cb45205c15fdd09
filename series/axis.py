r"""The in-plane turn of the tilt axis, estimated from the series itself (``tilt_axis_angle = "auto"``).

A series whose tilt axis is turned by :math:`\varphi` from the image's x axis is consistent with a
parallel-beam geometry about x only once its images are turned back by :math:`\varphi`: turned by
any other angle, the slice seen in one image column differs from tilt to tilt, and no non-negative
volume reprojects onto all of them. The estimate is the turn that minimises the relative
reprojection residual

.. math:: r(\varphi) = \lVert A\,x_\varphi - b_\varphi \rVert^2 / \lVert b_\varphi \rVert^2,

where :math:`b_\varphi` is the series turned by :math:`\varphi` (cubic spline), its drift undone
(across the axis by the centres of mass, which a parallel projection conserves, less the specimen's
translation :math:`y\cos\theta - z\sin\theta`; along it by cross-correlating the mass profiles along
the axis, which are the same at every tilt) and the image columns within
:math:`\tfrac12 n_\mathrm{det}\tan 11°` of either end left out (a turn moves specimen in and out
there), and :math:`x_\varphi` is its reconstruction: 60 iterations of non-negative SIRT (Yuan 2021
§2.1) with Nesterov's momentum, on this project's projector.

Three choices keep :math:`r` from preferring a turn for reasons other than consistency, each
measured in ``benchmarks/tilt_axis.py``. An early-stopped reconstruction leaves part of even a
consistent series unfitted, and that part changes with the turn: after 60 plain SIRT iterations it
moved the minimum by 0.1–0.3° on a ±50° series, after 60 accelerated ones by 0.01°. The images are
blurred by a Gaussian of one pixel before turning, so that the spline's own smoothing (which lowers
the residual of noise the more, the further a turn is from 0°) is negligible beside it. The series
is binned to at most 64 pixels, which also bounds the time (a few seconds for 77 tilts). The search
runs over whole degrees within ±11° on the series binned by two more (when it is 48 pixels or
wider), then fits parabolas to five residuals 0.5° apart at full resolution, re-centred until the
vertex lies among them.

A turn is only seen where the specimen holds structure along the axis and stays inside the field
of view across it, and its precision is that of the data: on noisy 64-pixel simulated series it is
a few hundredths of a degree, on a 36-pixel one with a few hundred counts per pixel a few tenths.

Two cheaper estimators are kept for that benchmark's comparison. Centre-of-mass tracking of the
columns (:func:`centre_of_mass_angle`; IMOD's and ETSpy's tilt-axis tools) fits
:math:`c(x) + y(x)\cos\theta - z(x)\sin\theta` to each column's centre of mass across the axis and a
line through :math:`c(x)`: over a limited tilt range :math:`c` and :math:`y` are nearly collinear,
so the noise of each column's centre becomes degrees of error on a small specimen. The mass-profile
search (:func:`profile_misfit_angle`) finds the turn whose slices' mass changes least between tilts;
its linear binning smooths a profile taken along a turned direction, so it leans towards large
turns, and a specimen that leaves the field of view along the axis (ETSpy's needle) defeats it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomosweep.errors import InputError

LIMIT = 10.0  # degrees: a turn estimated beyond this is refused (a wrong tilt_axis, or no isolated specimen)
_SIZE = 64  # pixels: the series is binned to at most this for the estimate
_COARSE_SIZE = 48  # a series at least this wide (after binning) is searched coarsely at half its size
_BLUR = 1.0  # pixels: Gaussian blur before turning (module docstring)
_SIRT_ITERATIONS = 60
_COARSE_SIRT_ITERATIONS = 40
_STEP = 0.5  # degrees between the fine residuals
_ROUNDS = 4  # parabolas re-centred at most this often
# a column holds specimen when its mass is at least this fraction of the fullest column's at every tilt
_MIN_COLUMN_MASS = 0.2
_MIN_COLUMNS = 5
_MIN_TILTS = 5
_MIN_SPAN = 30.0  # degrees of tilt: over less, a turned axis hardly changes a slice between tilts
# the specimen leaves the field of view across the axis when the outer rows (this share of them on each
# side) are brighter than this fraction of the projection's brightest row at more than this share of tilts
_EDGE_ROWS = 1 / 32
_EDGE_LEVEL = 0.1
_EDGE_TILTS = 0.1


@dataclass(frozen=True)
class AxisTurn:
    """A tilt-axis turn estimated from a series (module docstring).

    Attributes
    ----------
    angle : float
        Degrees to turn the images by (``tilt_axis_angle``, in the frame of the images estimated on).
    residual : float
        Relative reprojection residual of the series turned by ``angle``.
    residual_unturned : float
        The same, not turned: how much the turn makes the series more consistent.
    binning : int
        The series was summed ``binning × binning`` for the estimate.
    columns : int
        Image columns along the axis that hold specimen at every tilt.
    evaluations : int
        Reconstructions made.
    """

    angle: float
    residual: float
    residual_unturned: float
    binning: int
    columns: int
    evaluations: int

    def as_dict(self) -> dict[str, Any]:
        """The estimate as plain JSON values."""
        return {
            "from": "auto",
            "method": "minimum over the turn of the reprojection residual of an accelerated SIRT reconstruction",
            "estimate_deg": float(self.angle),
            "residual": float(self.residual),
            "residual_unturned": float(self.residual_unturned),
            "binning": int(self.binning),
            "columns": int(self.columns),
            "evaluations": int(self.evaluations),
        }


def _refused(text: str) -> InputError:
    return InputError(f'tilt_axis_angle = "auto": {text}; give tilt_axis_angle in degrees')


def _turn(stack: np.ndarray, angle: float, order: int) -> np.ndarray:
    from scipy.ndimage import rotate

    if not angle:
        return stack.copy()
    return np.stack([rotate(image, angle, reshape=False, order=order, mode="constant") for image in stack])


def _binned(stack: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return stack
    n, rows, cols = stack.shape
    rows, cols = rows - rows % factor, cols - cols % factor
    return stack[:, :rows, :cols].reshape(n, rows // factor, factor, cols // factor, factor).sum(axis=(2, 4))


def _along_shifts(profiles: np.ndarray, passes: int = 2) -> np.ndarray:
    """Shifts along the axis that best overlay each mass profile ``(n, m)`` on their mean (cross-correlation,
    sub-pixel by a parabola; Fourier shifts, which change no profile's shape)."""
    from tomosweep.series.align import _parabola_peak

    n, m = profiles.shape
    length = 2 * m
    spectra = np.fft.rfft(profiles, n=length, axis=1)
    k = np.arange(spectra.shape[1])
    shifts = np.zeros(n)
    for _ in range(passes):
        moved = spectra * np.exp(2j * np.pi * np.outer(shifts, k) / length)
        corr = np.fft.irfft(moved * np.conj(moved.mean(axis=0))[None], n=length, axis=1)
        peak = np.argmax(corr, axis=1)
        for i, p in enumerate(peak):
            fraction = _parabola_peak(corr[i, p - 1], corr[i, p], corr[i, (p + 1) % length])
            shifts[i] += (p - length if p > length // 2 else p) + fraction
    return shifts - shifts.mean()


class _Residual:
    """:math:`r(\\varphi)` at one resolution (module docstring), remembered per turn."""

    def __init__(self, stack: np.ndarray, angles: np.ndarray, *, binning: int, n_iter: int, span: float) -> None:
        from scipy.ndimage import gaussian_filter

        from tomosweep.solvers import Projector

        self.images = np.asarray(gaussian_filter(_binned(stack, binning), (0, _BLUR, _BLUR)), dtype=float)
        self.angles = angles
        rows = int(self.images.shape[1])
        self.margin = int(math.ceil(rows / 2 * math.tan(math.radians(span))))
        self.projector = Projector(rows, angles)
        self.n_iter = n_iter
        self.det = np.arange(rows) - (rows - 1) / 2
        self.values: dict[float, float] = {}

    def __call__(self, angle: float) -> float:
        key = round(float(angle), 6)
        if key not in self.values:
            self.values[key] = self._residual(key)
        return self.values[key]

    def _residual(self, angle: float) -> float:
        from tomosweep.series.align import apply_shifts, without_translation

        turned = _turn(self.images, angle, order=3)
        cols = turned.shape[2]
        kept = slice(self.margin, cols - self.margin)
        mass = np.maximum(turned.sum(axis=(1, 2)), 1e-300)
        shifts = np.zeros((turned.shape[0], 2))
        shifts[:, 0] = turned.sum(axis=2) @ self.det / mass
        shifts[:, 1] = _along_shifts(turned[:, :, kept].sum(axis=1))
        shifts, _ = without_translation(self.angles, shifts)
        data = apply_shifts(turned, shifts)[:, :, kept].astype(np.float32)
        volume = _accelerated_sirt(self.projector, data, self.n_iter)
        misfit = np.asarray(self.projector.forward(volume), dtype=float) - data
        return float(np.sum(misfit**2) / max(float(np.sum(data.astype(float) ** 2)), 1e-300))


def _accelerated_sirt(projector: Any, data: np.ndarray, n_iter: int) -> np.ndarray:
    r"""Non-negative SIRT with Nesterov's momentum: FISTA (Beck & Teboulle 2009) on SIRT's weighted least
    squares :math:`\lVert Ax - b \rVert^2_R`, preconditioned by :math:`C` (:math:`R, C` the inverse row and
    column sums, for which SIRT's step 1 is within :math:`1/L`)."""
    n_x = data.shape[2]
    b = data.reshape(projector.shape[0], n_x)
    inv_row = (1.0 / np.maximum(projector.row_sums(np, np.float32), 1e-12))[:, None]
    inv_col = (1.0 / np.maximum(projector.col_sums(np, np.float32), 1e-12))[:, None]
    x = np.zeros((projector.shape[1], n_x), dtype=np.float32)
    y, t = x, 1.0
    for _ in range(n_iter):
        new = np.maximum(y + inv_col * projector.back_matrix(inv_row * (b - projector.forward_matrix(y))), 0.0)
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = new + ((t - 1) / t_next) * (new - x)
        x, t = new, t_next
    return x.reshape(projector.n, projector.n, n_x)


def _vertex(points: np.ndarray, values: np.ndarray) -> float | None:
    """The vertex of the parabola through ``(points, values)``; None when it opens downwards."""
    centre = float(points[len(points) // 2])
    a, b, _ = np.polyfit(points - centre, values, 2)
    return None if a <= 0 else centre - b / (2 * a)


def _check(stack: np.ndarray, angles: np.ndarray, margin: int) -> int:
    """Refuse a series a turn cannot be estimated on (one line each); the columns holding specimen."""
    n, rows, cols = stack.shape
    if n < _MIN_TILTS or float(np.ptp(angles)) < _MIN_SPAN:
        raise _refused(
            f"{n} tilts spanning {float(np.ptp(angles)):.0f}°; estimating the turn needs at least {_MIN_TILTS} "
            f"tilts over {_MIN_SPAN:g}° or more"
        )
    mass = stack.sum(axis=(1, 2))
    if np.any(mass <= 0):
        raise _refused("a projection is empty after its vacuum level is subtracted")
    edge = max(1, int(round(rows * _EDGE_ROWS)))
    row_means = stack.mean(axis=2)
    outer = np.concatenate([row_means[:, :edge], row_means[:, -edge:]], axis=1).mean(axis=1)
    reached = outer > _EDGE_LEVEL * row_means.max(axis=1)
    if reached.mean() > _EDGE_TILTS:
        raise _refused(
            f"the specimen reaches the detector's edge across the tilt axis at {int(reached.sum())} of {n} tilts: "
            "the turn is estimated on an isolated specimen, whose projections keep their mass"
        )
    column_mass = stack[:, :, margin : cols - margin].sum(axis=1)
    used = int(np.sum(column_mass.min(axis=0) > _MIN_COLUMN_MASS * column_mass.max())) if column_mass.size else 0
    if used < _MIN_COLUMNS:
        raise _refused(
            f"only {used} image columns along the axis hold specimen at every tilt (at least {_MIN_COLUMNS} are needed)"
        )
    return used


def estimate_tilt_axis_angle(stack: np.ndarray, angles: np.ndarray, *, limit: float = LIMIT) -> AxisTurn:
    """The turn that puts the tilt axis along x (module docstring).

    Parameters
    ----------
    stack : ndarray (n, n_det, n_x)
        The series in tomosweep's layout, its vacuum level subtracted (a flat background is specimen to
        the reconstruction, and reaches every edge).
    angles : ndarray (n,)
        Tilts in degrees, in the order of ``stack``.
    limit : float
        Largest turn accepted, degrees.

    Returns
    -------
    AxisTurn
        ``angle`` is what ``tilt_axis_angle`` would be for these images.

    Raises
    ------
    InputError
        Fewer than five tilts or a span under 30°; the specimen at the detector's edge across the axis; fewer
        than five image columns holding specimen at every tilt; no minimum of the residual, or one beyond
        ``limit``.
    """
    stack = np.clip(np.nan_to_num(np.asarray(stack, dtype=float)), 0.0, None)
    angles = np.asarray(angles, dtype=float)
    if stack.ndim != 3 or stack.shape[0] != angles.size:
        raise _refused(f"need (n_tilts, n_det, n_x) images and one angle each; got {stack.shape}, {angles.size}")
    order = np.argsort(angles)
    stack, angles = stack[order], angles[order]
    span = limit + 1.0
    binning = max(1, math.ceil(max(stack.shape[1:]) / _SIZE))
    fine_stack = _binned(stack, binning)
    if min(fine_stack.shape[1:]) < 8:
        raise _refused(f"images of {stack.shape[1]} × {stack.shape[2]} pixels are too small")
    margin = int(math.ceil(fine_stack.shape[1] / 2 * math.tan(math.radians(span))))
    columns = _check(fine_stack, angles, margin)
    fine = _Residual(fine_stack, angles, binning=1, n_iter=_SIRT_ITERATIONS, span=span)
    coarse = (
        _Residual(fine_stack, angles, binning=2, n_iter=_COARSE_SIRT_ITERATIONS, span=span)
        if max(fine_stack.shape[1:]) >= _COARSE_SIZE
        else fine
    )

    grid = np.arange(-math.ceil(span), math.ceil(span) + 0.5, 1.0)
    values = np.array([coarse(g) for g in grid])
    best = int(np.argmin(values))
    if best in (0, grid.size - 1):
        raise _refused(f"the tilt axis looks turned by more than {limit:g}°; check tilt_axis")
    start = _vertex(grid[best - 1 : best + 2], values[best - 1 : best + 2])
    centre = float(grid[best]) if start is None else float(np.clip(start, grid[best] - 1, grid[best] + 1))
    centre = round(centre / 0.01) * 0.01  # a grid of its own, so re-centred parabolas share residuals
    angle: float | None = None
    for _ in range(_ROUNDS):
        points = centre + _STEP * np.arange(-2, 3)
        angle = _vertex(points, np.array([fine(p) for p in points]))
        if angle is None:
            raise _refused(
                f"the reprojection residual has no minimum near {centre:.1f}°: the series holds too little "
                "structure for the turn to matter"
            )
        if abs(angle - centre) <= 2 * _STEP:
            break
        centre = round(float(np.clip(angle, centre - 2 * _STEP, centre + 2 * _STEP)) / 0.01) * 0.01
    assert angle is not None
    if abs(angle) > limit:
        raise _refused(f"the tilt axis looks turned by more than {limit:g}° ({angle:.1f}°); check tilt_axis")
    residual, unturned = fine(angle), fine(0.0)
    evaluations = len(fine.values) + (len(coarse.values) if coarse is not fine else 0)
    return AxisTurn(
        angle=float(angle),
        residual=residual,
        residual_unturned=unturned,
        binning=binning,
        columns=columns,
        evaluations=evaluations,
    )


def centre_of_mass_angle(stack: np.ndarray, angles: np.ndarray, *, rounds: int = 6) -> float:
    """Centre-of-mass tracking of the columns (module docstring), for ``benchmarks/tilt_axis.py``.

    Each column's centre of mass across the axis, less the mean over columns at each tilt (the drift),
    is fitted by :math:`c + y\\cos\\theta - z\\sin\\theta`; a line through the :math:`c` of the columns
    holding specimen at every tilt, weighted by their mass, gives :math:`\\tan\\varphi`. Repeated on the
    series turned by the estimate so far (a column is a slice only to first order).

    Returns
    -------
    float
        The turn, degrees.
    """
    stack = np.clip(np.asarray(stack, dtype=float), 0.0, None)
    t = np.radians(np.asarray(angles, dtype=float))
    design = np.stack([np.ones_like(t), np.cos(t), -np.sin(t)], axis=1)
    total = 0.0
    for _ in range(rounds):
        turned = _turn(stack, total, order=1)
        _, rows, cols = turned.shape
        mass = turned.sum(axis=1)
        used = mass.min(axis=0) > _MIN_COLUMN_MASS * mass.max()
        if used.sum() < 2:
            return total
        det = np.arange(rows) - (rows - 1) / 2
        centre = np.einsum("nrc,r->nc", turned[:, :, used], det) / mass[:, used]
        coef, *_ = np.linalg.lstsq(design, centre - centre.mean(axis=1, keepdims=True), rcond=None)
        x = (np.arange(cols) - (cols - 1) / 2)[used]
        slope = np.polyfit(x, coef[0], 1, w=np.sqrt(mass[:, used].min(axis=0)))[0]
        step = float(np.degrees(np.arctan(slope)))
        total += step
        if abs(step) < 0.01 or abs(total) > 45:
            break
    return total


def profile_misfit_angle(stack: np.ndarray, *, span: float = LIMIT, step: float = 0.5) -> float:
    """The mass-profile search (module docstring), for ``benchmarks/tilt_axis.py``: the turn whose slices'
    mass profile along the axis changes least between tilts, on a grid with a parabola through the best
    three points.

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
