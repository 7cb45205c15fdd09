"""From a study back to the microscope: reconstruct a measured tilt series with a study's weights.

:func:`reconstruct_data` reads a data file (:mod:`tomosweep.series`), aligns the HAADF
series and carries its shifts to the chemical maps, takes the weights of the study cell
nearest the data's tilt counts (or the data file's own ``[weights]``), reconstructs with
the chosen method, and writes the element volumes (OME-Zarr, ``.npz``, one ``.tif`` per
element), orthogonal slices and the cost histories as PNG, the alignment plot, and a
``reconstruction.json`` that records every choice.

Weights carry over because every weight a study searches is relative to a balance point
the solver computes from the data (docs/architecture.md, Conventions): the measured chemical maps go in as counts
with their flat background as ε, and the HAADF scale is fitted with the volumes inside the
solve (``haadf_scale = "auto"`` of :func:`tomosweep.solvers.fused`); a calibrated
``[haadf] scale`` is used as given.

Without a ground truth, the check is a held-out one: every k-th HAADF tilt and one
chemical tilt are left out, the series is reconstructed from the rest with the same
weights, and two figures are reported: the relative error of the predicted HAADF
projections :math:`s\\,A_h\\sum_i (Z_i x_i)^\\gamma` (``s`` fitted by least squares) and the
mean Poisson deviance per pixel of the predicted chemical counts. With ``--weights``, the
same figures on the study's own simulated series of the cell sit beside them, with a
verdict where they differ by more than the study's spread (:func:`compare_heldout`).

A HAADF-only series (no ``[chem]``) is aligned and reconstructed by SIRT as one HAADF volume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import InputError, StoreError
from tomosweep.microscope.plan import replicate_key, stored_replicates
from tomosweep.results import SweepStore
from tomosweep.results.folders import check_out_folder
from tomosweep.search.warm import nearest_cell
from tomosweep.series import MeasuredSeries, apply_shifts, load_series
from tomosweep.series.align import Alignment, alignment_figure
from tomosweep.series.dose import correct_dose
from tomosweep.series.transfer import alignment_of, write_aligned_mrc, write_imod_xf, write_shifts_json
from tomosweep.solvers import Projector, sirt
from tomosweep.solvers.backend import to_numpy
from tomosweep.solvers.elements import atomic_numbers
from tomosweep.sweep.methods import METHODS, CellData
from tomosweep.sweep.spec import SENSITIVITY_PREFIX, stored_study
from tomosweep.sweep.trial import simulate_cell
from tomosweep.sweep.weights import checked_weights

log = logging.getLogger(__name__)

_MARK = "reconstruction.json"  # written last; an output folder holding it is tomosweep's

DEFAULT_GAMMA = 1.7


@dataclass(frozen=True)
class Weights:
    """The weights a reconstruction used and where they came from."""

    method: str
    params: dict[str, float]
    source: str  # "data file" or "S.zarr cell H×C"
    cell: tuple[int, int] | None = None
    study_nrmse: float | None = None
    gamma: float | None = None
    study_size: int | None = None  # the study's built-in specimen edge in voxels (None: a file's specimen)
    # a tune's searched sensitivities, relative to its first element (None: the data file's, or equal)
    sensitivity: dict[str, float] | None = None


# how far the data's size may lie from the study's before the weights are said not to carry
SIZE_RATIO = 1.25


def size_note(weights: Weights, n: int) -> str | None:
    """A note when a study's ``lambda_tv`` is applied to data of another size in voxels.

    The best ``lambda_tv`` grows about as n² with the specimen's size in voxels (it is
    relative to the data's intensity, not to their size): 2.0-2.3× from 16³ to 24³ on two
    specimens (``benchmarks/map_cost.py --only transfer``), while ``lambda_haadf`` carries.
    """
    if weights.study_size is None or "lambda_tv" not in weights.params:
        return None
    ratio = n / weights.study_size
    if 1 / SIZE_RATIO <= ratio <= SIZE_RATIO:
        return None
    return (
        f"the study searched its weights at {weights.study_size}³ and these data are {n} voxels across: "
        f"the best lambda_tv grows about as the square of the size in voxels (measured 2.0-2.3× from 16³ to "
        f"24³), so the study's lambda_tv = {weights.params['lambda_tv']:.3g} may be about {ratio**2:.2g}× off "
        "here; a study at the data's size (or a lambda_tv range that reaches that far) would tell"
    )


@dataclass
class DataReconstruction:
    """What :func:`reconstruct_data` did (also written as ``reconstruction.json``)."""

    out: Path
    weights: Weights
    elements: tuple[str, ...]
    shape: tuple[int, ...]
    alignment: dict[str, Any] | None
    heldout: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    dose: dict[str, Any] | None = None


def measured_cell(series: MeasuredSeries, *, gamma: float) -> CellData:
    """A measured series in the form every method takes (chemical maps in counts, ε = background)."""
    n_det = series.shape[0]
    haadf_op = Projector(n_det, series.haadf_angles) if series.n_haadf else None
    chem_op = Projector(n_det, series.chem_angles)
    # Schwartz 2024 eq. 1 asks one set of maps x to explain every modality, so each element's
    # counts go to a common concentration unit through its sensitivity (as a simulated series is
    # divided by its dose); the Poisson term is then weighted by 1/k per element, as in a sweep
    k = np.ones(len(series.elements)) if series.sensitivity is None else np.asarray(series.sensitivity, dtype=float)
    chem = series.chem / k[:, None, None, None]
    haadf_at_chem = None
    if series.haadf is not None:
        idx = [int(np.argmin(np.abs(series.haadf_angles - a))) for a in series.chem_angles]
        if np.allclose(series.haadf_angles[idx], series.chem_angles, atol=0.05):
            haadf_at_chem = series.haadf[idx]
    return CellData(
        elements=series.elements,
        truth=None,
        haadf_projector=haadf_op,
        chem_projector=chem_op,
        haadf=series.haadf,
        chem=chem,
        eps=np.asarray(series.chem_background, dtype=float) / k,
        gamma=float(gamma),
        haadf_at_chem=haadf_at_chem,
        z=atomic_numbers(series.elements),
        haadf_scale=series.haadf_scale,
    )


def study_weights(store_path: str | os.PathLike[str], method: str, n_haadf: int, n_chem: int) -> Weights:
    """The best weights of the stored cell nearest the data's tilt counts, merged over the study's fixed ones."""
    with SweepStore.open(store_path) as store:
        study = stored_study(store, to_run=True)
        done = store.finished_cells(method)
        if not done:
            raise StoreError(f"{store_path}: no finished {method} trial to take weights from; run the study first")
        h, c = nearest_cell(done, n_haadf, n_chem)
        found = store.best(method, (h, c))
        assert found is not None  # a finished cell has a best trial
        study_nrmse, stored = found
        best = {p: v for p, v in stored.items() if p in METHODS[method].param_names}
        params = {**study.fixed(method), **best}
        searched = study.data.sensitivity_ranges() if study.data is not None else {}
        sensitivity = None
        if searched:
            elements = study.data.elements if study.data is not None else []
            sensitivity = {
                e: 1.0 if i == 0 else float(stored[f"{SENSITIVITY_PREFIX}{e}"]) for i, e in enumerate(elements)
            }
        return Weights(
            sensitivity=sensitivity,
            method=method,
            params={k: float(v) for k, v in params.items()},
            source=f"{Path(store_path).name} cell {h}×{c}",
            cell=(h, c),
            study_nrmse=study_nrmse,
            gamma=float(study.acquisition.gamma),
            study_size=study.phantom.size if study.phantom is not None and study.phantom.file is None else None,
        )


def _tuned_sensitivity(
    series: MeasuredSeries, weights: Weights, notes: list[str], say: Callable[[str], None]
) -> MeasuredSeries:
    """The series with the sensitivities a tune searched on it, where the data file gives none."""
    if weights.sensitivity is None:
        return series
    if series.sensitivity is not None:
        notes.append(f"the data file's [chem] sensitivity is used, not the ones {weights.source} searched")
        return series
    if tuple(weights.sensitivity) != tuple(series.elements):
        raise InputError(
            f"{weights.source} searched the sensitivities of {', '.join(weights.sensitivity)}, but these data have "
            f"{', '.join(series.elements)}: tune these data (tomosweep tune) or give [chem] sensitivity"
        )
    tuned = tuple(weights.sensitivity[e] for e in series.elements)
    say(
        "sensitivities from the tune, relative to "
        + series.elements[0]
        + ": "
        + ", ".join(f"{e} {k:.3g}" for e, k in zip(series.elements, tuned, strict=True))
    )
    return replace(series, sensitivity=tuned)


def file_weights(series: MeasuredSeries, method: str | None) -> Weights:
    """Weights given in the data file's ``[weights]`` table (method defaults fill the rest)."""
    table = dict(series.weights or {})
    name = str(table.pop("method", method or "fused"))
    if method is not None and name != method:
        raise InputError(f"the data file's [weights] are for {name!r}, but --method {method} was asked for")
    if name not in METHODS:
        raise InputError(f"[weights] method {name!r} is unknown; allowed: {', '.join(METHODS)}")

    params = checked_weights(name, table)  # text, 2.5 iterations, 0 or inf refused as in a study
    return Weights(method=name, params=params, source="data file [weights]")


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


def _run(cell: CellData, weights: Weights, device: str, on_iteration: Callable[[int], None] | None) -> Any:
    method = METHODS[weights.method]
    if on_iteration is not None and method.prunable:

        def callback(k: int, costs: Mapping[str, float], volume: Any) -> bool:
            on_iteration(k)
            return False

        return method.run(cell, weights.params, device, callback=callback)
    return method.run(cell, weights.params, device)


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
    result = _run(cell, weights, device, None)

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
# series count as different beyond this relative difference. It is a chosen default, not a
# measured spread: one noise realisation of a held-out figure is not a distribution, and
# ``tomosweep replicate`` gives the real one.
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


def _study_heldout(
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


# --- writing ------------------------------------------------------------------------


def write_ome_zarr(path: Path, volumes: np.ndarray, elements: tuple[str, ...], pixel_size_nm: float | None) -> Path:
    """Element volumes ``(n_el, n_y, n_z, n_x)`` as OME-NGFF 0.4 (zarr v2 layout, ``c, z, y, x``; opens in napari).

    Axes: x along the tilt axis, y across it in the detector plane, z along the beam at 0°.
    """
    import zarr  # deferred: zarr is slow to import, only a .zarr output needs it

    data = np.ascontiguousarray(volumes.transpose(0, 2, 1, 3), dtype=np.float32)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    chunks = (1, *(min(s, 64) for s in data.shape[1:]))
    root.create_array(
        "0", shape=data.shape, dtype="float32", chunks=chunks, chunk_key_encoding={"name": "v2", "separator": "/"}
    )[...] = data
    unit = {"unit": "nanometer"} if pixel_size_nm else {}
    step = float(pixel_size_nm or 1.0)
    colours = ["FF00FF", "00FF00", "00FFFF", "FFFF00", "FF0000", "0000FF", "FFFFFF"]
    root.attrs.update(
        {
            "multiscales": [
                {
                    "version": "0.4",
                    "name": "tomosweep reconstruction",
                    "axes": [{"name": "c", "type": "channel"}]
                    + [{"name": a, "type": "space", **unit} for a in ("z", "y", "x")],
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [{"type": "scale", "scale": [1.0, step, step, step]}],
                        }
                    ],
                }
            ],
            "omero": {
                "channels": [
                    {
                        "label": e,
                        "color": colours[i % len(colours)],
                        "active": True,
                        "window": {
                            "min": float(data[i].min()),
                            "max": float(data[i].max()),
                            "start": float(data[i].min()),
                            "end": float(data[i].max()),
                        },
                    }
                    for i, e in enumerate(elements)
                ],
                "rdefs": {"model": "color"},
            },
        }
    )
    return path


def slices_figure(volumes: np.ndarray, elements: tuple[str, ...]) -> Any:
    """Central orthogonal slices of each element volume ``(n_el, n_y, n_z, n_x)``."""
    from matplotlib.figure import Figure  # deferred: matplotlib, for figures only

    n_el = len(elements)
    fig = Figure(figsize=(8, 2.6 * n_el), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_el, 3))
    n_y, n_z, n_x = volumes.shape[1:]
    for i, e in enumerate(elements):
        v = volumes[i]
        views = [
            (v[:, n_z // 2, :], "y–x (beam-normal)"),
            (v[n_y // 2, :, :], "z–x (along the beam)"),
            (v[:, :, n_x // 2], "y–z (across the axis)"),
        ]
        for ax, (img, title) in zip(axes[i], views, strict=True):
            ax.imshow(img, cmap="magma", origin="lower")
            ax.set_title(f"{e}: {title}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def costs_figure(costs: Mapping[str, np.ndarray], title: str) -> Any:
    """A matplotlib figure of a reconstruction's cost history, one line per term."""
    from matplotlib.figure import Figure  # deferred: matplotlib, for figures only

    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, values in costs.items():
        values = np.asarray(values, dtype=float)
        if values.size and np.all(values > 0):
            ax.semilogy(values, label=name)
        elif values.size:
            ax.plot(values, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cost term")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _write_outputs(out: Path, volumes: np.ndarray, series: MeasuredSeries, result: Any, weights: Weights) -> list[str]:
    import tifffile  # deferred: only a .tif output needs it

    files = []
    write_ome_zarr(out / "volumes.ome.zarr", volumes, series.elements, series.pixel_size_nm)
    files.append("volumes.ome.zarr")
    with open(out / "volumes.npz", "wb") as f:
        np.savez_compressed(
            f,
            volumes=volumes.astype(np.float32),
            elements=np.asarray(series.elements),
            pixel_size_nm=np.asarray(series.pixel_size_nm or np.nan),
            layout=np.asarray("(element, y across the tilt axis, z along the beam, x along the tilt axis)"),
        )
    files.append("volumes.npz")
    # for HyperSpy/ETSpy users: one signal with named axes, units and the element names, in the layout
    # of a .hspy specimen file (so a reconstruction can serve as a study's ground truth)
    from tomosweep.phantoms.files import write_hspy

    write_hspy(
        out / "volumes.hspy",
        volumes.astype(np.float32),
        series.elements,
        pixel_size_nm=series.pixel_size_nm,
        tomosweep={"method": weights.method},
    )
    files.append("volumes.hspy")
    for i, e in enumerate(series.elements):
        name = f"{e}.tif"
        metadata = {"axes": "ZYX", "unit": "nm", "spacing": series.pixel_size_nm} if series.pixel_size_nm else {}
        tifffile.imwrite(out / name, volumes[i].transpose(1, 0, 2).astype(np.float32), imagej=True, metadata=metadata)
        files.append(name)
    slices_figure(volumes, series.elements).savefig(out / "slices.png", dpi=110)
    costs_figure(result.costs, f"{weights.method}: cost terms").savefig(out / "costs.png", dpi=110)
    files += ["slices.png", "costs.png"]
    return files


def _weights_for(
    series: MeasuredSeries, store: str | os.PathLike[str] | None, method: str | None, say: Callable[[str], None]
) -> Weights:
    if store is None:
        weights = file_weights(series, method)
        say(f"weights: {weights.method} from the data file")
        return weights
    weights = study_weights(store, method or "fused", series.n_haadf, series.n_chem)
    say(
        f"weights: {weights.method} from {weights.source}, the cell nearest the data's "
        f"{series.n_haadf} HAADF × {series.n_chem} chemical tilts (study NRMSE {weights.study_nrmse:.3f})"
    )
    return weights


def _aligned(
    series: MeasuredSeries, notes: list[str], say: Callable[[str], None]
) -> tuple[MeasuredSeries, Alignment | None]:
    """The series with the HAADF's shifts applied to it and to the chemical maps (module docstring)."""
    alignment = alignment_of(series)
    if alignment is None:
        return series, None
    chem_shifts, interpolated = alignment.at(series.chem_angles)
    if interpolated:
        notes.append(
            f"{interpolated} chemical tilt(s) have no HAADF projection at their angle: their shifts are "
            "interpolated between the neighbouring HAADF tilts"
        )
    aligned = replace(
        series,
        haadf=None if series.haadf is None else apply_shifts(series.haadf, alignment.shifts),
        chem=np.stack([apply_shifts(c, chem_shifts) for c in series.chem]) if series.elements else series.chem,
    )
    largest = float(np.abs(alignment.shifts).max())
    say(f"aligned ({alignment.method}): largest shift {largest:.2f} px, tilt axis {alignment.tilt_axis_offset:+.2f} px")
    return aligned, alignment


def _dose_corrected(
    series: MeasuredSeries, alignment: Alignment | None, notes: list[str], say: Callable[[str], None]
) -> tuple[MeasuredSeries, dict[str, Any] | None]:
    """The aligned series divided by its per-tilt dose (:mod:`tomosweep.series.dose`), and the record of it."""
    # an along-axis shift pads the image's edge columns: they are left out of the totals
    margin = 0 if alignment is None else int(np.ceil(np.abs(alignment.shifts[:, 1]).max(initial=0.0))) + 1
    series, dose = correct_dose(series, margin=margin)
    if dose is None:
        return series, None
    notes.extend(dose.notes)
    if dose.applied:
        say(
            f"dose per tilt from the HAADF totals: {dose.factors.min():.3f} … {dose.factors.max():.3f} "
            f"(median 1; {dose.columns_used} of {dose.columns} slices)"
        )
    return series, dose.as_dict()


def _write_aligned(
    out: Path, series: MeasuredSeries, alignment: Alignment | None, weights: Weights, gamma: float
) -> list[str]:
    """The series as reconstructed (aligned, vacuum level off, per-tilt dose divided out) for IMOD, tomviz and
    ETSpy: MRC + ``.tlt``, the shifts as IMOD ``.xf`` and ``shifts.json``, and ``aligned.toml`` that reads them back."""
    files: list[str] = []
    lines = [
        "# The series reconstruct-data reconstructed: aligned, less its HAADF vacuum level, divided by its",
        "# per-tilt dose. `tomosweep reconstruct-data aligned.toml --out R` reconstructs it again.",
        f"gamma = {float(gamma)!r}",
    ]
    if series.pixel_size_nm:
        lines.append(f"pixel_size_nm = {float(series.pixel_size_nm)!r}")
    if series.haadf is not None:
        files += [
            p.name
            for p in write_aligned_mrc(
                out / "aligned_haadf.mrc", series.haadf, series.haadf_angles, series.pixel_size_nm
            )
        ]
        scale = series.haadf_scale if isinstance(series.haadf_scale, str) else float(series.haadf_scale)
        lines += [
            "[haadf]",
            'file = "aligned_haadf.mrc"',
            'angles = "aligned_haadf.tlt"',
            "background = 0.0",
            f"scale = {json.dumps(scale)}",
            'dose = "constant"',
        ]
    if series.elements:
        for i, e in enumerate(series.elements):
            path = out / f"aligned_{e}.mrc"
            write_aligned_mrc(path, series.chem[i], series.chem_angles, series.pixel_size_nm, tlt="aligned_chem.tlt")
            files.append(path.name)
        files.append("aligned_chem.tlt")

        def table(values: Any) -> str:
            return "{ " + ", ".join(f"{e} = {float(v)!r}" for e, v in zip(series.elements, values, strict=True)) + " }"

        lines += [
            "[chem]",
            'angles = "aligned_chem.tlt"',
            'units = "normalised"  # shifted counts are no longer whole numbers',
            f"background = {table(series.chem_background)}",
        ]
        if series.sensitivity is not None:
            lines.append(f"sensitivity = {table(series.sensitivity)}")
        lines += ["[chem.elements]"] + [f'{e} = "aligned_{e}.mrc"' for e in series.elements]
    lines += ["[align]", 'method = "none"', "[weights]", f'method = "{weights.method}"']
    lines += [f"{k} = {float(v)!r}" for k, v in weights.params.items()]
    (out / "aligned.toml").write_text("\n".join(lines) + "\n")
    files.append("aligned.toml")
    frame = series.frame
    if alignment is not None and frame is not None:
        write_shifts_json(out / "shifts.json", alignment, frame, series.shape)
        files += ["shifts.json"] + [p.name for p in write_imod_xf(out / "alignment.xf", alignment, frame)]
    return files


def _record(data: Any, series: MeasuredSeries, summary: DataReconstruction, result: Any, gamma: float) -> dict:
    """``reconstruction.json``: every choice the reconstruction made, and what it read."""
    weights = summary.weights
    return {
        "written_by": "tomosweep",
        "data": str(Path(data)),
        "sources": series.sources,
        "method": weights.method,
        "weights": weights.params,
        "weights_from": weights.source,
        "study_cell": weights.cell,
        "study_nrmse": weights.study_nrmse,
        "gamma": gamma,
        "elements": list(series.elements),
        "chem_background_counts": list(series.chem_background),
        "sensitivity": None if series.sensitivity is None else list(series.sensitivity),
        "haadf_scale": result.info.get("haadf_scale", series.haadf_scale),
        "haadf_background": series.haadf_background,
        "haadf_background_from": (
            vacuum.as_dict() if (vacuum := getattr(series, "haadf_vacuum", None)) is not None else "given"
        ),
        "volume_shape": list(summary.shape),
        "solver": {k: v for k, v in result.info.items() if isinstance(v, bool | int | float | str)},
        "iterations": int(result.iterations),
        "alignment": summary.alignment,
        "dose": summary.dose,
        "heldout": summary.heldout,
        "notes": summary.notes,
        "files": summary.files,
        "wall_time_s": summary.wall_time_s,
    }


def reconstruct_data(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    weights_store: str | os.PathLike[str] | None = None,
    method: str | None = None,
    device: str = "cpu",
    holdout: float | None = 0.1,
    overwrite: bool = False,
    on_iteration: Callable[[int], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> DataReconstruction:
    """Read, align, reconstruct and write a measured series (module docstring)."""
    t0 = time.perf_counter()

    def say(text: str) -> None:
        log.info(text)
        if on_stage is not None:
            on_stage(text)

    out = check_out_folder(out, overwrite=overwrite)
    series = load_series(data)
    notes: list[str] = list(series.notes)
    if not series.elements:
        return _haadf_only(data, out, series, notes, weights_store, method, device, holdout, say, t0)
    weights = _weights_for(series, weights_store, method, say)
    gamma = series.gamma if series.gamma is not None else (weights.gamma or DEFAULT_GAMMA)
    series = _tuned_sensitivity(series, weights, notes, say)
    if series.sensitivity is None and len(series.elements) > 1:
        # Measured (benchmarks/measured.py --factors, conio_composite at 32³, sensitivities 19:1:1): the
        # maps' NRMSE is 0.53 with equal sensitivities, 0.27 with the true ones. Fitting them to the
        # HAADF is no way out: at the truth a least-squares fit per element recovers them (19.2:1:0.92),
        # but at a chemical-only or a fused iterate it lands 3–20× off and re-solving does not converge
        # to them (the maps adapt to the wrong weights). So the user has to give them, and is told why.
        text = (
            "no [chem.sensitivity] given: every element is assumed to give the same counts per unit "
            "concentration; give relative k-factors (or cross-section × detector efficiency)"
        )
        if weights.method == "fused":
            text += (
                ": the fused method ties the maps to the HAADF through Σ (Z x)^γ, so sensitivities that "
                "differ distort the maps themselves, not only their ratios"
            )
        notes.append(text)
        log.info(text)
    if weights.method in ("fused", "hebt") and series.haadf is None:
        raise InputError(f"{weights.method} needs a HAADF series; the data file has none ([haadf] file = …)")
    series, alignment = _aligned(series, notes, say)
    series, dose = _dose_corrected(series, alignment, notes, say)
    vacuum = getattr(series, "haadf_vacuum", None)  # series.calibrate.VacuumLevel where the level was "auto"
    if vacuum is not None:
        notes.extend(vacuum.notes())
        say(f"HAADF vacuum level {series.haadf_background:.4g} counts, from {vacuum.as_dict()['from']}")

    cell = measured_cell(series, gamma=gamma)
    off_size = size_note(weights, int(series.shape[0]))
    if off_size is not None:
        notes.append(off_size)
        log.info(off_size)
    say(f"reconstructing {len(series.elements)} elements on a {series.shape[0]}² × {series.shape[1]} grid")
    result = _run(cell, weights, device, on_iteration)

    if result.info.get("haadf_scale_fit") == "joint":
        say(
            f"HAADF scale {result.info['haadf_scale']:.4g} counts per unit of Σ (Z x)^γ, fitted with the volumes "
            f"(from {result.info['haadf_scale_start']:.4g} on the chemical start, "
            f"{result.info.get('haadf_scale_refits', 0)} refits)"
        )
    volumes = np.asarray(to_numpy(result.volume), dtype=np.float64)
    volumes = volumes[None] if volumes.ndim == 3 else volumes
    if not np.all(np.isfinite(volumes)):
        raise InputError("the reconstruction is not finite; the weights do not suit these data")
    heldout = None
    if holdout:
        say("held-out check: reconstructing again without every k-th HAADF tilt and one chemical tilt")
        heldout = heldout_check(series, weights, gamma, fraction=holdout, device=device)
        if heldout is None:
            notes.append("held-out check skipped: it needs a HAADF series of 6 tilts or more")
        elif weights_store is not None and weights.cell is not None:
            say(f"held-out check on the study's own simulated series of cell {weights.cell[0]}×{weights.cell[1]}")
            heldout["study"] = _study_heldout(
                weights_store, weights.cell, weights, series, heldout, gamma, holdout, device
            )

    out.mkdir(parents=True, exist_ok=True)
    files = _write_outputs(out, volumes, series, result, weights)
    files += _write_aligned(out, series, alignment, weights, gamma)
    if alignment is not None:
        alignment_figure(alignment).savefig(out / "alignment.png", dpi=110)
        files.append("alignment.png")
    summary = DataReconstruction(
        out=out,
        weights=weights,
        elements=series.elements,
        shape=tuple(volumes.shape),
        alignment=None if alignment is None else alignment.as_dict(),
        heldout=heldout,
        notes=notes,
        files=files,
        wall_time_s=time.perf_counter() - t0,
        dose=dose,
    )
    (out / _MARK).write_text(json.dumps(_record(data, series, summary, result, gamma), indent=2, default=float))
    summary.files.append(_MARK)
    return summary


# SIRT iterations for a HAADF-only series: its SNR is high, so more than the chemical default
HAADF_SIRT_ITERATIONS = 50


def _is_haadf_tune(store: Any) -> bool:
    """Whether ``store`` is a tune of a HAADF-only series (its one "element" is the HAADF volume)."""
    with SweepStore.open(store) as opened:
        return "data" in opened.spec and opened.elements == ("HAADF",) and "sirt" in opened.methods


def _haadf_only(
    data: Any,
    out: Path,
    series: MeasuredSeries,
    notes: list[str],
    weights_store: Any,
    method: str | None,
    device: str,
    holdout: float | None,
    say: Callable[[str], None],
    t0: float,
) -> DataReconstruction:
    """A HAADF-only series: aligned and reconstructed by SIRT as one HAADF volume (no chemistry).

    The held-out check leaves out every k-th tilt, reconstructs from the rest with the
    same iterations and reports the relative error of the predicted projections.
    """
    if method not in (None, "sirt"):
        raise InputError(f"--method {method}: a HAADF-only series is reconstructed by sirt; chemistry needs [chem]")
    table = dict(series.weights or {})
    n_iter = int(table.get("n_iter", HAADF_SIRT_ITERATIONS)) if table.get("method", "sirt") == "sirt" else 50
    weights = Weights(method="sirt", params={"n_iter": float(n_iter)}, source="HAADF-only series (SIRT)")
    if weights_store is not None and _is_haadf_tune(weights_store):
        # a tune of this HAADF-only series searched SIRT's iterations on its held-out tilts
        weights = study_weights(weights_store, "sirt", series.n_haadf, 0)
        n_iter = int(weights.params["n_iter"])
        say(f"weights: sirt from {weights.source}, tuned on the data (n_iter {n_iter})")
    elif weights_store is not None:
        notes.append("--weights is not used: a study's weights are for chemistry, and this series has no [chem]")
    notes.append("reconstructed by SIRT as one HAADF volume (Σ (Z x)^γ in the HAADF's units), no element maps")
    series, alignment = _aligned(series, notes, say)
    series, dose = _dose_corrected(series, alignment, notes, say)
    haadf = series.haadf
    assert haadf is not None  # a series without [chem] has [haadf]: load_series refuses one with neither
    vacuum = getattr(series, "haadf_vacuum", None)
    if vacuum is not None:
        notes.extend(vacuum.notes())
        say(f"HAADF vacuum level {series.haadf_background:.4g} counts, from {vacuum.as_dict()['from']}")
    n_det, n_x = haadf.shape[1:]
    say(f"reconstructing the HAADF on a {n_det}² × {n_x} grid (SIRT, {n_iter} iterations)")
    result = sirt(Projector(n_det, series.haadf_angles), haadf, n_iter=n_iter, device=device)
    volumes = np.asarray(to_numpy(result.volume), dtype=np.float64)[None]
    if not np.all(np.isfinite(volumes)):
        raise InputError("the HAADF reconstruction is not finite; check the series for outliers")
    heldout = None
    if holdout and series.n_haadf >= 6 and (left_out := heldout_indices(series.n_haadf, holdout)).size:
        say("held-out check: reconstructing again without every k-th HAADF tilt")
        keep = np.setdiff1d(np.arange(series.n_haadf), left_out)
        rest = sirt(Projector(n_det, series.haadf_angles[keep]), haadf[keep], n_iter=n_iter, device=device)
        predicted = np.asarray(Projector(n_det, series.haadf_angles[left_out]).forward(to_numpy(rest.volume)), float)
        measured = haadf[left_out]
        heldout = {
            "left_out_angles": [float(a) for a in series.haadf_angles[left_out]],
            "relative_error": float(np.linalg.norm(predicted - measured) / max(np.linalg.norm(measured), 1e-300)),
            "what": "relative L2 error of the left-out HAADF projections predicted from the rest (SIRT)",
        }
    elif holdout:
        notes.append("held-out check skipped: it needs a HAADF series of 6 tilts or more")
    out.mkdir(parents=True, exist_ok=True)
    shown = replace(series, elements=("HAADF",))
    files = _write_outputs(out, volumes, shown, result, weights)
    files += _write_aligned(out, series, alignment, weights, float(series.gamma or DEFAULT_GAMMA))
    if alignment is not None:
        alignment_figure(alignment).savefig(out / "alignment.png", dpi=110)
        files.append("alignment.png")
    summary = DataReconstruction(
        out=out,
        weights=weights,
        elements=("HAADF",),
        shape=tuple(volumes.shape),
        alignment=None if alignment is None else alignment.as_dict(),
        heldout=heldout,
        notes=notes,
        files=files,
        wall_time_s=time.perf_counter() - t0,
        dose=dose,
    )
    record = _record(data, shown, summary, result, float(series.gamma or DEFAULT_GAMMA))
    (out / _MARK).write_text(json.dumps(record, indent=2, default=float))
    summary.files.append(_MARK)
    return summary
