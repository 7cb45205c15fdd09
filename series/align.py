r"""Alignment of a multi-modal tilt series (Schwartz 2024 Methods, "Multi-modal tilt series alignment").

The paper aligns the HAADF series coarsely by cross-correlation or by centre of mass
(CoM), refines it by projection matching, and applies the measured translations to the
chemical maps recorded at the same tilts. All three are here.

Convention: ``shifts[i] = (s_det, s_x)`` in pixels says where projection *i* sits
relative to its aligned place, ``raw_i(p) = aligned_i(p − s_i)``; :func:`apply_shifts`
moves it back by ``−s_i``. The tilt axis is x (docs/architecture.md, Conventions), so ``s_x`` runs along the axis and
``s_det`` across it. Shifts are in the pixels of the series as given to :func:`align_series`.

``xcorr`` (any field of view):

1. the shift between each pair of successive projections (sorted by angle) is the
   peak of their cross-correlation, refined to sub-pixel by a parabola through the peak
   and its neighbours; the shifts accumulate outwards from the projection nearest 0°,
   and each inner projection is then re-measured against the mean of its two neighbours;
2. the tilt axis is then found from the centres of mass. A series consistent with a
   rotation about an axis at detector position :math:`c` has
   :math:`m(\theta) = c + y\cos\theta - z\sin\theta` for the mass centre
   :math:`(y, z)` of the specimen (mass is conserved in a parallel projection), so a
   least-squares fit of :math:`(c, y, z)` to the measured :math:`m(\theta)` gives the
   axis, and every projection moves by :math:`c` to put it at the detector centre.

``com`` (an isolated specimen, whose projected mass is the same at every tilt): the
centre of mass of each projection is its shift, across the axis and along it.

``projmatch`` (default): ``xcorr``, then projection matching (Schwartz 2024 Methods; the
fine alignment IMOD, tomviz and ETSpy offer): reconstruct the aligned series with SIRT
(:func:`tomosweep.solvers.sirt`), reproject it at every tilt, register each projection to
its own reprojection, and repeat. A wrong tilt axis smears the reconstruction into arcs
that no shift of one projection explains, so the axis is refined with the shifts.

**No net translation.** A reconstruction is defined up to a translation of the specimen:
shifts :math:`s(\theta) + y\cos\theta - z\sin\theta` across the axis, and any constant
along it, align a series equally well. Every method ends by removing that part (the
:math:`y, z` of a least-squares fit of :math:`c + y\cos\theta - z\sin\theta` to the
shifts across, and the mean along), so applying the shifts leaves the specimen where the
raw series has it on average; the reported shifts are the ones applied, and the reported
axis offset is the fitted :math:`c`. The chain of pairwise ``xcorr`` shifts or the CoM
alone would otherwise move the specimen by several voxels (the chain's reference, the
specimen's own mass centre).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.solvers import Projector, sirt

log = logging.getLogger(__name__)

METHODS = ("projmatch", "xcorr", "com", "none")


@dataclass(frozen=True)
class Alignment:
    """Shifts found for a HAADF series (module docstring for the convention).

    Attributes
    ----------
    angles : ndarray (n,)
        Tilts in degrees, the order of ``shifts``.
    shifts : ndarray (n, 2)
        ``(s_det, s_x)`` per projection, pixels.
    tilt_axis_offset : float
        Where the tilt axis was found across the detector, pixels from its centre.
    method : str
    com_before, com_after : ndarray (n,)
        Centre of mass across the axis, pixels from the centre, before and after.
    axis_turn : dict, optional
        The tilt-axis turn ``tilt_axis_angle = "auto"`` estimated and applied before these shifts
        (:meth:`tomosweep.series.axis.AxisTurn.as_dict` and the ``tilt_axis_angle`` it gave).
    """

    angles: np.ndarray
    shifts: np.ndarray
    tilt_axis_offset: float
    method: str
    com_before: np.ndarray
    com_after: np.ndarray
    axis_turn: dict[str, Any] | None = None

    def at(self, angles: np.ndarray, *, tol: float = 0.05) -> tuple[np.ndarray, int]:
        """Shifts at other tilts (the chemical maps'): the HAADF projection's at the same angle,
        else linear in angle between its neighbours. Returns the shifts and how many were interpolated."""
        angles = np.asarray(angles, dtype=float)
        out = np.empty((angles.size, 2))
        interpolated = 0
        for i, a in enumerate(angles):
            j = int(np.argmin(np.abs(self.angles - a)))
            if abs(self.angles[j] - a) <= tol:
                out[i] = self.shifts[j]
            else:
                out[i] = [np.interp(a, self.angles, self.shifts[:, k]) for k in range(2)]
                interpolated += 1
        return out, interpolated

    def as_dict(self) -> dict[str, Any]:
        """The alignment as plain JSON values (for ``reconstruction.json``)."""
        record = {
            "method": self.method,
            "tilt_axis_offset_px": float(self.tilt_axis_offset),
            "angles": [float(a) for a in self.angles],
            "shift_det_px": [float(s) for s in self.shifts[:, 0]],
            "shift_x_px": [float(s) for s in self.shifts[:, 1]],
        }
        if self.axis_turn is not None:
            record["tilt_axis_turn"] = dict(self.axis_turn)
        return record


def _centre_of_mass(stack: np.ndarray) -> np.ndarray:
    """``(n, 2)`` centres of mass (det, x) of each projection, pixels from the detector centre."""
    mass = stack.sum(axis=(1, 2))
    if np.any(mass <= 0):
        raise InputError("cannot align: a projection is empty (all zero after its vacuum level is subtracted)")
    det = np.arange(stack.shape[1]) - (stack.shape[1] - 1) / 2
    x = np.arange(stack.shape[2]) - (stack.shape[2] - 1) / 2
    return np.stack([stack.sum(axis=2) @ det / mass, stack.sum(axis=1) @ x / mass], axis=1)


def _parabola_peak(cm: float, c0: float, cp: float) -> float:
    denom = cm - 2 * c0 + cp
    return 0.0 if denom >= 0 else float(np.clip(0.5 * (cm - cp) / denom, -0.5, 0.5))


def relative_shift(reference: np.ndarray, moving: np.ndarray, *, max_shift: float | None = None) -> np.ndarray:
    """``t`` (det, x) with ``moving(p) ≈ reference(p − t)``: cross-correlation peak, sub-pixel by parabola."""
    # zero-padded, unwindowed: a window fixed on the detector pulls the peak towards zero
    # shift, and that bias would add up along the chain of successive pairs
    shape = tuple(2 * d for d in reference.shape)
    a = np.fft.rfft2(reference - np.median(reference), shape)
    b = np.fft.rfft2(moving - np.median(moving), shape)
    corr = np.fft.irfft2(np.conj(a) * b, shape)
    corr = np.fft.fftshift(corr)
    centre = np.array(corr.shape) // 2
    if max_shift is not None:
        mask = np.full(corr.shape, -np.inf)
        r = int(np.ceil(max_shift))
        mask[max(centre[0] - r, 0) : centre[0] + r + 1, max(centre[1] - r, 0) : centre[1] + r + 1] = 0
        corr = corr + mask
    peak = np.array(np.unravel_index(int(np.argmax(corr)), corr.shape))
    sub = []
    for axis in range(2):
        lo, hi = peak.copy(), peak.copy()
        lo[axis] -= 1
        hi[axis] += 1
        if lo[axis] < 0 or hi[axis] >= corr.shape[axis] or not np.isfinite(corr[tuple(lo)] + corr[tuple(hi)]):
            sub.append(0.0)
        else:
            sub.append(_parabola_peak(float(corr[tuple(lo)]), float(corr[tuple(peak)]), float(corr[tuple(hi)])))
    return (peak - centre).astype(float) + np.array(sub)


def _refine(stack: np.ndarray, shifts: np.ndarray, limit: float, passes: int = 3) -> np.ndarray:
    """Re-measure each inner projection against the mean of its two aligned neighbours.

    The mean of the views at θ − Δ and θ + Δ is closer to the view at θ than either (the
    motion of off-axis features cancels to first order), and each projection is measured
    against its own neighbours rather than through the whole chain, so the pairwise
    errors stop adding up along it.
    """
    shifts = shifts.copy()
    for _ in range(passes):
        aligned = apply_shifts(stack, shifts)
        for i in range(1, len(stack) - 1):
            target = 0.5 * (aligned[i - 1] + aligned[i + 1])
            shifts[i] += relative_shift(target, aligned[i], max_shift=limit)
    return shifts


def _rigid_design(angles: np.ndarray) -> np.ndarray:
    """Columns ``1, cos θ, −sin θ``: the axis position and a translation ``(y, z)`` of the specimen."""
    t = np.radians(angles)
    return np.stack([np.ones_like(t), np.cos(t), -np.sin(t)], axis=1)


def _axis_fit(angles: np.ndarray, com_det: np.ndarray) -> float:
    """The axis position ``c`` of ``m(θ) = c + y cos θ − z sin θ`` (least squares)."""
    design = _rigid_design(angles)
    if np.linalg.matrix_rank(design) < 3:
        raise InputError('cannot find the tilt axis from fewer than three distinct tilts; use align.method = "com"')
    coef, *_ = np.linalg.lstsq(design, com_det, rcond=None)
    return float(coef[0])


def without_translation(angles: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, float]:
    """``shifts`` less the translation of the specimen they hold (module docstring), and the axis ``c``.

    Across the axis the ``y cos θ − z sin θ`` part of a least-squares fit of
    ``c + y cos θ − z sin θ`` is removed (``c`` stays: it is where the axis is); along the
    axis the mean. With fewer than three distinct tilts only the mean across is kept as ``c``.
    """
    shifts = np.array(shifts, dtype=float)
    design = _rigid_design(angles)
    if angles.size >= 3 and np.linalg.matrix_rank(design) == 3:
        coef, *_ = np.linalg.lstsq(design, shifts[:, 0], rcond=None)
        shifts[:, 0] -= design[:, 1:] @ coef[1:]
        offset = float(coef[0])
    else:
        offset = float(shifts[:, 0].mean())
    shifts[:, 1] -= shifts[:, 1].mean()
    return shifts, offset


def _xcorr_chain(stack: np.ndarray, angles: np.ndarray, limit: float) -> np.ndarray:
    n = angles.size
    shifts = np.zeros((n, 2))
    ref = int(np.argmin(np.abs(angles)))
    for i in range(ref + 1, n):
        shifts[i] = shifts[i - 1] + relative_shift(stack[i - 1], stack[i], max_shift=limit)
    for i in range(ref - 1, -1, -1):
        shifts[i] = shifts[i + 1] + relative_shift(stack[i + 1], stack[i], max_shift=limit)
    return _refine(stack, shifts, limit)


def projection_matching(
    stack: np.ndarray,
    angles: np.ndarray,
    shifts: np.ndarray,
    *,
    rounds: int = 4,
    sirt_iter: int = 30,
    limit: float = 3.0,
) -> np.ndarray:
    """Refine ``shifts`` by registering each projection to the reprojection of a SIRT reconstruction.

    Every round reconstructs the series aligned by the current shifts (non-negative SIRT,
    Yuan 2021 §2.1, with this project's projector), reprojects it at the series' own tilts,
    measures each aligned projection's shift against its reprojection
    (:func:`relative_shift`, at most ``limit`` px) and adds it. The reconstruction is
    consistent with all tilts at once, so unlike a neighbour it holds no drift of its own;
    the specimen's translation is removed after every round (:func:`without_translation`).
    """
    projector = Projector(stack.shape[1], angles)
    shifts = np.array(shifts, dtype=float)
    for _ in range(rounds):
        aligned = apply_shifts(stack, shifts)
        volume = sirt(projector, aligned.astype(np.float32), n_iter=sirt_iter).volume
        reprojected = np.asarray(projector.forward(volume), dtype=float)
        step = np.array([relative_shift(r, a, max_shift=limit) for r, a in zip(reprojected, aligned, strict=True)])
        shifts, _ = without_translation(angles, shifts + step)
        if np.abs(step).max(initial=0.0) < 0.02:
            break
    return shifts


def align_series(
    haadf: np.ndarray,
    angles: np.ndarray,
    *,
    method: str = "projmatch",
    max_shift: float | None = None,
    rounds: int = 4,
) -> Alignment:
    """Align a HAADF series ``(n, n_det, n_x)`` whose vacuum level is 0 (module docstring).

    Parameters
    ----------
    haadf : ndarray
        The series, sorted by angle or not.
    angles : ndarray
        Tilts in degrees.
    method : {"projmatch", "xcorr", "com", "none"}
    max_shift : float, optional
        Largest shift between successive projections searched by ``xcorr``, pixels
        (default: a quarter of the projection).
    rounds : int
        Projection-matching rounds (``projmatch``).

    Returns
    -------
    Alignment
        In angle order; shifts without a net translation of the specimen (module docstring).
    """
    if method not in METHODS:
        raise InputError(f"align.method must be one of {METHODS}, got {method!r}")
    haadf = np.asarray(haadf, dtype=float)
    angles = np.asarray(angles, dtype=float)
    if haadf.ndim != 3 or haadf.shape[0] != angles.size:
        raise InputError(
            f"align: need (n_tilts, n_det, n_x) images and one angle each; got {haadf.shape}, {angles.size}"
        )
    order = np.argsort(angles)
    stack, angles = haadf[order], angles[order]
    com = _centre_of_mass(stack)
    n = angles.size
    shifts = np.zeros((n, 2))
    offset = 0.0
    if method == "com":
        shifts, offset = without_translation(angles, com)
    elif method in ("xcorr", "projmatch"):
        limit = max_shift if max_shift is not None else min(stack.shape[1:]) / 4
        shifts = _xcorr_chain(stack, angles, limit)
        # the chain knows shifts up to a constant across the axis; the mass centres fix it
        shifts[:, 0] += _axis_fit(angles, com[:, 0] - shifts[:, 0]) if n >= 3 else np.mean(com[:, 0] - shifts[:, 0])
        shifts, offset = without_translation(angles, shifts)
        if method == "projmatch" and n >= 3:
            shifts = projection_matching(stack, angles, shifts, rounds=rounds, limit=min(limit, 3.0))
            shifts, offset = without_translation(angles, shifts)
    aligned_com = com[:, 0] - shifts[:, 0]  # reported in angle order
    log.info(
        "aligned %d projections (%s): shifts up to %.2f px across and %.2f px along the axis, axis at %+.2f px",
        n,
        method,
        float(np.abs(shifts[:, 0]).max(initial=0.0)),
        float(np.abs(shifts[:, 1]).max(initial=0.0)),
        offset,
    )
    return Alignment(
        angles=angles,
        shifts=shifts,
        tilt_axis_offset=offset,
        method=method,
        com_before=com[:, 0],
        com_after=aligned_com,
    )


def apply_shifts(stack: np.ndarray, shifts: np.ndarray, *, nonnegative: bool = True) -> np.ndarray:
    """Move each projection by ``−shifts[i]``: a Fourier (sinc) shift on edge-padded images.

    Projections recorded without a wide probe are sharp to the pixel, and any local
    interpolation (bilinear, cubic spline) then blurs them: on the simulated nanocubes a
    bilinear shift and its inverse leave 28 % of the HAADF signal behind, a cubic spline 17 %.
    A Fourier shift is exact for a band-limited image and undoes itself; the padding (edge
    values, as wide as the largest shift) keeps the image from wrapping around. Its ringing can
    dip below zero; counts are clipped at 0 (``nonnegative``).
    """
    from scipy.ndimage import fourier_shift

    stack = np.asarray(stack, dtype=float)
    shifts = np.asarray(shifts, dtype=float)
    pad = int(np.ceil(np.abs(shifts).max(initial=0.0))) + 2
    out = np.empty_like(stack)
    for i, (img, s) in enumerate(zip(stack, shifts, strict=True)):
        padded = np.pad(img, pad, mode="edge")
        moved = np.fft.ifft2(fourier_shift(np.fft.fft2(padded), -s)).real
        out[i] = moved[pad:-pad, pad:-pad]
    return np.maximum(out, 0.0) if nonnegative else out


def alignment_figure(alignment: Alignment) -> Any:
    """Shifts against tilt, and the centre of mass across the axis before and after."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(alignment.angles, alignment.shifts[:, 0], "o-", ms=3, label="across the axis (det)")
    ax1.plot(alignment.angles, alignment.shifts[:, 1], "s-", ms=3, label="along the axis (x)")
    ax1.set_xlabel("tilt (°)")
    ax1.set_ylabel("shift (px)")
    ax1.set_title(f"shifts ({alignment.method})")
    ax1.legend(fontsize=8)
    ax2.plot(alignment.angles, alignment.com_before, "o", ms=3, label="before")
    ax2.plot(alignment.angles, alignment.com_after, "o", ms=3, label="after")
    ax2.axhline(0, color="0.6", lw=0.8)
    ax2.set_xlabel("tilt (°)")
    ax2.set_ylabel("centre of mass across the axis (px)")
    ax2.set_title(f"tilt axis found {alignment.tilt_axis_offset:+.2f} px from the centre")
    ax2.legend(fontsize=8)
    return fig
