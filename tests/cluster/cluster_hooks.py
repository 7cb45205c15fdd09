"""A trial function for the cluster tests (shipped to batch workers by value)."""

from __future__ import annotations

import time

from tomosweep.results import TrialRecord
from tomosweep.sweep.trial import TrialTask, run_trial


def slow_trial(task: TrialTask) -> TrialRecord:
    """A real trial that takes at least half a second, so a job can be killed while trials run."""
    time.sleep(0.5)
    return run_trial(task)
