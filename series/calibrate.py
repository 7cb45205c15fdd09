"""Calibration of a measured HAADF series: its vacuum level, only from pixels shown to be vacuum.

The HAADF model of Schwartz 2024 eq. 1, :math:`b_H = s\\,A_h\\sum_i (Z_i x_i)^\\gamma`, has
no offset: whatever the detector reads in vacuum must be subtracted first. Taking the
mean of the detector's border rows as that level (what tomosweep did before) subtracts
specimen signal whenever the specimen reaches the border at some tilt, as an elongated
or drifting specimen does at high tilt, and nothing warned.

Here a border strip (the outer ``fraction`` of detector rows on one side, across the
tilt axis) counts as vacuum at a tilt only if it is shown to be flat and low:

* **flat**: the means of its inner and outer half of rows differ by no more than 4
  standard errors of that difference (a specimen's tail rises towards the centre; a ramp
  across the detector falls on one side), and so do the means of its two halves along the
  tilt axis (a ramp along it has no vacuum either); the noise is estimated per pixel from
  differences of neighbours along each row (robust: the median absolute difference), so a
  structured border does not inflate it;
* **low**: its mean lies no more than 4 standard errors above the common level of all flat
  strips (the median of the lower half of their means: a faint tail only ever adds), or 4
  times the spread of those means (their median absolute deviation, scaled) where that is
  larger: a vacuum level may wander between exposures.

The level is the mean of every pixel of every strip that passes, across all tilts. A tilt
at which neither strip passes is named in a warning (its border holds signal); if no
strip passes anywhere, no pixel is provably vacuum and the level is 0, with a note.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VacuumLevel:
    """The vacuum level of a HAADF series and the pixels it came from.

    Attributes
    ----------
    level : float
        Counts per pixel to subtract (0 when no pixel is provably vacuum).
    rows : int
        Detector rows per border strip examined (each side).
    strips_used : int
        Border strips (tilt × side) shown to be vacuum; the level is their mean.
    pixels : int
        Pixels the level was averaged over.
    tilts_with_signal : tuple of float
        Tilts (degrees) at which neither border strip is vacuum.
    """

    level: float
    rows: int
    strips_used: int
    pixels: int
    tilts_with_signal: tuple[float, ...] = field(default_factory=tuple)
    n_tilts: int = 0

    @property
    def proven(self) -> bool:
        """Whether any border strip proved to be vacuum (else the level is a guess)."""
        return self.strips_used > 0

    def notes(self) -> list[str]:
        """Plain-words warnings for the terminal and ``reconstruction.json``."""
        out = []
        if not self.proven:
            out.append(
                "HAADF vacuum level: no vacuum: no detector border strip is flat and at a common level at any tilt "
                "(the specimen reaches the detector edge, or the border is a ramp), so none was subtracted "
                "(level 0); give [haadf] background = <counts> if the detector has an offset"
            )
        elif self.tilts_with_signal:
            tilts = ", ".join(f"{a:+.1f}°" for a in self.tilts_with_signal)
            out.append(
                f"HAADF vacuum level: the detector border holds specimen signal at {len(self.tilts_with_signal)} "
                f"of {self.n_tilts} tilts ({tilts}); the level came from the other tilts' border"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        """The level and where it came from, as plain JSON values (for ``reconstruction.json``)."""
        return {
            "level": float(self.level),
            "from": (
                f"{self.pixels} border pixels ({self.strips_used} strips of {self.rows} detector rows, "
                f"each shown flat and at the common level) over {self.n_tilts} tilts"
                if self.proven
                else "no vacuum: no border strip is flat at any tilt; level 0"
            ),
            "strips_used": int(self.strips_used),
            "pixels": int(self.pixels),
            "tilts_with_signal": [float(a) for a in self.tilts_with_signal],
        }


def _pixel_noise(strip: np.ndarray) -> float:
    """Per-pixel noise of a strip ``(rows, n_x)`` from neighbour differences along each row (MAD)."""
    diff = np.diff(strip, axis=1).ravel()
    if diff.size == 0:
        return 0.0
    mad = float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2))
    # sparse counts (a vacuum of mostly zeros) have a MAD of 0; their spread is still the noise
    return mad if mad > 0 else float(np.std(diff) / np.sqrt(2))


def vacuum_level(stack: np.ndarray, angles: np.ndarray | None = None, *, fraction: float = 0.1) -> VacuumLevel:
    """The vacuum level of a HAADF series ``(n, n_det, n_x)`` from provably vacuum border rows (module docstring).

    Parameters
    ----------
    stack : ndarray
        Images in tomosweep's layout (tilt axis along x; the border strips are detector rows).
    angles : ndarray, optional
        Tilts in degrees, to name the tilts whose border holds signal (indices otherwise).
    fraction : float
        Share of the detector rows examined on each side.
    """
    stack = np.asarray(stack, dtype=float)
    n, n_det, n_x = stack.shape
    angles = np.arange(n, dtype=float) if angles is None else np.asarray(angles, dtype=float)
    k = max(2, int(round(n_det * fraction)))
    strips, flat, means, errors = [], [], [], []
    for i in range(n):
        image = stack[i]
        top = image[:k]  # ordered from the detector edge inwards
        bottom = image[n_det - k :][::-1]
        for strip in (top, bottom):
            sigma = _pixel_noise(strip)
            half, side = k // 2, n_x // 2
            outer, inner = strip[:half].mean(), strip[k - half :].mean()
            left, right = strip[:, :side].mean(), strip[:, n_x - side :].mean()
            slack = 1e-12 * max(abs(outer), 1.0)
            across = abs(inner - outer) <= 4 * sigma * np.sqrt(2.0 / (half * n_x)) + slack
            along = abs(left - right) <= 4 * sigma * np.sqrt(2.0 / (side * k)) + slack
            strips.append((i, strip))
            flat.append(bool(across and along))
            means.append(float(strip.mean()))
            errors.append(sigma / np.sqrt(strip.size))
    flat_arr = np.asarray(flat)
    means_arr = np.asarray(means)
    vacuum = np.zeros(len(strips), dtype=bool)
    if flat_arr.any():
        # the floor: a specimen's faint tail only ever adds, so the lower half of the flat strips
        # sets the common level and the spread a vacuum level has between exposures
        flat_means = np.sort(means_arr[flat_arr])
        lower = flat_means[: max(1, (flat_means.size + 1) // 2)]
        common = float(np.median(lower))
        spread = 1.4826 * float(np.median(np.abs(lower - common)))
        tol = 4 * np.maximum(np.asarray(errors), spread) + 1e-9 * max(abs(common), 1.0)
        vacuum = flat_arr & (means_arr <= common + tol)
    tilt_has_vacuum = np.zeros(n, dtype=bool)
    for (i, _), ok in zip(strips, vacuum, strict=True):
        tilt_has_vacuum[i] |= bool(ok)
    if not vacuum.any():
        result = VacuumLevel(0.0, k, 0, 0, tuple(float(a) for a in angles), n)
    else:
        pixels = np.concatenate([s.ravel() for (_, s), ok in zip(strips, vacuum, strict=True) if ok])
        result = VacuumLevel(
            float(pixels.mean()),
            k,
            int(vacuum.sum()),
            int(pixels.size),
            tuple(float(a) for a in angles[~tilt_has_vacuum]),
            n,
        )
    for note in result.notes():
        log.warning(note)
    return result


#: how far (robust z-score) a tilt's total intensity may lie from the series' median before it is named
OUTLIER_Z = 6.0
#: and by what share of the median at least: totals drift by some per cent with the field of view
OUTLIER_SHARE = 0.25


def intensity_outliers(stack: np.ndarray, angles: np.ndarray) -> list[str]:
    """A warning for each tilt whose total intensity is an outlier of the series (empty if none).

    A HAADF projection integrates the same specimen at every tilt, so its total varies only
    a little across the series; one many times brighter or darker than the others (a
    saturated or mis-scaled frame, a blanked beam) would be fitted as if it were true. A
    tilt is named when its total lies more than ``OUTLIER_Z`` robust standard deviations
    (1.4826 × the median absolute deviation) and more than ``OUTLIER_SHARE`` of the median
    from the median of all tilts' totals.

    Parameters
    ----------
    stack : ndarray
        The HAADF series ``(n_tilts, n_det, n_x)``.
    angles : ndarray
        Its tilts in degrees.

    Returns
    -------
    list of str
        One plain-words warning per outlying tilt.
    """
    totals = np.asarray(stack, dtype=float).reshape(len(stack), -1).sum(axis=1)
    if totals.size < 3:
        return []
    median = float(np.median(totals))
    spread = 1.4826 * float(np.median(np.abs(totals - median)))
    notes = []
    for angle, total in zip(np.asarray(angles, dtype=float), totals, strict=True):
        off = abs(total - median)
        if off > OUTLIER_Z * spread and off > OUTLIER_SHARE * abs(median):
            z = f"{off / spread:.3g}" if spread > 0 else "∞"
            ratio = f"{total / median:.3g}×" if median > 0 else f"{total:.3g} against {median:.3g}"
            note = (
                f"HAADF tilt {angle:+.1f}°: its total intensity is {ratio} the series' median (robust z-score {z}); "
                "a saturated, mis-scaled or blank image? It is reconstructed as it is: check it, or leave it out"
            )
            log.warning(note)
            notes.append(note)
    return notes
