"""A cell's own search: GP-Hedge on its own Gaussian process, asynchronous by constant liar; and
random search, the baseline.

:class:`CellGP` models the cell's objective with a GP (:mod:`tomosweep.search.gp`: Matern 5/2
with one length scale per weight and a noise term, on the unit box of :mod:`tomosweep.search.space`)
and proposes by GP-Hedge (:mod:`tomosweep.search.hedge`). What a study needs beyond a textbook loop:

- **State in plain numbers.** The gains, the last nominees and the seed counter are a small JSON
  dict (:meth:`CellGP.state`) that the store commits with every trial, so a resumed study
  continues with the state it stopped with, and proposes what one never stopped would.
- **Asynchronous proposals.** Trials still running are told a constant lie (Ginsbourger et al.
  2010) for the proposal fit only, so asks made while others are in flight are diverse. The gains
  are updated only with a model fitted on finished results; with one trial at a time this is
  sequential GP-Hedge.
- **Hedge rewards in NRMSE** (:func:`~tomosweep.search.hedge.hedge_reward`) and an acquisition
  optimiser that stays inside the box (:func:`~tomosweep.search.gp.minimise_acquisition`).

The GP models log NRMSE (output warping): a study's objective has cliffs — an over-smoothed
reconstruction scores near 1 while good ones differ in the second digit — and on the raw values
one such trial shortens the GP's length scales until its proposals are little better than
random. Measured on the search benchmark's cell (sequential, 20 trials): best 0.255 with the warp
against 0.335 without on one seed, 0.272 against 0.277 on another.

The ledger, the start, the warm starts, the failure penalty and the adaptive budget are every
search's (:class:`~tomosweep.search.base.Search`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tomosweep.search.base import (
    EXHAUSTED,
    PENALTY_FLOOR,
    Point,
    Proposal,
    derived_seed,
    unreadable,
)
from tomosweep.search.gp import ACQ_FUNCS, GaussianProcess, cell_kernel, expected_improvement
from tomosweep.search.hedge import HedgeSearch, nominate
from tomosweep.search.space import Space

__all__ = [
    "ACQ_FUNCS",
    "EXHAUSTED",
    "PENALTY_FLOOR",
    "CellGP",
    "Proposal",
    "RandomSearch",
    "Surface",
    "cell_search",
    "derived_seed",
    "unreadable",
]

N_CANDIDATES = 10_000  # random candidates an acquisition is ranked on

Sampler = Literal["gp", "random"]
AcqOptimizer = Literal["sampling", "lbfgs"]


@dataclass(frozen=True)
class Surface:
    """A cell's objective as its GP sees it, for the landscape figures: the trials and the model.

    Attributes
    ----------
    names : tuple of str
        The searched weights.
    log : tuple of bool
        Whether each is drawn on a log axis.
    points : list of list of float
        The trials' weights.
    values : list of float
        The trials' values in the model's units (log NRMSE unless the warp is off).
    model : GaussianProcess
        The GP on the unit box.
    space : Space
        The unit box (``from_unit``/``to_unit``).
    """

    names: tuple[str, ...]
    log: tuple[bool, ...]
    points: list[Point]
    values: list[float]
    model: GaussianProcess
    space: Space

    def mean(self, unit: np.ndarray) -> np.ndarray:
        """The model's mean at unit-box points ``(n, d)``."""
        return self.model.mean(unit)


class RandomSearch(HedgeSearch):
    """Random search over the same box: the baseline a user can run on their own problem."""

    kind = "random"

    def start_point(self, taken: set[tuple[float, ...]]) -> Point | None:
        """Random from the first point (no design)."""
        return None

    def propose(self, seed: int, taken: set[tuple[float, ...]]) -> tuple[Point | None, str, float | None]:
        """A random point (the caller draws it)."""
        return None, "random", None


class CellGP(HedgeSearch):
    """GP-Hedge on the cell's own GP (module docstring).

    Parameters
    ----------
    space
        As :class:`~tomosweep.search.base.Search`.
    acq_optimizer
        ``"lbfgs"``: L-BFGS-B from the best of 10 000 random candidates; ``"sampling"``: the best
        of the candidates.
    **options
        Those of :class:`~tomosweep.search.base.Search` (``n_initial``, ``seed``, ``liar``,
        ``warm_start``, ``warp``, ``stop_tolerance``, ``stop_patience``) and ``eta``, GP-Hedge's
        learning rate.
    """

    kind = "gp"

    def __init__(
        self,
        space: Mapping[str, tuple[float, float, str, str]],
        *,
        acq_optimizer: AcqOptimizer = "lbfgs",
        **options: Any,
    ) -> None:
        super().__init__(space, **options)
        self.acq_optimizer = acq_optimizer

    def fit(self, X: Sequence[Point], values: Sequence[float], seed: int) -> GaussianProcess:
        """The cell's GP on points ``X`` and their values (warped here)."""
        return GaussianProcess(cell_kernel(self.space.n_dims), seed=seed).fit(
            self.space.to_unit(X), self.warped(values)
        )

    def propose(self, seed: int, taken: set[tuple[float, ...]]) -> tuple[Point | None, str, float | None]:
        """GP-Hedge's pick on a GP of the finished trials and the lies told to those in flight."""
        told = self.told_values()
        believed = None  # a model of the finished results alone, when trials are in flight
        if self.pending and self.liar == "kb":
            # kriging believer: each running trial is told the GP's own prediction there
            believed = self.fit(self.X, told, derived_seed(seed, "reward"))
            lies = list(self.unwarped(believed.mean(self.space.to_unit(self.pending.values()))))
        else:
            lies = [self.lie(told)] * len(self.pending)
        X = self.X + list(self.pending.values())
        Y = told + lies
        model = self.fit(X, Y, seed)
        if self.pending:
            finished = believed
            if finished is None and self.hedge.nominees is not None and len(self.Y) > self.hedge.rewarded_at:
                finished = self.fit(self.X, told, derived_seed(seed, "reward"))
        else:
            finished = model
        if finished is not None:
            self.hedge.reward(finished.mean, len(self.Y), warp=self.warp)

        rng = np.random.default_rng(seed)
        if math.isfinite(self.space.size) and self.space.size <= N_CANDIDATES:
            candidates = self.space.untaken(taken)  # a small integer space: every point left
        else:
            candidates = self.space.sample(N_CANDIDATES, rng)
        y_opt = float(np.min(self.warped(Y)))
        placed, points, valid = nominate(
            self.space, model.predict, y_opt, candidates, taken, lbfgs=self.acq_optimizer == "lbfgs"
        )
        if not valid:
            return None, "random", None
        self.hedge.nominees = np.array(placed)
        choice = self.hedge.choose(valid, rng)
        ei = None
        if self.stop_tolerance is not None:
            ei = expected_improvement(model.predict, placed[0], y_opt)
        return points[choice], ACQ_FUNCS[choice], ei

    def surface(self) -> Surface:
        """The GP fitted on every told trial (failures at their penalty), for the landscape figures;
        its values are in the GP's units (log NRMSE unless ``warp="none"``)."""
        if self.n_told < 2:
            raise ValueError(f"a surrogate needs at least 2 trials, this cell has {self.n_told}")
        told = self.told_values()
        model = self.fit(self.X, told, self.seed)
        return Surface(
            names=self.names,
            log=tuple(d.log for d in self.space.dims),
            points=[list(x) for x in self.X],
            values=self.warped(told),
            model=model,
            space=self.space,
        )


def cell_search(
    space: Mapping[str, tuple[float, float, str, str]], *, sampler: Sampler = "gp", **options: Any
) -> CellGP | RandomSearch:
    """A cell's own search: :class:`CellGP` (``sampler="gp"``) or :class:`RandomSearch`.

    ``options`` are those of :class:`CellGP` (:class:`RandomSearch` ignores ``acq_optimizer``).
    """
    if sampler == "random":
        options.pop("acq_optimizer", None)
        return RandomSearch(space, **options)
    if sampler != "gp":
        raise ValueError(f"unknown sampler {sampler!r}: gp or random")
    return CellGP(space, **options)
