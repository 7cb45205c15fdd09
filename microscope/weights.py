"""The weights a measured series is reconstructed with, and the series in the form every method takes.

A study's weights (:func:`study_weights`: the best of the stored cell nearest the data's tilt
counts), or the data file's own ``[weights]`` (:func:`file_weights`); :func:`measured_cell` puts
the measured series in the form of a sweep cell, and :func:`run_weights` reconstructs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import InputError, StoreError
from tomosweep.results import SweepStore
from tomosweep.search.warm import nearest_cell
from tomosweep.series import MeasuredSeries
from tomosweep.solvers import Projector
from tomosweep.solvers.elements import atomic_numbers
from tomosweep.sweep.methods import METHODS, CellData
from tomosweep.sweep.spec import SENSITIVITY_PREFIX, stored_study
from tomosweep.sweep.weights import checked_weights


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


def run_weights(cell: CellData, weights: Weights, device: str, on_iteration: Callable[[int], None] | None) -> Any:
    """Reconstruct ``cell`` with ``weights`` (``on_iteration`` told each iteration of a method that reports them)."""
    method = METHODS[weights.method]
    if on_iteration is not None and method.prunable:

        def callback(k: int, costs: Mapping[str, float], volume: Any) -> bool:
            on_iteration(k)
            return False

        return method.run(cell, weights.params, device, callback=callback)
    return method.run(cell, weights.params, device)
