"""What runs on a worker: build a cell's data once, reconstruct, score, report a small record.

A trial depends only on (study, cell, method, params): the phantom is seeded by the
study's ``seed`` and the noise by a seed derived from it and the cell, so the same
trial gives the same NRMSE on any worker, in any order (docs/architecture.md: determinism).
Volumes never leave the worker; the record carries NRMSE per element and the mean,
the final cost terms, iterations, wall time, worker and device.

Every exception and every non-finite result becomes a *failed* record with the error
text; only the death of the worker process itself escapes (the runner handles it).

Pruning (median stopping rule, Golovin et al. 2017): a prunable method's iterate is
scored against the ground truth every ``CHECKPOINT`` iterations and the curve kept in
the record. When the runner sends thresholds — per checkpoint, the median of the
cell's earlier trials' best-so-far NRMSE there — a trial whose best-so-far NRMSE is
above the threshold at a checkpoint stops and comes back *pruned*, with the NRMSE it
had reached.
"""

from __future__ import annotations

import functools
import json
import math
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import SpecError
from tomosweep.phantoms import TiltScheme, load_specimen, simulate, simulate_cached
from tomosweep.phantoms.specimens import specimen_options
from tomosweep.results import FAILED, OK, PRUNED, TrialRecord
from tomosweep.search.cell import derived_seed
from tomosweep.solvers import nrmse
from tomosweep.solvers.backend import to_numpy
from tomosweep.sweep.methods import CellData, MethodContractError, UnknownMethodError, check_result, lookup
from tomosweep.sweep.spec import Study, study_from_dict


@dataclass(frozen=True)
class TrialTask:
    """One trial as shipped to a worker: the study as JSON (small), the cell, the point."""

    study_json: str
    method: str
    n_haadf: int
    n_chem: int
    params: Mapping[str, float]
    attempt: int = 1
    # checkpoint iteration -> NRMSE above which the trial stops (empty: never pruned)
    prune: Mapping[int, float] | None = None
    # 0: the cell's own noise; k > 0: the k-th fresh noise realisation (tomosweep replicate)
    replicate: int = 0
    # a tune's measured series, aligned and calibrated once by the driver (tomosweep.sweep.tune.Prepared)
    data: Any = None


CHECKPOINT = 10  # iterations between two intermediate scores of a prunable trial


class _Pruner:
    """The callback that scores the iterate at each checkpoint and stops a hopeless run."""

    def __init__(self, cell: CellData, thresholds: Mapping[int, float] | None) -> None:
        self.cell = cell
        self.thresholds = {int(k): float(v) for k, v in (thresholds or {}).items()}
        self.curve: list[tuple[int, float]] = []
        self.best = math.inf
        self.pruned_at: int | None = None

    def __call__(self, k: int, costs: Mapping[str, float], volume: Any) -> bool:
        if k == 0 or k % CHECKPOINT:
            return False
        value = float(score(self.cell, volume).mean())
        self.curve.append((k, value))
        self.best = min(self.best, value)
        limit = self.thresholds.get(k)
        if limit is not None and self.best > limit:
            self.pruned_at = k
            return True
        return False


@functools.lru_cache(maxsize=4)
def study_from_json(study_json: str) -> Study:
    """The study a trial carries, validated here: this imports its ``[plugins] modules`` on the worker.

    A study the worker cannot read (a method whose plugin is not installed here) is a
    :class:`SpecError` on one line, which the trial records as its error.
    """
    try:
        return study_from_dict(json.loads(study_json), source=f"the study as worker {_worker_name()} reads it")
    except SpecError as exc:
        raise SpecError(" ".join(str(exc).split())) from None


def noise_seed(study: Study, n_haadf: int, n_chem: int, replicate: int = 0) -> int:
    """The fixed noise seed of one cell (every trial of the cell sees the same data), or of its
    ``replicate``-th fresh realisation."""
    if replicate:
        return derived_seed(study.seed, "noise-replicate", n_haadf, n_chem, replicate)
    return derived_seed(study.seed, "noise", n_haadf, n_chem)


@functools.lru_cache(maxsize=2)
def _file_specimen(path: str, mtime: float) -> Any:
    return load_specimen(path)


def simulate_cell(study: Study, n_haadf: int, n_chem: int, replicate: int = 0) -> tuple[Any, Any]:
    """The specimen and the simulated acquisition every trial of a cell sees (or its replicate's)."""
    acq = study.acquisition
    scheme = TiltScheme(n_haadf, n_chem=n_chem, tilt_range=acq.tilt_range)
    settings = {
        "haadf_snr": acq.haadf_snr,
        "chem_snr": acq.chem_snr,
        "background": acq.background,
        "gamma": acq.gamma,
        "rng": noise_seed(study, n_haadf, n_chem, replicate),
    }
    phantom = study.specimen
    if phantom.name is not None:
        options = dict(phantom.options)
        if "rng" in specimen_options(phantom.name):
            options.setdefault("rng", study.seed)
        return simulate_cached(phantom.name, phantom.size, scheme, specimen_options=options, **settings)
    assert phantom.file is not None  # PhantomSpec holds a name or a file
    path = Path(phantom.file)
    specimen = _file_specimen(str(path), path.stat().st_mtime if path.exists() else 0.0)
    return specimen, simulate(specimen, scheme, **settings)


# 16 cells: a 3 × 3 or 4 × 4 grid is fed round-robin without thrashing this cache; a
# larger grid at large n rebuilds cells (no worker affinity yet), which costs a simulation.
@functools.lru_cache(maxsize=16)
def _cell_data_cached(study_json: str, n_haadf: int, n_chem: int, replicate: int = 0) -> CellData:
    return build_cell_data(study_from_json(study_json), n_haadf, n_chem, replicate)


def build_cell_data(study: Study, n_haadf: int, n_chem: int, replicate: int = 0) -> CellData:
    """Simulate one cell's acquisition and bring it to the form every method uses."""
    specimen, acq = simulate_cell(study, n_haadf, n_chem, replicate)
    haadf_op, chem_op = acq.projectors(specimen.n)
    dose = np.array([acq.dose[e] for e in specimen.elements])
    return CellData(
        elements=tuple(specimen.elements),
        truth=specimen.volumes,
        haadf_projector=haadf_op,
        chem_projector=chem_op,
        haadf=acq.haadf / acq.dose["haadf"],
        chem=acq.chem / dose[:, None, None, None],
        eps=np.array([acq.background[e] for e in specimen.elements]) / dose,
        gamma=float(study.acquisition.gamma),
        haadf_at_chem=None if acq.haadf_at_chem is None else acq.haadf_at_chem / acq.dose["haadf"],
        z=tuple(float(v) for v in specimen.z),
    )


def _worker_name() -> str:
    try:
        from distributed import get_worker  # deferred: distributed, and only on a worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "driver"


def reconstruct(study: Study, cell: CellData, method: str, params: Mapping[str, float], callback: Any = None) -> Any:
    """Run ``method`` on a cell with ``params`` merged over the study's fixed values."""
    merged = {**study.fixed(method), **params}
    found = lookup(method)
    if callback is not None and found.prunable:
        result = found.run(cell, merged, study.device, callback=callback)
    else:
        result = found.run(cell, merged, study.device)
    return check_result(method, result, cell)


def score(cell: CellData, volumes: Any) -> np.ndarray:
    """NRMSE per element against the ground truth (Schwartz 2024 Methods)."""
    return np.asarray(nrmse(to_numpy(volumes), cell.truth, channel_axis=0), dtype=float)


def _solver_scalars(info: Mapping[str, Any]) -> dict[str, Any]:
    """The solver's scalar report (absolute weights, balance point, convergence): small JSON."""
    return {k: v for k, v in info.items() if isinstance(v, bool | int | float | str)}


def run_trial(task: TrialTask) -> TrialRecord:
    """Run one trial; never raises for a failing reconstruction (returns a failed record)."""
    t0 = time.perf_counter()
    base = trial_base(task)
    try:
        study = study_from_json(task.study_json)
        cell = _cell_data_cached(task.study_json, task.n_haadf, task.n_chem, task.replicate)
        pruner = _Pruner(cell, task.prune) if lookup(task.method).prunable else None
        result = reconstruct(study, cell, task.method, task.params, callback=pruner)
        per_element = score(cell, result.volume)
        mean = float(per_element.mean())
        if not math.isfinite(mean):
            raise FloatingPointError(
                f"NRMSE is not finite: method {task.method!r} returned a constant or non-finite reconstruction"
            )
        info: dict[str, Any] = {"final_costs": result.final_costs(), "solver": _solver_scalars(result.info)}
        status = OK
        if pruner is not None:
            info["curve"] = [[k, v] for k, v in pruner.curve]
            if pruner.pruned_at is not None:
                status = PRUNED
                planned = int({**study.fixed(task.method), **task.params}["n_iter"])
                info["pruned"] = {
                    "at": pruner.pruned_at,
                    "of": planned,
                    "threshold": pruner.thresholds[pruner.pruned_at],
                }
        return finished_record(base, status, mean, per_element, result, info, t0)
    except Exception as exc:  # a failed trial is data, not a crash of the study
        return failed_record(base, exc, t0)


def finished_record(
    base: Mapping[str, Any], status: str, value: float, per_element: Any, result: Any, info: Any, t0: float
) -> TrialRecord:
    """The record of a trial that finished: its score (the mean and per element), the solver's report."""
    return TrialRecord(
        **base,
        status=status,
        nrmse=value,
        nrmse_elements=tuple(float(v) for v in per_element),
        iterations=int(result.iterations),
        wall_time_s=time.perf_counter() - t0,
        device=str(result.device),
        finished_at=time.time(),
        info=info,
    )


def trial_base(task: TrialTask) -> dict[str, Any]:
    """The fields every record of ``task`` carries, finished or failed."""
    return {
        "method": task.method,
        "n_haadf": task.n_haadf,
        "n_chem": task.n_chem,
        "params": dict(task.params),
        "worker": _worker_name(),
        "attempts": task.attempt,
    }


def failed_record(base: Mapping[str, Any], exc: Exception, t0: float) -> TrialRecord:
    """The failed record of a trial that raised ``exc``: its type, message and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = (
        f" (at {frames[-1].name}, {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})"
        # a broken contract or an unknown method is the user's method, not a line of tomosweep
        if frames and not isinstance(exc, MethodContractError | UnknownMethodError)
        else ""
    )
    return TrialRecord(
        **base,
        status=FAILED,
        error=f"{type(exc).__name__}: {exc}{where}",
        wall_time_s=time.perf_counter() - t0,
        finished_at=time.time(),
    )
