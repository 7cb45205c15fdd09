"""The frozen record every solver returns, and the per-iteration bookkeeping it shares."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomosweep.errors import DivergenceError

#: ``callback(iteration, costs, volume) -> bool | None``; return True to stop early.
Callback = Callable[[int, Mapping[str, float], Any], "bool | None"]


@dataclass(frozen=True)
class Result:
    """Outcome of one reconstruction.

    Attributes
    ----------
    volume : array
        The reconstruction on the input's device: ``(n_y, n_z, n_x)`` for one
        modality, ``(n_elements, n_y, n_z, n_x)`` for multi-element methods.
    costs : mapping of str to ndarray
        Each cost term's value per iteration (index 0 = the starting point).
    iterations : int
        Iterations actually run (fewer than asked when a callback stopped the run).
    wall_time_s : float
        Seconds spent in the solver.
    device : str
        ``"cpu"`` or ``"gpu:<name>"``.
    info : mapping
        Method-specific scalars (e.g. HEBT response ratios and R², the step size).
    """

    volume: Any
    costs: Mapping[str, np.ndarray]
    iterations: int
    wall_time_s: float
    device: str
    info: Mapping[str, Any] = field(default_factory=dict)

    def final_costs(self) -> dict[str, float]:
        """The last value of every cost term (what a sweep trial records)."""
        return {k: float(v[-1]) for k, v in self.costs.items() if len(v)}


class CostLog:
    """Collects cost terms per iteration, checks them for divergence, runs the callback."""

    def __init__(self, method: str, callback: Callback | None, *, view: Callable[[Any], Any] | None = None) -> None:
        self.method = method
        self.callback = callback
        self.view = view  # the solver's internal iterate → the public volume the callback sees
        self.history: dict[str, list[float]] = {}
        self.start = time.perf_counter()

    def record(self, iteration: int, costs: Mapping[str, Any], volume: Any) -> bool:
        """Store ``costs`` (scalars, possibly device arrays); True means stop now."""
        values = {k: float(v) for k, v in costs.items()}
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise DivergenceError(
                f"{self.method} diverged at iteration {iteration}: cost term(s) "
                f"{', '.join(bad)} became non-finite. Lower the step size or the weights, "
                f"or check the input data for extreme values."
            )
        if self.callback is not None:
            return bool(self.callback(iteration, values, self.view(volume) if self.view else volume))
        return False

    def result(self, volume: Any, iterations: int, device: str, **info: Any) -> Result:
        """The :class:`Result` of the run: the recorded costs and the time since this log was made.

        Parameters
        ----------
        volume : array
            The reconstruction, in the solver's public layout.
        iterations : int
            Iterations run.
        device : str
            ``"cpu"`` or ``"gpu:<name>"``.
        **info
            Method-specific scalars for :attr:`Result.info`.

        Returns
        -------
        Result
            The frozen record.
        """
        costs = {k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}
        return Result(
            volume=volume,
            costs=costs,
            iterations=iterations,
            wall_time_s=time.perf_counter() - self.start,
            device=device,
            info=info,
        )
