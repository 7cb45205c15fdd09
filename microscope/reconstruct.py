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

Without a ground truth, the check is a held-out one (:mod:`tomosweep.microscope.heldout`); the
weights and the measured cell are :mod:`tomosweep.microscope.weights`'.

A HAADF-only series (no ``[chem]``) is aligned and reconstructed by SIRT as one HAADF volume.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.microscope.heldout import heldout_check, heldout_indices, study_heldout
from tomosweep.microscope.weights import Weights, file_weights, measured_cell, run_weights, size_note, study_weights
from tomosweep.results import SweepStore
from tomosweep.results.folders import check_out_folder
from tomosweep.series import MeasuredSeries, apply_shifts, load_series
from tomosweep.series.align import Alignment, alignment_figure
from tomosweep.series.dose import correct_dose
from tomosweep.series.transfer import alignment_of, write_aligned_mrc, write_imod_xf, write_shifts_json
from tomosweep.solvers import Projector, sirt
from tomosweep.solvers.backend import to_numpy

log = logging.getLogger(__name__)

_MARK = "reconstruction.json"  # written last; an output folder holding it is tomosweep's

DEFAULT_GAMMA = 1.7


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


# series count as different beyond this relative difference. It is a chosen default, not a
# measured spread: one noise realisation of a held-out figure is not a distribution, and
# ``tomosweep replicate`` gives the real one.
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
        # tilt_axis_angle = "auto": the turn estimated and applied (also inside "alignment" when aligned)
        "tilt_axis_turn": getattr(series, "axis_turn", None),
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
    result = run_weights(cell, weights, device, on_iteration)

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
            heldout["study"] = study_heldout(
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
