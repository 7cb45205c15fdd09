"""The one interface of the searches: what the runner asks a (method, cell) and what it tells it.

Shaped like Optuna's ``BaseSampler``: a search is asked for a point for its cell
(:meth:`Search.ask`, with the cell's context: its tilt counts, its trials and those in flight),
told each result (:meth:`Search.tell`, or :meth:`Search.forget` for a point that will not come
back), says when its cell is done (:attr:`Search.done`), and gives and takes back its state as
plain JSON (:meth:`Search.state`, :meth:`Search.restore`), every stored value checked before any is
taken (the same code serves ``resume`` and ``check``).

The siblings — :class:`~tomosweep.search.cell.CellGP` (the cell's own GP-Hedge),
:class:`~tomosweep.search.map.MapCell` (a cell asking the method's map-wide GP),
:class:`~tomosweep.search.cell.RandomSearch` (the baseline) — share what every cell has: its
ledger of points and results, the warm starts of :mod:`tomosweep.search.warm` and a space-filling
start. They differ only in :meth:`Search.propose`, the point once the start is over, and none
reaches into another's internals: the map's GP reads the cells' ledgers through the public
methods below.

What every search keeps, in the words of the module docstring of :mod:`tomosweep.search.cell`:

- **No repeated points.** The objective is deterministic (every trial of a cell sees the same
  data), so a point already evaluated or in flight is never proposed again; a space of integers
  evaluated everywhere is *exhausted* and :meth:`Search.ask` returns ``None``.
- **Warm starts.** The first points of a cell can be given (the best points of the neighbouring
  cells, or of an earlier study) instead of design points; the last initial point is never one.
- **A space-filling start.** The initial points that are not warm starts come from a scrambled
  Latin hypercube (McKay, Beckman & Conover 1979) seeded by the cell, each the design point
  farthest from the points already taken.
- **Failures at a penalty.** A failed trial is told the worst finished value of the cell (at
  least ``PENALTY_FLOOR``, above the √2 NRMSE of an uncorrelated guess).
- **Budgets that follow improvement.** With ``stop_tolerance``, a cell whose expected improvement
  stayed below it for ``stop_patience`` asks stops (:attr:`Search.stopped`).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from tomosweep.search.space import Point, Space

__all__ = ["EXHAUSTED", "PENALTY_FLOOR", "Point", "Proposal", "Search", "derived_seed", "stored_count", "unreadable"]

PENALTY_FLOOR = 1.5
EXHAUSTED = "every point of its search space is evaluated"

Liar = Literal["cl_min", "cl_mean", "cl_max", "kb"]


def derived_seed(*parts: Any) -> int:
    """A stable 32-bit seed from any printable parts (same inputs → same seed, any process)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def unreadable(exc: Exception) -> str:
    """Why a stored search state could not be restored, as one phrase."""
    if isinstance(exc, KeyError):
        return f"it has no {exc.args[0]!r}" if exc.args else "a value is missing"
    return str(exc)


def stored_count(state: Mapping[str, Any], name: str, default: int | None = None) -> int:
    """A counter of a stored search state: a whole number ≥ 0 (a ``ValueError`` names it otherwise)."""
    value = state.get(name, default) if default is not None else state[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"stored {name} must be a whole number, got {value!r}")
    if value < 0 or value != int(value):
        raise ValueError(f"stored {name} must be a whole number ≥ 0, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Proposal:
    """A point to evaluate and what proposed it: ``EI``/``LCB``/``PI`` (the GP-Hedge
    member drawn), ``random``, or ``warm-start``."""

    params: dict[str, float]
    by: str


class Search(ABC):
    """One (method, cell)'s search (module docstring).

    Parameters
    ----------
    space
        ``name -> (low, high, prior, kind)``, prior ``"log"`` or ``"linear"``, kind ``"real"`` or ``"int"``.
    n_initial
        Points before the model takes over (warm-start points first, then the design).
    seed
        Seeds every random draw and every fit: the sequence of points depends only on the seed,
        the warm-start points and the order of results.
    liar
        What trials in flight are told when a model is fitted: a constant lie, ``cl_min``,
        ``cl_mean`` or ``cl_max``, or ``kb`` (kriging believer: the model's own prediction).
    warm_start
        Points (dicts of every searched name) to try first, in order.
    warp
        ``"log"`` (default): models see log NRMSE; ``"none"``: the raw values.
    stop_tolerance, stop_patience
        The adaptive budget: when the expected improvement at the EI nominee (in log NRMSE, so
        about the relative improvement of the cell's best) stays below ``stop_tolerance`` for
        ``stop_patience`` asks in a row, the cell stops. ``None``: never.
    """

    #: the name a study file gives this search (``[budget] sampler``/``surrogate``)
    kind: ClassVar[str] = ""
    #: a cell warm-starts from its given points after its own start too (a map's cell: the map's GP holds the rest)
    warm_beyond_start: ClassVar[bool] = False
    #: the cell's neighbours' results reach it through a model they share (the map's GP)
    shares_model: ClassVar[bool] = False

    def __init__(
        self,
        space: Mapping[str, tuple[float, float, str, str]],
        *,
        n_initial: int,
        seed: int,
        liar: Liar = "cl_min",
        warm_start: Sequence[Mapping[str, float]] = (),
        warp: Literal["log", "none"] = "log",
        stop_tolerance: float | None = None,
        stop_patience: int = 3,
    ) -> None:
        self.space = Space(space)
        self.names = self.space.names
        self.n_initial = int(n_initial)
        self.seed = int(seed)
        self.liar = liar
        self.warp = warp
        self.warm_start: list[tuple[float, ...]] = []
        self.set_warm_start(warm_start)
        self.X: list[Point] = []
        self.Y: list[float | None] = []  # None = failed trial, told as a penalty
        self.pending: dict[Any, Point] = {}
        self.n_asked = 0
        self._design_cache: np.ndarray | None = None
        self.stop_tolerance = None if stop_tolerance is None else float(stop_tolerance)
        self.stop_patience = int(stop_patience)
        self.streak = 0  # asks in a row whose expected improvement was below stop_tolerance
        self.stopped: str | None = None  # why the cell stopped early (adaptive budget)
        self.last_ei: float | None = None

    # ------------------------------------------------------------------ the ledger

    def tell(self, params: Mapping[str, float], value: float | None, *, key: Any = None) -> None:
        """Record a finished (``value``) or failed (``None`` / non-finite) trial; ``key`` is the ask it answers."""
        self.pending.pop(key, None)
        self.X.append(self.space.point(params))
        self.Y.append(float(value) if value is not None and math.isfinite(value) else None)

    def forget(self, key: Any) -> None:
        """A point asked under ``key`` that will not be told (it is no longer in flight)."""
        self.pending.pop(key, None)

    def set_warm_start(self, points: Sequence[Mapping[str, float]]) -> None:
        """Replace the warm-start points (tried in order, repeats dropped; only the first
        ``n_initial - 1`` asks use them, the last initial point is never one)."""
        self.warm_start = list(dict.fromkeys(tuple(self.space.point(p)) for p in points))

    @property
    def n_told(self) -> int:
        """Points told a result (finished or failed)."""
        return len(self.X)

    @property
    def n_spent(self) -> int:
        """Points told and points in flight: what the cell has spent of its budget."""
        return len(self.X) + len(self.pending)

    @property
    def n_failed(self) -> int:
        """Points told without a result (failed trials)."""
        return sum(1 for y in self.Y if y is None)

    @property
    def exhausted(self) -> bool:
        """Every point of a finite (all-integer) space is evaluated or in flight."""
        return len(self.taken()) >= self.space.size

    @property
    def done(self) -> str | None:
        """Why the cell asks no more points (it stopped, or its space is spent); None while it goes on."""
        if self.stopped is not None:
            return self.stopped
        return EXHAUSTED if self.exhausted else None

    def best(self) -> tuple[float, dict[str, float]] | None:
        """The best finished value and its point (the order of :meth:`SweepStore.best`); None before any."""
        finished = [(y, x) for x, y in zip(self.X, self.Y, strict=True) if y is not None]
        if not finished:
            return None
        y, x = min(finished, key=lambda t: t[0])
        return y, dict(zip(self.names, x, strict=True))

    def taken(self) -> set[tuple[float, ...]]:
        """Points evaluated or in flight."""
        return {tuple(x) for x in self.X} | {tuple(x) for x in self.pending.values()}

    def finished(self) -> list[float]:
        """The values of the finished trials."""
        return [y for y in self.Y if y is not None]

    def told_values(self) -> list[float]:
        """Every told trial's value, failures at the penalty (module docstring)."""
        penalty = max([PENALTY_FLOOR, *self.finished()])
        return [y if y is not None else penalty for y in self.Y]

    def lie(self, told: Sequence[float]) -> float:
        """The constant lie a trial in flight is told (``liar``; ``kb`` falls back to ``cl_mean``)."""
        finished = self.finished() or list(told)
        if self.liar == "cl_min":
            return min(finished)
        if self.liar == "cl_max":
            return max(finished)
        return float(np.mean(finished))

    def warped(self, values: Sequence[float]) -> list[float]:
        """What a model sees: log NRMSE by default, so one over-smoothed trial near NRMSE 1 does not
        flatten the differences between good ones (output warping)."""
        if self.warp == "log":
            return [math.log(max(y, 1e-12)) for y in values]
        return list(values)

    def unwarped(self, values: np.ndarray) -> np.ndarray:
        """A model's values back in the objective's units."""
        values = np.asarray(values, dtype=float)
        return np.exp(values) if self.warp == "log" else values

    # ------------------------------------------------------------------ asking

    def ask(self, key: Any = None) -> Proposal | None:
        """A new point, in flight under ``key`` until :meth:`tell` or :meth:`forget`; ``None`` when
        the cell is :attr:`done`."""
        from threadpoolctl import threadpool_limits  # deferred: scikit-learn's dependency, loaded with it

        # the models' linear algebra is small: BLAS threads only contend with the workers
        # on the driver's cores (measured 3× slower asks on a loaded 2-core machine)
        with threadpool_limits(limits=1, user_api="blas"):
            return self._ask(key)

    def in_start(self) -> bool:
        """Whether the cell is still in its start (design points, warm starts)."""
        return self.n_spent < self.n_initial or not self.finished()

    def _ask(self, key: Any) -> Proposal | None:
        if self.done is not None:
            return None
        seed = derived_seed(self.seed, self.n_asked)
        self.n_asked += 1
        taken = self.taken()
        in_start = self.in_start()
        point, by = None, "random"
        warm = None
        if self.n_spent < self.n_initial - 1:
            warm = next((p for p in self.warm_start if p not in taken), None)
        if warm is not None and (in_start or self.warm_beyond_start):
            point, by = list(warm), "warm-start"
        elif in_start:
            point = self.start_point(taken)
        else:
            point, by, ei = self.propose(seed, taken)
            if self._converged(ei):
                return None
        if point is None:
            point, by = self.random_point(seed, taken), "random"
        self.pending[key] = point
        return Proposal(dict(zip(self.names, point, strict=True)), by)

    def start_point(self, taken: set[tuple[float, ...]]) -> Point | None:
        """A start point that is not a warm start: the design point farthest from every point
        taken (warm starts included), so the design fills the gaps they leave; None once all are used."""
        free = [x for x in self._design() if tuple(self.space.from_unit(x)) not in taken]
        if not free:
            return None
        if taken:
            taken_t = self.space.to_unit(taken)
            gaps = [float(np.min(np.linalg.norm(taken_t - x, axis=1))) for x in free]
            x = free[int(np.argmax(gaps))]
        else:
            x = free[0]
        return self.space.from_unit(x)

    @abstractmethod
    def propose(self, seed: int, taken: set[tuple[float, ...]]) -> tuple[Point | None, str, float | None]:
        """The point once the start is over, what chose it, and the expected improvement there in
        log NRMSE (for the adaptive budget; None where there is none). A None point: a random one."""

    def _design(self) -> np.ndarray:
        """The initial design: ``n_initial`` points of a scrambled Latin hypercube in the unit box
        (McKay, Beckman & Conover 1979), seeded by the cell's seed."""
        if self._design_cache is None:
            from scipy.stats import qmc  # deferred: scipy.stats is slow to import

            # `seed`, not scipy ≥ 1.15's `rng`: the two draw different designs from the same integer, and
            # stored studies resume on the designs `seed` drew; scipy still accepts it, its stubs do not
            seed = derived_seed(self.seed, "design")
            sampler = qmc.LatinHypercube(d=self.space.n_dims, seed=seed)  # pyright: ignore[reportCallIssue]
            self._design_cache = sampler.random(max(self.n_initial, 1))
        return self._design_cache

    def random_point(self, seed: int, taken: set[tuple[float, ...]]) -> Point:
        """A point drawn uniformly in the box that is not taken."""
        rng = np.random.default_rng(seed)
        for _ in range(100):
            for x in self.space.sample(64, rng):
                point = self.space.from_unit(x)
                if tuple(point) not in taken:
                    return point
        # a nearly exhausted integer space: enumerate what is left
        return self.space.from_unit(self.space.untaken(taken)[0])

    def _converged(self, ei: float | None) -> bool:
        """Count asks whose expected improvement (log NRMSE: about the relative improvement)
        stayed below ``stop_tolerance``; after ``stop_patience`` in a row, with at least that many
        results of its own and ``n_initial`` (a map's GP can be confidently wrong about a cell it
        has barely seen), the cell stops and says why."""
        if self.stop_tolerance is None or ei is None:
            return False
        self.last_ei = float(ei)
        self.streak = self.streak + 1 if ei < math.log1p(self.stop_tolerance) else 0
        if self.streak >= self.stop_patience and len(self.finished()) >= max(self.stop_patience, self.n_initial):
            self.stopped = (
                f"converged: expected improvement below {100 * self.stop_tolerance:g} % of its best "
                f"for {self.streak} asks in a row"
            )
            return True
        return False

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The search's own state as plain JSON numbers (the trials are stored apart)."""
        return {"n_asked": self.n_asked, "streak": self.streak, "stopped": self.stopped, "last_ei": self.last_ei}

    def validate(self, state: Any) -> dict[str, Any]:
        """The values :meth:`restore` would take from ``state``, each checked: a ``ValueError``
        (or ``KeyError`` / ``TypeError``) names the first this search could not continue from."""
        if not isinstance(state, Mapping):
            raise TypeError(f"a stored search state is a table, got {type(state).__name__}")
        stopped = state.get("stopped")
        if stopped is not None and not isinstance(stopped, str):
            raise ValueError(f"stored stopped must be a reason (text) or null, got {stopped!r}")
        last_ei = state.get("last_ei")
        if last_ei is not None and (isinstance(last_ei, bool) or not isinstance(last_ei, int | float)):
            raise ValueError(f"stored last_ei must be a number or null, got {last_ei!r}")
        return {
            "n_asked": stored_count(state, "n_asked"),
            "streak": stored_count(state, "streak", 0),
            "stopped": stopped,
            "last_ei": None if last_ei is None else float(last_ei),
        }

    def restore(self, state: Any) -> None:
        """Continue from :meth:`state` (after the stored trials have been told); nothing is taken
        unless every value passes :meth:`validate`."""
        values = self.validate(state)
        self._take(values)

    def _take(self, values: Mapping[str, Any]) -> None:
        self.n_asked, self.streak = values["n_asked"], values["streak"]
        self.stopped, self.last_ei = values["stopped"], values["last_ei"]

    def fresh_resume(self) -> None:
        """A store that kept no state for this cell: continue the seed sequence from its trials."""
        self.n_asked = self.n_told
