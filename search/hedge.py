"""GP-Hedge (Hoffman, Brochu & de Freitas 2011): a portfolio of EI, LCB and PI.

After every fit each acquisition nominates the point that optimises it; one nominee is drawn
with probability ``softmax(eta · gains)``; when the next model is fitted on *finished* results,
each function's gain is raised by minus that model's mean at the point it nominated (a function
whose nominees turn out good keeps a high gain). A lie told to trials in flight would reward the
function whose nominee is still running, so rewards wait for a result that arrived since the last
one. The gains and the last nominees are the state a resumed search continues from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tomosweep.search.base import Search, stored_count
from tomosweep.search.gp import ACQ_FUNCS, Predict, minimise_acquisition
from tomosweep.search.space import SAME, Point, Space


def hedge_reward(predicted: np.ndarray, *, warp: str) -> np.ndarray:
    """GP-Hedge's reward for each nominee: minus the model's mean there, in NRMSE.

    Rewarding in the model's log units made the differences between nominees ~3.5× larger at
    NRMSE ≈ 0.27, and since PI always nominates next to the incumbent (the lowest mean) the hedge
    locked into PI within a dozen asks (gains ≈ [14, 16, 19]); back in NRMSE the three functions
    keep sharing the draws.
    """
    mean = np.asarray(predicted, dtype=float)
    return -(np.exp(mean) if warp == "log" else mean)


def hedge_choice(gains: np.ndarray, eta: float, valid: Sequence[int], rng: np.random.Generator) -> int:
    """GP-Hedge's pick: acquisition ``i`` with probability ∝ exp(η g_i), valid ones only."""
    probs = np.zeros(len(ACQ_FUNCS))
    among = np.asarray(gains, dtype=float)[list(valid)]
    # shifted by the valid ones' maximum: a far larger gain of an invalid function must not
    # underflow every valid probability to zero
    with np.errstate(over="ignore", invalid="ignore"):
        weights = np.exp(eta * (among - among.max()))
    if not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        weights = np.ones(len(among))  # gains that say nothing: the valid functions share the draw
    probs[list(valid)] = weights / weights.sum()
    return int(rng.choice(len(ACQ_FUNCS), p=probs))


def stored_gains(state: Mapping[str, Any]) -> np.ndarray:
    """GP-Hedge's gains of a stored search state: one finite number per acquisition function."""
    raw = state["gains"]
    try:
        gains = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        gains = np.array([])
    if gains.shape != (len(ACQ_FUNCS),) or not np.all(np.isfinite(gains)):
        raise ValueError(f"stored GP-Hedge gains must be {len(ACQ_FUNCS)} finite numbers, got {raw!r}")
    return gains


def stored_nominees(state: Mapping[str, Any], n_dims: int) -> np.ndarray | None:
    """The last nominees of a stored search state: one point per acquisition function in the
    search's [0, 1] box of ``n_dims`` dimensions (None: none yet). Anything else would be fed to
    the GP at the next reward, and a point far outside the box gives it no finite mean."""
    raw = state.get("nominees")
    if raw is None:
        return None
    try:
        nominees = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        nominees = np.array([])
    if nominees.shape != (len(ACQ_FUNCS), n_dims):
        raise ValueError(
            f"stored nominees must be {len(ACQ_FUNCS)} points of {n_dims} numbers in [0, 1], got {str(raw)[:80]}"
        )
    if not np.all(np.isfinite(nominees)) or nominees.min() < -SAME or nominees.max() > 1 + SAME:
        raise ValueError(f"stored nominees must lie in the search's [0, 1] box, got {str(raw)[:80]}")
    return nominees


class Hedge:
    """The portfolio's state: gains, last nominees, and the results counted at the last reward.

    Parameters
    ----------
    eta : float
        The learning rate (1, as in the paper's experiments).
    """

    def __init__(self, eta: float = 1.0) -> None:
        self.eta = float(eta)
        self.gains = np.zeros(len(ACQ_FUNCS))
        self.nominees: np.ndarray | None = None
        self.rewarded_at = 0

    def reward(self, mean_at: Callable[[np.ndarray], np.ndarray], n_finished: int, *, warp: str) -> None:
        """Raise each function's gain by its last nominee's value under a model of ``n_finished``
        finished results — once per new result."""
        if self.nominees is None or n_finished <= self.rewarded_at:
            return
        self.gains = self.gains + hedge_reward(mean_at(self.nominees), warp=warp)
        self.rewarded_at = n_finished

    def choose(self, valid: Sequence[int], rng: np.random.Generator) -> int:
        """Draw one of the ``valid`` nominees."""
        return hedge_choice(self.gains, self.eta, valid, rng)

    def state(self) -> dict[str, Any]:
        """Gains, nominees and the reward counter as JSON values."""
        return {
            "gains": [float(g) for g in self.gains],
            "nominees": None if self.nominees is None else self.nominees.tolist(),
            "rewarded_at": self.rewarded_at,
        }


def nominate(
    space: Space,
    predict: Predict,
    incumbent: float,
    candidates: np.ndarray,
    taken: set[tuple[float, ...]],
    *,
    lbfgs: bool,
) -> tuple[list[np.ndarray], list[Point | None], list[int]]:
    """GP-Hedge's nominees: one unit point per acquisition function, optimised on ``predict``.

    Returns the nominees in the unit box (one that could not be placed keeps its slot at the
    first valid one, so every function is still scored at the next reward), the same points as
    weights (None where none was found), and the indices of the nominees new to the cell.
    """
    taken_unit = space.to_unit(taken)

    def is_taken(x: np.ndarray) -> bool:
        return space.is_taken(x, taken_unit)

    nominees, points = [], []
    for acq in ACQ_FUNCS:
        x = minimise_acquisition(acq, predict, incumbent, candidates, is_taken, lbfgs=lbfgs)
        nominees.append(x)
        points.append(None if x is None else space.from_unit(x))
    valid = [i for i, p in enumerate(points) if p is not None and tuple(p) not in taken]
    if not valid:
        return [], points, []
    fallback = nominees[valid[0]]
    return [x if x is not None else fallback for x in nominees], points, valid


class HedgeSearch(Search):
    """A search that keeps GP-Hedge's gains and nominees in a cell's state (every cell's stored
    state has them; a search without a portfolio keeps them at zero)."""

    def __init__(self, space: Mapping[str, tuple[float, float, str, str]], *, eta: float = 1.0, **options: Any) -> None:
        super().__init__(space, **options)
        self.hedge = Hedge(eta)

    @property
    def gains(self) -> np.ndarray:
        """GP-Hedge's gains, one per acquisition function."""
        return self.hedge.gains

    @property
    def nominees(self) -> np.ndarray | None:
        """The last fit's nominees in the unit box ``(3, d)``."""
        return self.hedge.nominees

    def state(self) -> dict[str, Any]:
        """The cell's state: the seed counter, the adaptive budget and GP-Hedge's portfolio."""
        return {**super().state(), **self.hedge.state()}

    def validate(self, state: Any) -> dict[str, Any]:
        """Every stored value checked (:meth:`Search.validate`), the portfolio too."""
        values = super().validate(state)
        values["gains"] = stored_gains(state)
        values["nominees"] = stored_nominees(state, self.space.n_dims)
        values["rewarded_at"] = stored_count(state, "rewarded_at", 0)
        return values

    def _take(self, values: Mapping[str, Any]) -> None:
        super()._take(values)
        self.hedge.gains, self.hedge.nominees = values["gains"], values["nominees"]
        self.hedge.rewarded_at = values["rewarded_at"]
