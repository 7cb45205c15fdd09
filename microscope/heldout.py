r"""The held-out check of a measured reconstruction, which needs no ground truth.

Every k-th HAADF tilt and one chemical tilt are left out, the series is reconstructed from the
rest with the same weights, and two figures are reported: the relative error of the predicted
HAADF projections :math:`s\,A_h\sum_i (Z_i x_i)^\gamma` (``s`` fitted by least squares) and the
mean Poisson deviance per pixel of the predicted chemical counts. With a study's weights, the
same figures on the study's own simulated series of the cell sit beside them, with a verdict
where they differ by more than the study's spread (:func:`compare_heldout`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.microscope.plan import replicate_key, stored_replicates
from tomosweep.microscope.weights import Weights, measured_cell, run_weights
from tomosweep.results import SweepStore
from tomosweep.series import MeasuredSeries
from tomosweep.solvers import Projector
from tomosweep.solvers.backend import to_numpy
from tomosweep.sweep.spec import stored_study
from tomosweep.sweep.trial import simulate_cell


def _predicted_haadf(volumes: np.ndarray, projector: Any, z: tuple[float, ...], gamma: float) -> np.ndarray:
    """``A_h Σ_i (Z_i x_i)^γ`` (Schwartz 2024 eq. 1) for volumes ``(n_el, n, n, n_x)``."""
    model = np.einsum("e...,e->...", np.maximum(volumes, 0.0) ** gamma, np.asarray(z, dtype=float) ** gamma)
    return np.asarray(projector.forward(model.astype(np.float32)), dtype=float)


def heldout_indices(n: int, fraction: float) -> np.ndarray:
    """Every k-th interior tilt, ``k ≈ 1/fraction`` (the two end tilts always stay in)."""
    if not 0 < fraction < 0.5:
        raise InputError(f"the held-out fraction must lie in (0, 0.5), got {fraction:g}")
    k = max(2, int(round(1 / fraction)))
    idx = np.arange(k // 2, n - 1, k)
    return idx[(idx > 0) & (idx < n - 1)]


def _poisson_deviance(counts: np.ndarray, mean: np.ndarray) -> float:
    r"""Mean Poisson deviance per pixel, :math:`\frac{2}{N}\sum b\log(b/\mu) - (b - \mu)` (0 · log 0 = 0)."""
    mean = np.maximum(mean, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(counts > 0, counts * np.log(counts / mean), 0.0)
    return float(2.0 * np.mean(term - (counts - mean)))


def heldout_chem_index(n_chem: int) -> int | None:
    """The chemical tilt left out: the interior one nearest the middle (None below 4 tilts)."""
    return n_chem // 2 if n_chem >= 4 else None


def heldout_check(
    series: MeasuredSeries, weights: Weights, gamma: float, *, fraction: float, device: str
) -> dict[str, Any] | None:
    r"""Leave out every k-th HAADF tilt and one chemical tilt, reconstruct from the rest, predict the left-out ones.

    One extra reconstruction gives two figures: the relative L2 error of the left-out HAADF
    projections :math:`s\,A_h\sum_i (Z_i x_i)^\gamma` (``s`` by least squares), and the
    mean Poisson deviance per pixel of the left-out chemical maps against
    :math:`k_i(A_c x_i + \varepsilon_i)` in counts (per element and their mean; about 1 for
    a model as good as the noise at high counts, less at low counts — compare it with the
    study's simulated series at the same dose, as :func:`reconstruct_data` does).
    """
    if series.haadf is None or series.n_haadf < 6 or not series.elements:
        return None
    left_out = heldout_indices(series.n_haadf, fraction)
    if left_out.size == 0:
        return None
    keep = np.setdiff1d(np.arange(series.n_haadf), left_out)
    chem_out = heldout_chem_index(series.n_chem)
    reduced = replace(series, haadf=series.haadf[keep], haadf_angles=series.haadf_angles[keep])
    if chem_out is not None:
        chem_keep = np.setdiff1d(np.arange(series.n_chem), [chem_out])
        reduced = replace(reduced, chem=series.chem[:, chem_keep], chem_angles=series.chem_angles[chem_keep])
    cell = measured_cell(reduced, gamma=gamma)
    result = run_weights(cell, weights, device, None)

    volumes = np.asarray(to_numpy(result.volume), dtype=float)
    projector = Projector(series.shape[0], series.haadf_angles[left_out])
    predicted = _predicted_haadf(volumes, projector, cell.z, gamma)
    measured = series.haadf[left_out]
    scale = float(np.vdot(predicted, measured) / max(np.vdot(predicted, predicted), 1e-300))
    error = float(np.linalg.norm(scale * predicted - measured) / max(np.linalg.norm(measured), 1e-300))
    out: dict[str, Any] = {
        "left_out_angles": [float(a) for a in series.haadf_angles[left_out]],
        "relative_error": error,
        "scale": scale,
        "what": "relative L2 error of the left-out HAADF projections predicted from the rest",
    }
    if chem_out is not None:
        k = np.ones(len(series.elements)) if series.sensitivity is None else np.asarray(series.sensitivity, float)
        chem_op = Projector(series.shape[0], series.chem_angles[[chem_out]])
        deviance = []
        for i in range(len(series.elements)):
            mean = k[i] * (np.asarray(chem_op.forward(volumes[i].astype(np.float32)), float)[0] + cell.eps[i])
            deviance.append(_poisson_deviance(series.chem[i, chem_out], mean))
        out.update(
            chem_left_out_angle=float(series.chem_angles[chem_out]),
            chem_deviance=float(np.mean(deviance)),
            chem_deviance_per_element=dict(zip(series.elements, deviance, strict=True)),
            chem_what="mean Poisson deviance per pixel of the left-out chemical tilt predicted from the rest",
        )
    return out


# Without stored replicates, the held-out figures of the data and of the study's simulated
DEFAULT_HELDOUT_SPREAD = 0.25


def study_spread(store: Any, method: str, cell: tuple[int, int]) -> tuple[float, str]:
    """The relative spread the comparison allows: 2 × the replicates' relative std, or the default."""
    entry = stored_replicates(store).get(replicate_key(method, *cell)) or {}
    values = np.array([v for v in entry.get("nrmse") or [] if v is not None and math.isfinite(v)], dtype=float)
    if values.size >= 2 and values.mean() > 0:
        spread = max(2.0 * float(values.std(ddof=1) / values.mean()), 0.05)
        return spread, f"2 × the relative std of {values.size} stored replicates"
    return DEFAULT_HELDOUT_SPREAD, "the default (no replicates stored; run tomosweep replicate)"


def study_series(store_path: Any, cell: tuple[int, int], like: MeasuredSeries) -> tuple[MeasuredSeries, Any]:
    """The study's own simulated series of ``cell`` as a measured one, calibrated as ``like`` is."""
    with SweepStore.open(store_path) as store:
        study = stored_study(store, to_run=True)
    specimen, acq = simulate_cell(study, *cell)
    elements = tuple(specimen.elements)
    dose = tuple(float(acq.dose[e]) for e in elements)
    simulated = replace(
        like,
        haadf=acq.haadf,
        haadf_angles=np.asarray(acq.haadf_angles, float),
        chem=acq.chem,
        chem_angles=np.asarray(acq.chem_angles, float),
        elements=elements,
        chem_background=tuple(float(acq.background[e]) for e in elements),
        haadf_background=0.0,
        sensitivity=dose if like.sensitivity is not None else None,
        haadf_scale=acq.dose["haadf"] if not isinstance(like.haadf_scale, str) else like.haadf_scale,
        haadf_vacuum=None,
    )
    return simulated, study


def compare_heldout(data: dict[str, Any], study: dict[str, Any], spread: float, why: str) -> dict[str, Any]:
    """Each held-out figure of the data beside the study's, and a verdict in plain words."""
    rows, verdicts = {}, []
    for key, name in (("relative_error", "held-out HAADF error"), ("chem_deviance", "held-out chemical deviance")):
        if key not in data or key not in study:
            continue
        ratio = data[key] / study[key] if study[key] > 0 else math.inf
        differs = abs(ratio - 1.0) > spread
        rows[key] = {"data": data[key], "study": study[key], "ratio": ratio, "differs": differs}
        if differs and ratio > 1:
            verdicts.append(
                f"the {name} is {ratio:.2f}× the study's simulated series': these data fit the model worse "
                "than the study assumed (alignment, calibration, dose or specimen differ), so expect a "
                "higher NRMSE than the study predicts"
            )
        elif differs:
            verdicts.append(
                f"the {name} is {ratio:.2f}× the study's simulated series': these data fit the model better "
                "than the study's (more dose or a simpler specimen), so the study's NRMSE is likely pessimistic"
            )
    if rows and not verdicts:
        verdicts.append(
            f"the data behave like the study's simulated series (every held-out figure within ±{spread:.0%})"
        )
    return {"figures": rows, "spread": spread, "spread_from": why, "verdict": verdicts}


def heldout_lines(heldout: dict[str, Any] | None) -> list[str]:
    """The held-out check as terminal lines: the figures, the study's beside them, the verdict."""
    if not heldout:
        return []
    angles = ", ".join(f"{a:g}°" for a in heldout["left_out_angles"])
    lines = [f"held-out check: HAADF tilts {angles} predicted with relative error {heldout['relative_error']:.3f}"]
    if "chem_deviance" in heldout:
        lines.append(
            f"held-out check: chemical tilt {heldout['chem_left_out_angle']:g}° predicted with Poisson deviance "
            f"{heldout['chem_deviance']:.3f} per pixel"
        )
    study = heldout.get("study")
    if study:
        for key, row in study["figures"].items():
            name = "HAADF error" if key == "relative_error" else "chemical deviance"
            lines.append(
                f"  {name}: data {row['data']:.3f}, the study's simulated series {row['study']:.3f} "
                f"({row['ratio']:.2f}×)"
            )
        lines += [f"verdict: {v}" for v in study["verdict"]]
    return lines


def study_heldout(
    store_path: Any,
    cell: tuple[int, int],
    weights: Weights,
    series: MeasuredSeries,
    data_figures: dict[str, Any],
    gamma: float,
    fraction: float,
    device: str,
) -> dict[str, Any] | None:
    """The same held-out figures on the study's simulated series of the cell, compared with the data's."""
    simulated, _ = study_series(store_path, cell, series)
    figures = heldout_check(simulated, weights, gamma, fraction=fraction, device=device)
    if figures is None:
        return None
    with SweepStore.open(store_path) as store:
        spread, why = study_spread(store, weights.method, cell)
    return {"cell": list(cell), **figures, **compare_heldout(data_figures, figures, spread, why)}
