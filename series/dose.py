r"""Per-tilt dose of a measured series, measured from its HAADF projections.

A parallel projection conserves mass: every slice of the specimen across the tilt axis
(one column ``x`` of a projection in tomosweep's layout) only turns with the tilt, so the
HAADF signal it projects, :math:`T_\theta(x) = \sum_{\rm det} b_\theta({\rm det}, x)` after
the vacuum level, is the same at every tilt — as long as the slice stays inside the field
of view. A beam current that drifts, or an exposure that changes, scales a whole
projection; the series' total over the slices that stay inside then measures each tilt's
relative dose,

.. math::
    d_\theta = \frac{\sum_{x \in X} T_\theta(x)}{\operatorname{median}_{\theta'} \sum_{x \in X} T_{\theta'}(x)},

and each HAADF projection is divided by :math:`d_\theta` (the median tilt keeps its scale,
so a calibrated ``[haadf] scale`` keeps its meaning). The chemical maps recorded at the same
tilts (the same scan, so the same beam) are divided by the same factor; at a chemical tilt
without a HAADF projection the factor is interpolated linearly in angle. Dividing counts by
a factor of 0.9-1.1 leaves them nearly Poisson; their flat background ε stays one number
per element, the series' mean.

**Slices that leave the field of view.** A specimen longer than the detector across the
axis (a film, a needle lying across it, a neighbour drifting in) loses mass over the
detector's edge at high tilt, and its total falls for a reason other than the dose. The
edge rows of each column (the outer detector rows on either side, parallel to the tilt
axis) tell: a column whose edge holds signal at any tilt (above the vacuum's spread there
and above 0.5 % of that projection's peak) is left out of :math:`X`, and so are the columns an
along-axis shift could move across the image's own edge. What is done is reported:

* some columns reach the edge: the dose is measured on the others, with a note;
* fewer than :data:`MIN_INSIDE` of the columns stay inside (nothing in the field of view is
  whole at every tilt): the correction is off (constant dose), with a note saying why;
* the totals are too noisy to measure a dose to 0.5 %: off, with a note.

``[haadf] dose = "constant"`` turns the correction off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: the share of columns (slices along the tilt axis) that must stay inside the field of view
MIN_INSIDE = 0.1
#: a column's edge holds signal above this share of the column's peak
EDGE_SHARE = 0.005
#: and above this many robust standard deviations of the edge values over the series
EDGE_Z = 6.0
#: the largest relative standard error of a tilt's total that still measures a dose
MAX_TOTAL_ERROR = 0.005
#: tilts this close (degrees) share a dose; farther chemical tilts are interpolated
SAME_TILT = 0.05


@dataclass(frozen=True)
class DoseEstimate:
    """Relative dose per tilt and what it was measured on (module docstring).

    Attributes
    ----------
    mode : str
        ``"auto"`` (measured) or ``"constant"`` (the data file turned it off).
    applied : bool
        Whether the series was divided by the factors.
    angles : ndarray (n,)
        HAADF tilts, degrees.
    factors : ndarray (n,)
        Relative dose per HAADF tilt (median 1; all 1 when not applied).
    chem_factors : ndarray (n_chem,)
        The factor applied at each chemical tilt.
    columns_used : int
        Columns (slices along the tilt axis) the totals were summed over.
    columns : int
        Columns of a projection.
    notes : tuple of str
        What the user should know (columns left out, correction off and why).
    """

    mode: str
    applied: bool
    angles: np.ndarray
    factors: np.ndarray
    chem_factors: np.ndarray
    columns_used: int = 0
    columns: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """The estimate as plain JSON values (for ``reconstruction.json``)."""
        return {
            "mode": self.mode,
            "applied": self.applied,
            "haadf_angles": [float(a) for a in self.angles],
            "haadf_dose": [float(f) for f in self.factors],
            "chem_dose": [float(f) for f in self.chem_factors],
            "columns_used": int(self.columns_used),
            "columns": int(self.columns),
            "what": "relative dose per tilt (median 1), from the HAADF totals of the slices inside the field of view; "
            "each projection and the chemical maps at its tilt were divided by it",
            "notes": list(self.notes),
        }


def _edge_signal(stack: np.ndarray, rows: int) -> tuple[np.ndarray, float]:
    """Mean of the outer ``rows`` detector rows per tilt, side and column ``(n, 2, n_x)``; their robust spread."""
    edges = np.stack([stack[:, :rows].mean(axis=1), stack[:, -rows:].mean(axis=1)], axis=1)
    spread = 1.4826 * float(np.median(np.abs(edges - np.median(edges))))
    return edges, spread


def inside_columns(stack: np.ndarray, *, margin: int = 0) -> np.ndarray:
    """Columns whose slice stays inside the field of view at every tilt (module docstring).

    Parameters
    ----------
    stack : ndarray
        HAADF series ``(n, n_det, n_x)`` less its vacuum level, tilt axis along x.
    margin : int
        Columns left out at each end of x (an along-axis shift moves slices across them).

    Returns
    -------
    ndarray of bool (n_x,)
    """
    n, n_det, n_x = stack.shape
    rows = max(1, int(round(0.03 * n_det)))
    edges, spread = _edge_signal(stack, rows)
    baseline = float(np.median(edges))
    # relative to the projection's peak, not the column's: a column with little mass loses little over the edge
    peak = stack.max(axis=(1, 2))
    signal = (edges - baseline > EDGE_Z * spread) & (edges - baseline > EDGE_SHARE * peak[:, None, None])
    inside = ~signal.any(axis=(0, 1))
    if margin > 0:
        inside[:margin] = False
        inside[n_x - margin :] = False
    return inside


def _at(angles: np.ndarray, factors: np.ndarray, chem_angles: np.ndarray) -> tuple[np.ndarray, int]:
    """The factors at the chemical tilts: the same tilt's, else linear in angle; how many were interpolated."""
    out = np.empty(chem_angles.size)
    interpolated = 0
    for i, a in enumerate(chem_angles):
        j = int(np.argmin(np.abs(angles - a)))
        if abs(angles[j] - a) <= SAME_TILT:
            out[i] = factors[j]
        else:
            out[i] = np.interp(a, angles, factors)
            interpolated += 1
    return out, interpolated


def estimate_dose(
    haadf: np.ndarray, angles: np.ndarray, chem_angles: np.ndarray | None = None, *, margin: int = 0
) -> DoseEstimate:
    """The relative dose of each tilt of an aligned HAADF series ``(n, n_det, n_x)`` (module docstring).

    Parameters
    ----------
    haadf : ndarray
        The series less its vacuum level, aligned, sorted by angle.
    angles : ndarray
        Its tilts in degrees.
    chem_angles : ndarray, optional
        Tilts of the chemical maps that follow the HAADF's dose.
    margin : int
        Columns left out at each end of x (the largest along-axis shift, rounded up).

    Returns
    -------
    DoseEstimate
        ``applied`` False, with a note, when no dose can be measured.
    """
    haadf = np.asarray(haadf, dtype=float)
    angles = np.asarray(angles, dtype=float)
    chem_angles = np.zeros(0) if chem_angles is None else np.asarray(chem_angles, dtype=float)
    n, n_det, n_x = haadf.shape
    ones = DoseEstimate("auto", False, angles, np.ones(n), np.ones(chem_angles.size), 0, n_x)
    inside = inside_columns(haadf, margin=margin)
    used = int(inside.sum())
    if used < max(1, int(np.ceil(MIN_INSIDE * n_x))):
        note = (
            f"dose: the specimen reaches the detector edge across the tilt axis in {n_x - used} of {n_x} slices "
            "at some tilt (a film, or a specimen larger than the field of view): its projected mass is not the "
            "same at every tilt, so no dose can be measured from it; the dose is taken as constant"
        )
        return replace(ones, columns_used=used, notes=(note,))
    totals = haadf[:, :, inside].sum(axis=(1, 2))
    median = float(np.median(totals))
    # Poisson-like noise of a total, from the spread of neighbouring pixels along each row
    noise = float(np.median(np.abs(np.diff(haadf[:, :, inside], axis=2)))) * 1.4826 / np.sqrt(2)
    error = noise * np.sqrt(n_det * used) / median if median > 0 else np.inf
    if not error <= MAX_TOTAL_ERROR:
        note = (
            f"dose: the HAADF totals are too noisy to measure a dose (relative error {error:.2g} per tilt, more "
            f"than {MAX_TOTAL_ERROR:.1%}); the dose is taken as constant"
        )
        return replace(ones, columns_used=used, notes=(note,))
    factors = totals / median
    chem_factors, interpolated = _at(angles, factors, chem_angles)
    notes = []
    if used < n_x:
        notes.append(
            f"dose: measured on {used} of {n_x} slices along the tilt axis; the others reach the detector edge at "
            "some tilt or lie within reach of an along-axis shift of the image's edge"
        )
    if interpolated:
        notes.append(f"dose: {interpolated} chemical tilt(s) have no HAADF projection at their angle: interpolated")
    spread = float(factors.max() - factors.min())
    log.info(
        "dose per tilt from the HAADF totals: %.3f … %.3f (%d of %d slices)", factors.min(), factors.max(), used, n_x
    )
    if spread > 0.5:
        notes.append(
            f"dose: the HAADF totals vary by {spread:.0%} between tilts; check the series for blank or saturated images"
        )
    return DoseEstimate("auto", True, angles, factors, chem_factors, used, n_x, tuple(notes))


def correct_dose(series: Any, *, margin: int = 0) -> tuple[Any, DoseEstimate | None]:
    """A :class:`~tomosweep.series.MeasuredSeries` divided by its per-tilt dose, and the estimate.

    The series' HAADF must be aligned already (columns are slices); its chemical maps, in any
    frame, are divided by the factor of their tilt. ``series.dose == "constant"`` or a series
    without HAADF returns the series unchanged (and None without HAADF).

    Parameters
    ----------
    series : MeasuredSeries
    margin : int
        Columns left out at each end of x (:func:`estimate_dose`).
    """
    if series.haadf is None:
        return series, None
    if getattr(series, "dose", "auto") == "constant":
        n = series.n_haadf
        estimate = DoseEstimate("constant", False, series.haadf_angles, np.ones(n), np.ones(series.n_chem))
        return series, estimate
    estimate = estimate_dose(series.haadf, series.haadf_angles, series.chem_angles, margin=margin)
    if not estimate.applied:
        return series, estimate
    haadf = series.haadf / estimate.factors[:, None, None]
    chem = series.chem / estimate.chem_factors[None, :, None, None] if series.elements else series.chem
    return replace(series, haadf=haadf, chem=chem), estimate
