r"""Weight-fraction maps from reconstructed element maps (Yuan 2021 §2.1–2.2).

A reconstructed element map is, voxel by voxel, a known factor times the element's
partial density: :math:`X_{A,j} = n f_A C_{A,j}\rho_j` for EDS-SIRT (eq. 10–11) and
:math:`X^b_{A,j} \propto z_A C_{A,j}\rho_j` for HEBT (eq. 17). Because the weight
fractions of a voxel sum to one, dividing by the factor and normalising removes both
the unknown constant and the density (eq. 12 and 18):

.. math:: C_{A,j} = \frac{X_{A,j}/f_A}{\sum_{B=1}^k X_{B,j}/f_B}.

That normalisation turns any faint background voxel into a full-strength
composition, so voxels whose total :math:`\sum_B X_{B,j}/f_B` is below a threshold
are treated as outside the particle; Yuan 2021 picks the threshold by an
edge-spread-function fit to the particle volume (:func:`esf_threshold`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special

from tomosweep.errors import InputError
from tomosweep.solvers import backend, validation

_OTSU_BINS = 256


@dataclass(frozen=True)
class EsfThreshold:
    """Outcome of :func:`esf_threshold`.

    Attributes
    ----------
    threshold : float
        The particle/background threshold on the total map.
    converged : bool
        True when the ESF fit succeeded and gave a usable edge; False when the
        fallback (Otsu's threshold) was returned instead.
    method : str
        ``"esf"`` or ``"otsu"`` (the fallback).
    background_level, particle_level : float or None
        The fitted plateaus (map units) the threshold lies half-way between.
    edge_volume : float or None
        Particle volume (voxels) at the fitted edge, the ESF's centre.
    edge_width : float or None
        Width σ of the fitted ESF, in voxels of volume.
    message : str
        Why the fallback was used; empty when the fit converged.
    """

    threshold: float
    converged: bool
    method: str
    background_level: float | None = None
    particle_level: float | None = None
    edge_volume: float | None = None
    edge_width: float | None = None
    message: str = ""


@dataclass(frozen=True)
class Quantification:
    """Outcome of :func:`quantify`.

    Attributes
    ----------
    weight_fractions : array, shape (n_elements, ...)
        :math:`C_A` per voxel, summing to 1 inside the particle and 0 outside.
    threshold : float or None
        Threshold applied to :math:`\\sum_A X_A/f_A` (None: only empty voxels removed).
    esf : EsfThreshold or None
        The ESF fit, when ``threshold="esf"``.
    """

    weight_fractions: Any
    threshold: float | None
    esf: EsfThreshold | None = None


def _check_maps_factors(maps: Any, factors: Any) -> tuple[Any, Any, Any]:
    xp = backend.get_array_module(maps)
    maps = validation.finite_array(maps, "maps")
    if maps.ndim < 2:
        raise InputError(f"maps must have shape (n_elements, ...) with one map per element; got {tuple(maps.shape)}")
    try:
        f = np.asarray(backend.to_numpy(factors), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"factors must be a sequence of numbers, got {factors!r}") from None
    if f.ndim != 1 or f.size != maps.shape[0]:
        raise InputError(
            f"factors must hold one number per element map: maps has {maps.shape[0]} "
            f"element(s) but factors has shape {f.shape}"
        )
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise InputError(f"factors (f_A or z_A) must be finite and > 0, got {f.tolist()}")
    return xp, maps, f


def _scaled_maps(xp: Any, maps: Any, f: np.ndarray) -> tuple[Any, Any]:
    dtype = np.float64 if maps.dtype == np.float64 else np.float32
    # A weight fraction cannot be negative; negative voxels (SIRT without the
    # non-negativity clip) carry no element, so they count as zero.
    scaled = xp.maximum(backend.asarray(maps, xp, dtype), 0)
    inv = backend.asarray(1.0 / f, xp, dtype).reshape((-1,) + (1,) * (maps.ndim - 1))
    scaled = scaled * inv
    return scaled, scaled.sum(axis=0)


def weight_fractions(maps: Any, factors: Any, *, threshold: float | None = None) -> Any:
    r"""Weight fraction of every element in every voxel (Yuan 2021 eq. 12 and 18).

    .. math::

        C_{A,j} = \frac{X_{A,j}/f_A}{\sum_{B} X_{B,j}/f_B}
        \quad\text{if}\quad \sum_B X_{B,j}/f_B > t, \qquad C_{A,j} = 0 \text{ otherwise.}

    The same formula serves EDS-SIRT maps :math:`X_A` with factors :math:`f_A`
    (eq. 12, :func:`~tomosweep.solvers.physics.f_factor`) and HEBT maps
    :math:`X^b_A` with factors :math:`z_A` (eq. 18,
    :func:`~tomosweep.solvers.physics.z_factor`). Any common scale of the factors
    cancels.

    Parameters
    ----------
    maps : array, shape (n_elements, ...)
        One reconstructed map per element (any spatial shape), NumPy or CuPy.
        Negative values are treated as zero.
    factors : sequence of float, length n_elements
        :math:`f_A` or :math:`z_A`, positive.
    threshold : float, optional
        Voxels whose total :math:`\sum_B X_B/f_B` is at or below ``threshold`` lie
        outside the particle and get 0 for every element (Yuan 2021 §2.1, last
        paragraph). By default only voxels with a zero total are outside.

    Returns
    -------
    array, shape of ``maps``
        :math:`C_A` on the maps' device; sums to 1 inside the particle, 0 outside.
    """
    xp, maps, f = _check_maps_factors(maps, factors)
    t = 0.0 if threshold is None else validation.positive_float(threshold, "threshold", allow_zero=True)
    scaled, total = _scaled_maps(xp, maps, f)
    inside = total > t
    safe_total = xp.where(inside, total, 1)
    return xp.where(inside[None], scaled / safe_total[None], 0)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold: the histogram split with the largest between-class variance."""
    hist, edges = np.histogram(values, bins=_OTSU_BINS)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(hist * centres)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _esf(volume: np.ndarray, background: float, step: float, centre: float, width: float) -> np.ndarray:
    return background + step * 0.5 * scipy.special.erfc((volume - centre) / (math.sqrt(2) * width))


def esf_threshold(total_map: Any, *, n_thresholds: int = 100) -> EsfThreshold:
    r"""Particle threshold by edge-spread-function fitting (Yuan 2021 §2.1).

    Yuan 2021 (after Collins 2019): "The approach calculates the particle volume for a
    series of threshold values, and the variation of the threshold relative to the
    particle volume can be fitted using the ESF. Therefore, the smallest gradient of
    the particle volume over the threshold corresponds to the most appropriate
    threshold value."

    Interpretation implemented here. For thresholds :math:`t_i` evenly spaced over
    the map's range, the particle volume is :math:`V_i = \#\{j : x_j > t_i\}`. Read
    the other way round, the threshold as a function of the volume, :math:`t(V)`, is
    the map's values sorted in decreasing order: a high plateau (the particle
    interior), a fall through the blurred boundary voxels and a low plateau (the
    background) — the shape of an edge profile. It is fitted with an ESF,

    .. math::

        t(V) = c + \frac{a}{2}\,\operatorname{erfc}\!\Bigl(\frac{V - V_0}{\sqrt2\,s}\Bigr),

    (``scipy.optimize.curve_fit``; start from Otsu's split: :math:`c`, :math:`a+c`
    the class means, :math:`V_0` the voxels above it, :math:`s` the voxels between the
    quarter levels). :math:`|dV/dt| = 1/|dt/dV|` is smallest where the fitted
    :math:`t(V)` is steepest, at its inflection :math:`V = V_0`, so the threshold is

    .. math:: t^* = t(V_0) = c + a/2,

    half-way between the fitted background and particle levels: the 50 % point of the
    edge, where a symmetrically blurred boundary is cut at its true position.

    If the fit fails, or gives no edge inside the data (:math:`a \le 0`,
    :math:`V_0` outside the sampled volumes, :math:`t^*` outside the data range), the
    result falls back to Otsu's threshold, with ``converged=False``,
    ``method="otsu"`` and the reason in ``message``.

    Parameters
    ----------
    total_map : array
        The map to segment, e.g. :math:`\sum_A X_A/f_A` (any shape, NumPy or CuPy).
    n_thresholds : int
        Number of threshold values sampled (≥ 8).

    Returns
    -------
    EsfThreshold
    """
    n_thresholds = validation.positive_int(n_thresholds, "n_thresholds", minimum=8)
    values = np.asarray(backend.to_numpy(validation.finite_array(total_map, "total_map")), dtype=np.float64).ravel()
    if values.size < 2:
        raise InputError(f"total_map needs at least 2 voxels, got {values.size}")
    low, high = float(values.min()), float(values.max())
    if not high > low:
        raise InputError(f"total_map is constant ({low:g}); there is no particle/background contrast to threshold")
    span = high - low
    n_voxels = values.size
    ordered = np.sort(values)
    # Interior thresholds only: at the extremes the volume is trivially all or nothing.
    thresholds = np.linspace(low, high, n_thresholds + 2)[1:-1]
    volumes = n_voxels - np.searchsorted(ordered, thresholds, side="right")

    otsu = _otsu(values)
    below, above = values[values <= otsu], values[values > otsu]
    c0 = (float(below.mean()) - low) / span if below.size else 0.0
    a0 = max((float(above.mean()) - low) / span - c0, 1e-3) if above.size else 1.0
    v0 = above.size / n_voxels
    quarter, three_quarter = low + span * (c0 + 0.25 * a0), low + span * (c0 + 0.75 * a0)
    s0 = np.count_nonzero((values > quarter) & (values < three_quarter)) / n_voxels
    s0 = min(max(s0, 1.0 / n_voxels), 0.5)

    def fallback(reason: str) -> EsfThreshold:
        return EsfThreshold(threshold=otsu, converged=False, method="otsu", message=reason)

    x = volumes / n_voxels
    y = (thresholds - low) / span
    try:
        with warnings.catch_warnings():
            # A flat covariance is expected for near-ideal edges; only the optimum is used.
            warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
            params, _ = scipy.optimize.curve_fit(
                _esf,
                x,
                y,
                p0=(c0, a0, v0, s0),
                bounds=((-1.0, 0.0, 0.0, 0.1 / n_voxels), (1.0, 2.0, 1.0, 1.0)),
                maxfev=5000,
            )
    except (RuntimeError, ValueError) as exc:
        return fallback(f"ESF fit failed ({exc}); used Otsu's threshold")
    c, a, centre, width = (float(p) for p in params)
    if not all(map(math.isfinite, params)) or a <= 1e-6:
        return fallback("ESF fit found no edge (zero step); used Otsu's threshold")
    if not x.min() <= centre <= x.max():
        return fallback("fitted ESF centre lies outside the sampled volumes; used Otsu's threshold")
    threshold = low + span * (c + 0.5 * a)
    if not low < threshold < high:
        return fallback("fitted ESF midpoint lies outside the data range; used Otsu's threshold")
    return EsfThreshold(
        threshold=threshold,
        converged=True,
        method="esf",
        background_level=low + span * c,
        particle_level=low + span * (c + a),
        edge_volume=centre * n_voxels,
        edge_width=width * n_voxels,
    )


def quantify(maps: Any, factors: Any, *, threshold: str | float | None = "esf") -> Quantification:
    r"""Threshold and normalise element maps into weight fractions (Yuan 2021 eq. 12, 18).

    Parameters
    ----------
    maps : array, shape (n_elements, ...)
        EDS-SIRT maps :math:`X_A` or HEBT maps :math:`X^b_A`.
    factors : sequence of float
        :math:`f_A` (EDS, eq. 7) or :math:`z_A` (HEBT, eq. 14), one per map.
    threshold : "esf", float or None
        ``"esf"`` (default): :func:`esf_threshold` on :math:`\sum_A X_A/f_A`, as in
        Yuan 2021; a float: that threshold; None: keep every non-empty voxel.

    Returns
    -------
    Quantification
    """
    xp, maps, f = _check_maps_factors(maps, factors)
    esf = None
    if isinstance(threshold, str):
        if threshold != "esf":
            raise InputError(f"threshold must be 'esf', a number or None, got {threshold!r}")
        _, total = _scaled_maps(xp, maps, f)
        esf = esf_threshold(total)
        value: float | None = esf.threshold
    elif threshold is None:
        value = None
    else:
        value = validation.positive_float(threshold, "threshold", allow_zero=True)
    return Quantification(weight_fractions(maps, f, threshold=value), value, esf)
