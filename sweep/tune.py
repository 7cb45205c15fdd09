r"""Tune the weights on the measured series itself: a loss that needs no ground truth.

A study searches the weights on a simulated twin of the specimen; ``tomosweep tune
DATA.toml --store T.zarr`` searches them on the data. It is a study with one cell — the
data's own acquisition — run by the same engine (:mod:`tomosweep.sweep.runner`, GP-Hedge,
the zarr store and its commit point, ``resume``, ``status``, ``view``, ``export``,
``check``); only the trial differs (:func:`run_tune_trial`) and what it returns is a
*loss*, not an NRMSE against a truth.

The loss, for a trial at weights :math:`w` (lower is better), averaged over ``K`` splits
``s`` with distinct seeds:

*Chemical term, by Poisson thinning* (data fission; Leiner et al. 2023, and the split
of Noise2Inverse, Hendriksen et al. 2020). Each recorded count :math:`n` of an element map
is split into :math:`n^{\rm fit}_s \sim \mathrm{Binomial}(n, p)` and
:math:`n^{\rm held}_s = n - n^{\rm fit}_s`: two *independent* Poisson series of the same
object, with means :math:`p\mu` and :math:`(1-p)\mu`. The method reconstructs
:math:`\hat x_s(w)` from the fit part (divided by :math:`p k_i`, so that the volumes keep
the units of a full-count reconstruction; :math:`k_i` the sensitivity, 1 where none is
given), and the held part scores it by the mean Poisson deviance per pixel

.. math::
    D_i(\hat x) = \frac{2}{N}\sum_j n^{\rm held}_{ij}\log\frac{n^{\rm held}_{ij}}{\mu_{ij}}
        - (n^{\rm held}_{ij} - \mu_{ij}),\qquad
    \mu_i = (1-p)\,k_i\,c_i\,\bigl(A_c \hat x_i + \varepsilon_i\bigr),

the prediction moved back to the frame the counts were recorded in (the alignment's
shifts undone), :math:`c_i` the scale that makes the model's total match the *fit* part's
counts (the NRMSE z-normalises each element; the loss is as blind to a map's overall
scale). Elements count alike: each :math:`D_i` is divided by the deviance of the
chemical-only ML-EM start of the same split, so the chemical term is
:math:`L_{\rm chem} = \frac1{n_{\rm el}}\sum_i D_i(\hat x)/D_i(x^0)` — below 1 where the
weights predict the held counts better than chemistry alone does.

*HAADF term, by held-out tilts*: every k-th interior HAADF tilt (``haadf_holdout``; the
held-out set turns with the split) is left out of the fit, and
:math:`L_{\rm haadf} = \lVert s A_h\sum_i (Z_i\hat x_i)^\gamma - b_H^{\rm held}\rVert /
\lVert b_H^{\rm held}\rVert` with :math:`s` by least squares. It is the loss of a
HAADF-only series (its "method" is SIRT on the HAADF, whose iterations are searched) and
is recorded beside the chemical term otherwise; ``[tune] loss`` chooses which one the
search minimises.

*The thinning fraction does not move the optimum, to first order.* The fit part has a
fraction p of the counts; written in full-count units its Poisson term curves as much as
the full data's, but carries p times the information. A weight that balances a prior (TV)
or another modality (the HAADF) against that term must then be 1/p times larger to give
the same posterior: :math:`\Psi^{\rm fit} = p\,\Psi_2 + \lambda_1\Psi_1 + \lambda_3
\mathrm{TV} \propto \Psi_2 + (\lambda_1/p)\Psi_1 + (\lambda_3/p)\mathrm{TV}` (MAP with the
same prior on the full and the thinned data; for a Gaussian prior the MSE-optimal weight
scales the same way). So a trial at weights :math:`w` fits the thinned part with the
weights of :data:`THINNED` divided by p, and the weights the tune finds are the ones for
the full series, which the final reconstruction (``reconstruct-data --weights T.zarr``)
uses with all the counts. ``benchmarks/self_tuning.py --fractions`` measures it.

Alignment and calibration run once per tune, on the driver (:func:`prepare`), and are
stored with the trials (:func:`write_prepared`); every trial carries the prepared series.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import InputError, SpecError
from tomosweep.results import OK, TrialRecord
from tomosweep.search.cell import derived_seed
from tomosweep.series import MeasuredSeries, apply_shifts, load_data_file, load_series
from tomosweep.series.dose import correct_dose
from tomosweep.series.transfer import alignment_of
from tomosweep.solvers import Projector
from tomosweep.solvers.backend import to_numpy
from tomosweep.solvers.elements import atomic_numbers
from tomosweep.sweep.methods import CellData, cell_start, check_result, lookup
from tomosweep.sweep.spec import SENSITIVITY_PREFIX, Study, study_from_dict
from tomosweep.sweep.trial import TrialTask, failed_record, finished_record, study_from_json, trial_base

DEFAULT_GAMMA = 1.7
DEFAULT_TRIALS = 24  # the budget for a tune: ≤ 24 trials
HAADF_ONLY = "HAADF"  # the one "element" of a HAADF-only tune: the HAADF volume Σ (Z x)^γ

#: weights that balance the chemical Poisson term, scaled by 1/p on the thinned part (module docstring)
THINNED: dict[str, tuple[str, ...]] = {"fused": ("lambda_haadf", "lambda_tv"), "poisson_ml_tv": ("lambda_tv",)}

OBJECTIVE = {
    "chem": (
        "held-out Poisson deviance of thinned chemical counts, relative to the chemical-only start's "
        "(mean over elements and splits; below 1: better than chemistry alone; no ground truth)"
    ),
    "haadf": "relative error of held-out HAADF tilts predicted from the rest (mean over splits; no ground truth)",
}


@dataclass(frozen=True)
class Prepared:
    """A measured series aligned and calibrated once for a tune; what every trial carries.

    ``chem`` holds the recorded counts in the frame they were recorded in (thinning needs
    whole counts, which a shift would not keep); ``chem_shifts`` are the alignment's shifts
    at the chemical tilts, applied to each fitted part. ``haadf`` is aligned, its vacuum
    level subtracted. ``digest`` identifies the arrays (a worker's cache key).
    """

    haadf: np.ndarray | None
    haadf_angles: np.ndarray
    chem: np.ndarray
    chem_angles: np.ndarray
    chem_shifts: np.ndarray
    elements: tuple[str, ...]
    background: tuple[float, ...]
    sensitivity: tuple[float, ...] | None
    haadf_scale: float | str
    gamma: float
    digest: str = ""

    @property
    def haadf_only(self) -> bool:
        """Whether the series has no chemical maps (the HAADF volume is reconstructed alone)."""
        return not self.elements

    @property
    def n_det(self) -> int:
        """Detector pixels across the tilt axis."""
        source = self.haadf if self.haadf is not None else self.chem[0]
        return int(source.shape[1])


_ARRAYS = ("haadf", "haadf_angles", "chem", "chem_angles", "chem_shifts")


def _digest(arrays: Mapping[str, np.ndarray | None], meta: Mapping[str, Any]) -> str:
    h = hashlib.sha256(repr(sorted(meta.items())).encode())
    for name in _ARRAYS:
        value = arrays.get(name)
        if value is not None:
            h.update(name.encode())
            h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()[:16]


def prepared_meta(prepared: Prepared) -> dict[str, Any]:
    """The prepared series' scalars as JSON (stored beside its arrays)."""
    return {
        "elements": list(prepared.elements),
        "background": list(prepared.background),
        "sensitivity": None if prepared.sensitivity is None else list(prepared.sensitivity),
        "haadf_scale": prepared.haadf_scale,
        "gamma": prepared.gamma,
        "digest": prepared.digest,
    }


def prepared_from(arrays: Mapping[str, np.ndarray | None], meta: Mapping[str, Any]) -> Prepared:
    """A :class:`Prepared` from its stored arrays and scalars; checked against its digest."""
    try:
        scale = meta["haadf_scale"]
        prepared = Prepared(
            haadf=None if arrays.get("haadf") is None else np.asarray(arrays["haadf"], dtype=np.float64),
            haadf_angles=np.asarray(arrays["haadf_angles"], dtype=float),
            chem=np.asarray(arrays["chem"], dtype=np.float64),
            chem_angles=np.asarray(arrays["chem_angles"], dtype=float),
            chem_shifts=np.asarray(arrays["chem_shifts"], dtype=float),
            elements=tuple(str(e) for e in meta["elements"]),
            background=tuple(float(v) for v in meta["background"]),
            sensitivity=None if meta["sensitivity"] is None else tuple(float(v) for v in meta["sensitivity"]),
            haadf_scale=scale if scale == "auto" else float(scale),
            gamma=float(meta["gamma"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"the stored prepared series is unreadable ({type(exc).__name__}: {exc})") from None
    digest = _digest({n: getattr(prepared, n) for n in _ARRAYS}, _digest_meta(prepared))
    if digest != meta.get("digest"):
        raise InputError("the stored prepared series does not match its digest (it was changed or damaged)")
    return Prepared(**{**prepared.__dict__, "digest": digest})


def _digest_meta(prepared: Prepared) -> dict[str, Any]:
    return {k: v for k, v in prepared_meta(prepared).items() if k != "digest"}


def prepare(series: MeasuredSeries, *, say: Callable[[str], None] | None = None) -> tuple[Prepared, dict[str, Any]]:
    """Align and calibrate a measured series once for a tune; the prepared series and a JSON report.

    The HAADF is aligned as ``reconstruct-data`` aligns it (``[align]``), the shifts carried
    to the chemical tilts; the chemical counts stay unshifted (see :class:`Prepared`).
    """
    if series.elements and series.chem_units != "counts":
        raise InputError(
            '[chem] units = "normalised": a tune splits each recorded count in two (Poisson thinning), '
            'which needs the raw counts; give the maps as counts (units = "counts")'
        )
    haadf = series.haadf
    report: dict[str, Any] = {"method": "none"}
    chem_shifts = np.zeros((series.n_chem, 2))
    alignment = alignment_of(series) if haadf is not None else None
    if alignment is not None and haadf is not None:
        haadf = apply_shifts(haadf, alignment.shifts)
        if series.elements:
            chem_shifts, _ = alignment.at(series.chem_angles)
        report = alignment.as_dict()
        if say is not None:
            say(
                f"aligned ({alignment.method}) once for the tune: largest shift "
                f"{float(np.abs(alignment.shifts).max()):.2f} px, tilt axis {alignment.tilt_axis_offset:+.2f} px"
            )
    # the per-tilt dose divided out as reconstruct-data does; the divided counts are rounded for thinning
    margin = 0 if alignment is None else int(np.ceil(np.abs(alignment.shifts[:, 1]).max(initial=0.0))) + 1
    series, dose = correct_dose(replace(series, haadf=haadf), margin=margin)
    haadf = series.haadf
    if dose is not None:
        report["dose"] = dose.as_dict()
    chem = np.rint(series.chem) if series.elements else np.zeros((0, 0, *series.shape))
    base = Prepared(
        haadf=haadf,
        haadf_angles=np.asarray(series.haadf_angles, dtype=float),
        chem=np.asarray(chem, dtype=np.float64),
        chem_angles=np.asarray(series.chem_angles, dtype=float),
        chem_shifts=np.asarray(chem_shifts, dtype=float),
        elements=tuple(series.elements),
        background=tuple(float(b) for b in series.chem_background),
        sensitivity=series.sensitivity,
        haadf_scale=series.haadf_scale,
        gamma=float(series.gamma if series.gamma is not None else DEFAULT_GAMMA),
    )
    digest = _digest({n: getattr(base, n) for n in _ARRAYS}, _digest_meta(base))
    return Prepared(**{**base.__dict__, "digest": digest}), report


def _default_methods(series: MeasuredSeries) -> dict[str, Any]:
    if not series.elements:
        return {"sirt": {}}
    if series.haadf is None:
        return {"poisson_ml_tv": {}}
    return {"fused": {}}


def tune_study(data: str | os.PathLike[str]) -> tuple[Study, MeasuredSeries]:
    """The tune a data file asks for, validated as a study file is, and its series (read and checked).

    Its ``[methods.<name>]`` tables (default ``[methods.fused]``, or ``[methods.sirt]`` for a
    HAADF-only series), ``[budget]`` (default 24 trials), ``[cluster]``, ``[plugins]`` and
    ``[tune]`` have a study file's syntax; the grid is the data's one cell.
    """
    path = Path(data)
    spec = load_data_file(path)
    series = load_series(path)
    methods = spec.methods if spec.methods else _default_methods(series)
    if not series.elements and set(methods) != {"sirt"}:
        raise SpecError(
            f"{path}: a HAADF-only series (no [chem]) is tuned with [methods.sirt] (its iterations) only; "
            f"got {', '.join(f'[methods.{m}]' for m in methods)}"
        )
    if series.haadf is None and (needing := sorted(set(methods) & {"fused", "hebt"})):
        raise SpecError(f"{path}: {', '.join(needing)} need(s) a HAADF series; the data file has no [haadf]")
    angles = np.concatenate([series.haadf_angles, series.chem_angles])
    tilt_range = (float(angles.min()), float(angles.max()))
    if tilt_range[0] == tilt_range[1]:
        tilt_range = (tilt_range[0] - 1.0, tilt_range[1] + 1.0)
    tune = {**(spec.tune or {}), "file": str(path.resolve()), "elements": list(series.elements)}
    if tune.get("sensitivity") == "search" and series.sensitivity is not None:
        raise SpecError(
            f'{path}: [tune] sensitivity = "search" searches the k-factors the data file does not give, but its '
            "[chem] sensitivity gives them: remove one of the two"
        )
    if "sensitivity" not in tune and _searches_sensitivity(series, methods):
        tune["sensitivity"] = "search"
    raw: dict[str, Any] = {
        "name": spec.name or path.stem,
        "data": tune,
        "acquisition": {
            "n_haadf": [series.n_haadf],
            "n_chem": [series.n_chem],
            "tilt_range": list(tilt_range),
            "gamma": float(series.gamma if series.gamma is not None else DEFAULT_GAMMA),
        },
        "methods": methods,
        # one cell: a GP of its own (the map's surrogate shares what cells learn, and there is one)
        "budget": {
            "surrogate": "cell",
            **(spec.budget if spec.budget is not None else {"trials_per_cell": DEFAULT_TRIALS}),
        },
    }
    for key in ("seed", "device", "cluster", "plugins"):
        value = getattr(spec, key)
        if value is not None:
            raw[key] = value
    study = study_from_dict(raw, source=f"{path} (tune)")
    assert study.data is not None  # built with data above
    if study.data.loss == "chem" and not series.elements:
        raise SpecError(f'{path}: [tune] loss = "chem" needs chemical maps; a HAADF-only series has loss "haadf"')
    if study.data.loss == "haadf" and (series.haadf is None or series.n_haadf < 6):
        raise SpecError(f'{path}: [tune] loss = "haadf" needs a HAADF series of 6 tilts or more')
    return study, series


def _searches_sensitivity(series: MeasuredSeries, methods: Mapping[str, Any]) -> bool:
    """Whether a tune searches the relative sensitivities by default: the data give none, there are two
    elements or more, and a method ties the maps to the HAADF, where unequal sensitivities distort the maps
    themselves (``benchmarks/self_tuning.py``: the held-out chemical loss is lowest near the true ones)."""
    return series.sensitivity is None and len(series.elements) >= 2 and bool(set(methods) & {"fused", "hebt"})


def with_sensitivity(prepared: Prepared, params: Mapping[str, float]) -> tuple[Prepared, dict[str, float]]:
    """``prepared`` with the relative sensitivities a point names (``sensitivity_<element>``, the first
    element's 1), and the point's other parameters (the method's)."""
    rest = {k: float(v) for k, v in params.items() if not k.startswith(SENSITIVITY_PREFIX)}
    named = {k[len(SENSITIVITY_PREFIX) :]: float(v) for k, v in params.items() if k.startswith(SENSITIVITY_PREFIX)}
    if not named:
        return prepared, rest
    unknown = sorted(set(named) - set(prepared.elements[1:]))
    if unknown:
        raise InputError(f"sensitivity of {', '.join(unknown)}: not an element of the data after the first")
    k = tuple(1.0 if i == 0 else named.get(e, 1.0) for i, e in enumerate(prepared.elements))
    tag = hashlib.sha256(repr(k).encode()).hexdigest()[:12]
    return Prepared(**{**prepared.__dict__, "sensitivity": k, "digest": f"{prepared.digest}/k{tag}"}), rest


def loss_of(study: Study, prepared: Prepared) -> str:
    """Which held-out term a tune minimises: ``[tune] loss``, else chem where there are maps."""
    assert study.data is not None
    if study.data.loss is not None:
        return study.data.loss
    return "haadf" if prepared.haadf_only else "chem"


# the data file's tables that say what a tune searches, not what the series are
_SEARCH_TABLES = ("name", "seed", "device", "methods", "budget", "tune", "cluster", "plugins", "weights")


def series_digest(data: str | os.PathLike[str]) -> str:
    """SHA-256 of what a data file says about its series (every table but the search's, canonical JSON)."""
    spec = load_data_file(data)
    body = spec.model_dump(mode="json", exclude=set(_SEARCH_TABLES))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def tune_objective(study: Study, elements: tuple[str, ...]) -> str:
    """What a tune's stored values are: the loss it minimises, in words (for ``status`` and exports)."""
    assert study.data is not None
    which = study.data.loss or ("haadf" if elements == (HAADF_ONLY,) else "chem")
    return f"{which}: {OBJECTIVE[which]}"


def tune_elements(study: Study) -> tuple[str, ...]:
    """The elements a tune's store records: the data file's, or the HAADF volume alone."""
    assert study.data is not None
    spec = load_data_file(study.data.file)
    return tuple(spec.chem.elements) if spec.chem is not None else (HAADF_ONLY,)


# --------------------------------------------------------------------------- the trial


def heldout_tilts(n: int, fraction: float, turn: int = 0) -> np.ndarray:
    """Every k-th interior tilt (``k ≈ 1/fraction``), the set turned by ``turn`` positions."""
    k = max(2, int(round(1 / fraction)))
    idx = np.arange(k // 2 + turn % k, n - 1, k)
    return idx[(idx > 0) & (idx < n - 1)]


@dataclass(frozen=True)
class _Split:
    """One split of the data: the cell the method is fitted on and what it is scored against."""

    cell: CellData
    held_counts: np.ndarray | None  # (n_el, n_chem, n_det, n_x), the recorded frame
    fit_totals: np.ndarray | None  # (n_el,) the fit part's counts, full-count units
    left_out: np.ndarray  # HAADF tilts held out
    reference: dict[str, float]  # chemical deviance of the ML-EM start, per element (filled on first use)


_SPLITS: OrderedDict[tuple[Any, ...], _Split] = OrderedDict()
_SPLIT_CACHE = 8


def _split(prepared: Prepared, study: Study, s: int) -> _Split:
    assert study.data is not None
    key = (prepared.digest, study.seed, study.data.fraction, study.data.haadf_holdout, s)
    if key in _SPLITS:
        _SPLITS.move_to_end(key)
        return _SPLITS[key]
    made = _make_split(prepared, study.data.fraction, study.data.haadf_holdout, s, study.seed)
    _SPLITS[key] = made
    while len(_SPLITS) > _SPLIT_CACHE:
        _SPLITS.popitem(last=False)
    return made


def _make_split(prepared: Prepared, p: float, holdout: float, s: int, seed: int) -> _Split:
    n_det = prepared.n_det
    if prepared.haadf is not None and len(prepared.haadf) >= 6:
        left_out = heldout_tilts(len(prepared.haadf), holdout, s)
    else:
        left_out = np.zeros(0, dtype=int)
    if prepared.haadf_only:
        assert prepared.haadf is not None
        keep = np.setdiff1d(np.arange(len(prepared.haadf)), left_out)
        cell = CellData(
            elements=(HAADF_ONLY,),
            truth=None,
            haadf_projector=None,
            chem_projector=Projector(n_det, prepared.haadf_angles[keep]),
            haadf=None,
            chem=prepared.haadf[keep][None],
            eps=np.zeros(1),
            gamma=1.0,
        )
        return _Split(cell, None, None, left_out, {})
    rng = np.random.default_rng(derived_seed(seed, "tune-split", s))
    counts = np.maximum(prepared.chem, 0).astype(np.int64)
    fit = rng.binomial(counts, p)
    held = (counts - fit).astype(np.float64)
    k = np.ones(len(prepared.elements)) if prepared.sensitivity is None else np.asarray(prepared.sensitivity, float)
    moved = np.stack([apply_shifts(f, prepared.chem_shifts) for f in fit.astype(np.float64)])
    haadf, haadf_op, haadf_at_chem = None, None, None
    if prepared.haadf is not None:
        keep = np.setdiff1d(np.arange(len(prepared.haadf)), left_out)
        haadf = prepared.haadf[keep]
        haadf_op = Projector(n_det, prepared.haadf_angles[keep])
        idx = [int(np.argmin(np.abs(prepared.haadf_angles - a))) for a in prepared.chem_angles]
        if np.allclose(prepared.haadf_angles[idx], prepared.chem_angles, atol=0.05):
            haadf_at_chem = prepared.haadf[idx]
    cell = CellData(
        elements=prepared.elements,
        truth=None,
        haadf_projector=haadf_op,
        chem_projector=Projector(n_det, prepared.chem_angles),
        haadf=haadf,
        chem=moved / (p * k[:, None, None, None]),
        eps=np.asarray(prepared.background, dtype=float) / k,
        gamma=prepared.gamma,
        haadf_at_chem=haadf_at_chem,
        z=atomic_numbers(prepared.elements),
        haadf_scale=prepared.haadf_scale,
    )
    fit_totals = fit.reshape(len(k), -1).sum(axis=1) / (p * k)
    return _Split(cell, held, fit_totals, left_out, {})


def full_cell(prepared: Prepared) -> CellData:
    """The whole prepared series (every count, every tilt) as a method takes it: what the final
    reconstruction with the tuned weights sees (``reconstruct-data`` builds the same)."""
    n_det = prepared.n_det
    if prepared.haadf_only:
        assert prepared.haadf is not None
        return CellData(
            elements=(HAADF_ONLY,),
            truth=None,
            haadf_projector=None,
            chem_projector=Projector(n_det, prepared.haadf_angles),
            haadf=None,
            chem=prepared.haadf[None],
            eps=np.zeros(1),
            gamma=1.0,
        )
    k = np.ones(len(prepared.elements)) if prepared.sensitivity is None else np.asarray(prepared.sensitivity, float)
    moved = np.stack([apply_shifts(c, prepared.chem_shifts) for c in prepared.chem])
    return CellData(
        elements=prepared.elements,
        truth=None,
        haadf_projector=None if prepared.haadf is None else Projector(n_det, prepared.haadf_angles),
        chem_projector=Projector(n_det, prepared.chem_angles),
        haadf=prepared.haadf,
        chem=moved / k[:, None, None, None],
        eps=np.asarray(prepared.background, dtype=float) / k,
        gamma=prepared.gamma,
        z=atomic_numbers(prepared.elements),
        haadf_scale=prepared.haadf_scale,
    )


def poisson_deviance(counts: np.ndarray, mean: np.ndarray) -> float:
    r"""Mean Poisson deviance per pixel, :math:`\frac{2}{N}\sum b\log(b/\mu) - (b - \mu)` (0 · log 0 = 0)."""
    mean = np.maximum(mean, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(counts > 0, counts * np.log(np.maximum(counts, 1e-300) / mean), 0.0)
    return float(2.0 * np.mean(term - (counts - mean)))


def _chem_deviances(prepared: Prepared, split: _Split, volumes: np.ndarray, p: float) -> list[float]:
    """:math:`D_i` of the module docstring for each element."""
    assert split.held_counts is not None and split.fit_totals is not None
    k = np.ones(len(prepared.elements)) if prepared.sensitivity is None else np.asarray(prepared.sensitivity, float)
    op = split.cell.chem_projector
    out = []
    for i in range(len(prepared.elements)):
        projected = np.asarray(op.forward(np.maximum(volumes[i], 0.0).astype(np.float32)), dtype=float)
        eps = float(split.cell.eps[i])
        n_pix = projected.size
        model_total = float(projected.sum()) + eps * n_pix
        scale = 1.0
        if projected.sum() > 0:
            # the map's scale from the fit part's counts (what the fit saw), never from the held part
            scale = max(float(split.fit_totals[i]) - eps * n_pix, 0.0) / float(projected.sum())
        elif model_total <= 0:
            return [math.inf] * len(prepared.elements)
        aligned = (1.0 - p) * k[i] * (scale * projected + eps)
        recorded_frame = apply_shifts(aligned, -prepared.chem_shifts)
        out.append(poisson_deviance(split.held_counts[i], recorded_frame))
    return out


def _haadf_error(prepared: Prepared, split: _Split, volumes: np.ndarray) -> float | None:
    """:math:`L_{\\rm haadf}` of the module docstring (None without held-out HAADF tilts)."""
    if prepared.haadf is None or split.left_out.size == 0:
        return None
    projector = Projector(prepared.n_det, prepared.haadf_angles[split.left_out])
    if prepared.haadf_only:
        model = np.maximum(volumes[0], 0.0)
    else:
        z = np.asarray(atomic_numbers(prepared.elements), dtype=float)
        model = np.einsum("e...,e->...", np.maximum(volumes, 0.0) ** prepared.gamma, z**prepared.gamma)
    predicted = np.asarray(projector.forward(model.astype(np.float32)), dtype=float)
    measured = prepared.haadf[split.left_out]
    scale = float(np.vdot(predicted, measured) / max(np.vdot(predicted, predicted), 1e-300))
    return float(np.linalg.norm(scale * predicted - measured) / max(np.linalg.norm(measured), 1e-300))


_HAADF_REF = "(haadf)"  # the key of the start's held-out HAADF error in a split's reference


def _reference(prepared: Prepared, split: _Split, study: Study, p: float) -> dict[str, float]:
    """The held-out terms of the chemical-only ML-EM start of a split (computed once per worker)."""
    if not split.reference:
        start = np.asarray(to_numpy(cell_start(split.cell, study.device).volume), dtype=float)
        split.reference.update(zip(prepared.elements, _chem_deviances(prepared, split, start, p), strict=True))
        haadf = _haadf_error(prepared, split, start)
        if haadf is not None:
            split.reference[_HAADF_REF] = haadf
    return split.reference


def fit_weights(method: str, params: Mapping[str, float], p: float, *, thinned: bool) -> dict[str, float]:
    """The weights the thinned part is fitted with: :data:`THINNED` ones divided by ``p``."""
    out = {k: float(v) for k, v in params.items()}
    if thinned:
        for name in THINNED.get(method, ()):
            if name in out:
                out[name] = out[name] / p
    return out


def tune_trial_terms(study: Study, prepared: Prepared, method: str, params: Mapping[str, float]) -> dict[str, Any]:
    """Every split's held-out terms for one point (what :func:`run_tune_trial` records)."""
    assert study.data is not None
    p = study.data.fraction
    prepared, params = with_sensitivity(prepared, params)
    merged = {**study.fixed(method), **params}
    found = lookup(method)
    weights = fit_weights(method, merged, p, thinned=not prepared.haadf_only)
    splits: list[dict[str, Any]] = []
    last = None
    for s in range(study.data.splits):
        split = _split(prepared, study, s)
        result = check_result(method, found.run(split.cell, weights, study.device), split.cell)
        volumes = np.asarray(to_numpy(result.volume), dtype=float)
        if not np.all(np.isfinite(volumes)):
            raise FloatingPointError(f"method {method!r} returned a non-finite reconstruction")
        entry: dict[str, Any] = {"split": s, "haadf": _haadf_error(prepared, split, volumes)}
        if not prepared.haadf_only:
            reference = _reference(prepared, split, study, p)
            deviance = _chem_deviances(prepared, split, volumes, p)
            ref = [max(reference[e], 1e-300) for e in prepared.elements]
            entry["chem_deviance"] = deviance
            entry["chem_relative"] = [d / r for d, r in zip(deviance, ref, strict=True)]
            entry["chem"] = float(np.mean(entry["chem_relative"]))
            if entry["haadf"] is not None and reference.get(_HAADF_REF):
                entry["haadf_relative"] = entry["haadf"] / reference[_HAADF_REF]
                entry["both"] = 0.5 * (entry["chem"] + entry["haadf_relative"])
        splits.append(entry)
        last = result
    return {"splits": splits, "result": last}


def run_tune_trial(task: TrialTask) -> TrialRecord:
    """One tune trial on a worker: the loss of the module docstring; never raises (a failed record)."""
    t0 = time.perf_counter()
    base = trial_base(task)
    try:
        study = study_from_json(task.study_json)
        prepared: Prepared = task.data
        if not isinstance(prepared, Prepared):
            raise TypeError("a tune trial needs the prepared series (TrialTask.data)")
        which = loss_of(study, prepared)
        terms = tune_trial_terms(study, prepared, task.method, task.params)
        splits = terms["splits"]
        if which == "chem":
            per_element = np.mean([s["chem_relative"] for s in splits], axis=0)
        else:
            if any(s["haadf"] is None for s in splits):
                raise InputError("the HAADF loss needs held-out HAADF tilts (a HAADF series of 6 tilts or more)")
            per_element = np.full(len(prepared.elements) or 1, float(np.mean([s["haadf"] for s in splits])))
        loss = float(np.mean(per_element))
        if not math.isfinite(loss):
            raise FloatingPointError(f"the held-out loss is not finite for method {task.method!r}")
        haadf_values = [s["haadf"] for s in splits if s["haadf"] is not None]
        result = terms["result"]
        info: dict[str, Any] = {
            "objective": f"tune ({which}): {OBJECTIVE[which]}",
            "loss": {
                "minimised": which,
                "chem": float(np.mean([s["chem"] for s in splits])) if not prepared.haadf_only else None,
                "haadf": float(np.mean(haadf_values)) if haadf_values else None,
                "splits": splits,
                "fraction": study.data.fraction if study.data is not None else None,
            },
            "final_costs": result.final_costs(),
            "solver": {k: v for k, v in result.info.items() if isinstance(v, bool | int | float | str)},
        }
        return finished_record(base, OK, loss, per_element, result, info, t0)
    except Exception as exc:  # a failed trial is data, not a crash of the tune
        return failed_record(base, exc, t0)
