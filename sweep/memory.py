"""How much memory a trial needs, and a refusal before the study starts when it cannot fit.

A trial's peak is its solver's working set — a method-specific number of element
volumes (:attr:`~tomosweep.sweep.methods.Method.memory_volumes`, measured with
``tracemalloc`` on the solvers: FISTA's iterates, gradient and TV-prox duals for fused)
— plus the two system matrices (about 1.25 non-zeros per pixel and tilt, value and
column index each) and the tilt series. The estimate is checked against measured peaks
in ``tests/sweep/test_memory.py``.

Before the first trial, the largest cell of every method is compared with what a worker
offers per running trial: on CPU, Dask's ``memory_limit`` divided by the worker's
threads; on GPU, the device's memory (one trial per GPU). A trial that cannot fit is
refused with both numbers, rather than dying out of memory mid-study.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tomosweep.errors import SpecError
from tomosweep.sweep.methods import METHODS

log = logging.getLogger(__name__)

NNZ_PER_PIXEL_AND_TILT = 1.25  # the projector's non-zeros: measured 1.22 at n = 32 … 64
ITEMSIZE = 8  # a sweep's series are float64 (counts over dose), and so are the solvers' arrays


@dataclass(frozen=True)
class TrialMemory:
    """The estimated peak memory of one trial of a method on a cell.

    Attributes
    ----------
    method : str
        The method's name.
    n : int
        Slice size of the specimen.
    n_elements : int
        Number of element volumes.
    n_haadf, n_chem : int
        The cell's HAADF and chemical tilts.
    bytes : int
        The estimated peak.
    """

    method: str
    n: int
    n_elements: int
    n_haadf: int
    n_chem: int
    bytes: int

    def describe(self) -> str:
        """The estimate in one line, for a refusal or the log."""
        return (
            f"{self.method} at {self.n}³ × {self.n_elements} elements with {self.n_haadf} HAADF and "
            f"{self.n_chem} chemical tilts needs about {_gb(self.bytes)}"
        )


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n < 1e10 else f"{n / 1e9:.1f} GB"


def trial_bytes(method: str, *, n: int, n_elements: int, n_haadf: int, n_chem: int, batch: int = 1) -> int:
    """Peak bytes of one trial (``batch`` trials solved together need ``batch`` working sets)."""
    volume = n**3 * n_elements * ITEMSIZE
    working = METHODS[method].memory_volumes * volume * batch
    matrices = 2 * NNZ_PER_PIXEL_AND_TILT * n * n * (n_haadf + n_chem) * (ITEMSIZE + 4)
    series = (2 * n_haadf + 3 * n_elements * n_chem) * n * n * ITEMSIZE
    return int(working + matrices + series)


def largest_trials(study: Any, n: int, n_elements: int) -> list[TrialMemory]:
    """Per method, the estimate at the grid's largest tilt counts."""
    h, c = max(study.acquisition.n_haadf), max(study.acquisition.n_chem)
    return [
        TrialMemory(m, n, n_elements, h, c, trial_bytes(m, n=n, n_elements=n_elements, n_haadf=h, n_chem=c))
        for m in study.methods
    ]


def _device_memory() -> int | None:
    """Total memory of this worker's GPU, or None (runs on a worker)."""
    try:
        import cupy  # pyright: ignore[reportMissingImports]  (optional, the gpu extra: asked for only when a GPU is)

        return int(cupy.cuda.runtime.memGetInfo()[1])
    except Exception:
        return None


def worker_budget(client: Any, *, gpu: bool) -> tuple[int, str] | None:
    """The smallest memory per running trial over the connected workers, and where it comes from.

    None when no worker is connected yet (a batch cluster's jobs may be queued) or no
    worker reports a limit.
    """
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        return None
    if gpu:
        reported = [v for v in client.run(_device_memory).values() if v]
        return (min(reported), "GPU memory per worker") if reported else None
    budgets = [
        int(w["memory_limit"]) // max(int(w.get("nthreads", 1)), 1) for w in workers.values() if w.get("memory_limit")
    ]
    return (min(budgets), "Dask memory_limit per worker thread") if budgets else None


def check_fits(trials: list[TrialMemory], budget: tuple[int, str] | None) -> None:
    """Refuse the study when its largest trial exceeds the budget (a SpecError naming both numbers)."""
    if budget is None:
        log.info("memory check skipped: no worker reports a memory limit yet")
        return
    limit, where = budget
    too_big = [t for t in trials if t.bytes > limit]
    if too_big:
        worst = max(too_big, key=lambda t: t.bytes)
        raise SpecError(
            f"the largest trial cannot fit: {worst.describe()}, but a worker offers {_gb(limit)} ({where}). "
            "Give workers more memory (fewer threads per worker, [cluster] memory on a batch cluster), "
            "use a smaller phantom size or fewer tilts, or a GPU with more memory"
        )
    for t in trials:
        log.info("memory: %s; a worker offers %s (%s)", t.describe(), _gb(limit), where)
