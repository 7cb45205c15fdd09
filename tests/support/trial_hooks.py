"""Trial functions that stand in for :func:`run_trial` in runner tests (shipped by value)."""

from __future__ import annotations

import math
import os
import time

from tomosweep.results import OK, TrialRecord
from tomosweep.sweep.trial import TrialTask, run_trial


def _synthetic(task: TrialTask, **extra) -> TrialRecord:
    """A deterministic record whose NRMSE is a smooth function of the parameters."""
    value = sum(math.log10(float(v)) ** 2 for v in task.params.values()) / 100 + 0.1
    return TrialRecord(
        method=task.method,
        n_haadf=task.n_haadf,
        n_chem=task.n_chem,
        params=dict(task.params),
        status=OK,
        nrmse=value,
        nrmse_elements=(value,) * 4,
        iterations=1,
        wall_time_s=0.0,
        worker=str(os.getpid()),
        finished_at=time.time(),
        **extra,
    )


def sleepy_trial(task: TrialTask) -> TrialRecord:
    """Takes a moment, so a worker can be killed while trials run."""
    time.sleep(0.4)
    return _synthetic(task)


def raising_trial(task: TrialTask) -> TrialRecord:
    """Raises for SIRT with more than 10 iterations, like a crash outside run_trial's guard."""
    if task.method == "sirt" and task.params["n_iter"] > 10:
        raise RuntimeError(f"boom at n_iter={task.params['n_iter']}")
    return run_trial(task)


def suicidal_trial(task: TrialTask) -> TrialRecord:
    """Kills its own worker process for one SIRT point: a crash in native code."""
    if task.method == "sirt" and task.params["n_iter"] > 20:
        os._exit(1)
    return _synthetic(task)


def synthetic_trial(task: TrialTask) -> TrialRecord:
    """Instant and deterministic: for runner tests that count points, not physics."""
    return _synthetic(task)


def hanging_trial(task: TrialTask) -> TrialRecord:
    """Never returns for SIRT with more than 20 iterations (a solver stuck in native code), else instant."""
    if task.method == "sirt" and task.params["n_iter"] > 20:
        time.sleep(3600)
    return _synthetic(task)
