"""One Bayesian optimiser per (method, cell): GP-Hedge, asynchronous by constant liar.

The surrogate is scikit-optimize's Gaussian process (``cook_estimator("GP")``: Matern
5/2 kernel with a white-noise term, normalised targets, the space scaled to [0, 1]),
and the acquisition is GP-Hedge (Hoffman, Brochu & de Freitas 2011) as skopt defines
it for ``acq_func="gp_hedge"``: after every fit each of EI, LCB and PI nominates the
point that optimises it; one nominee is drawn with probability
``softmax(eta · gains)``; and when the next model is fitted, each function's gain is
reduced by that model's mean at the point it nominated (a function whose nominees
turn out good keeps a high gain). The loop is written here, with skopt's public
pieces (``cook_estimator``, ``gaussian_ei/lcb/pi``, ``Space``), because a study needs
what skopt's ``Optimizer`` keeps private:

- **State in plain numbers.** The gains, the last nominees and the seed counter are a
  small JSON dict (:meth:`CellOptimizer.state`) that the store commits with every
  trial, so a resumed study continues with the optimiser state it stopped with.
- **Asynchronous proposals.** Trials still running are told a constant lie
  (Ginsbourger et al. 2010) for the proposal fit only, so asks made while others are
  in flight are diverse. The gains are updated only with a model fitted on finished
  results — a lie would reward the function whose nominee is still running — and only
  when a result has arrived since the last update; with one trial at a time this is
  exactly skopt's sequential GP-Hedge.
- **No repeated points.** The objective is deterministic (every trial of a cell sees
  the same data), so a point already evaluated or in flight is never proposed again;
  a space of integers that has been evaluated everywhere is *exhausted* and
  :meth:`CellOptimizer.ask` says so by returning ``None``.
- **Warm starts.** The first points of a cell can be given (the best points of the
  neighbouring cells, or of an earlier study) instead of design points.
- **A space-filling start.** The initial points that are not warm starts come from a
  scrambled Latin hypercube (McKay, Beckman & Conover 1979) seeded by the cell, each the
  design point farthest from the points already taken; five random draws left whole
  corners of the box unseen (4 of 5 at λ1 ≤ 0.05 in one seed, issue 22).
- **Hedge rewards in NRMSE** (:func:`hedge_reward`) and an acquisition optimiser that
  stays ``_MARGIN`` inside the box (see ``_optimise``).
- **Budgets that follow improvement.** With ``stop_tolerance``, a cell whose expected
  improvement stayed below it for ``stop_patience`` asks stops (:attr:`CellOptimizer.stopped`).
- **The whole map.** A cell attached to a :class:`~tomosweep.search.map.MapSurrogate`
  asks through the method's one GP over (weights, tilt counts) instead of its own.

The GP models log NRMSE (output warping): a study's objective has cliffs — an
over-smoothed reconstruction scores near 1 while good ones differ in the second digit —
and on the raw values one such trial shortens the GP's length scales until its
proposals are little better than random. Measured on the search benchmark's cell
(sequential, 20 trials): best 0.255 with the warp against 0.335 without on one seed,
0.272 against 0.277 on another.

Failed trials are told a penalty, the worst finished NRMSE of the cell (at least
``PENALTY_FLOOR``, above the √2 NRMSE of an uncorrelated guess), so the GP learns to
avoid that region without one huge value flattening the surface.

``sampler="random"`` turns the optimiser into random search over the same space (the
baseline a user can run on their own problem).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

PENALTY_FLOOR = 1.5
ACQ_FUNCS = ("EI", "LCB", "PI")
_N_CANDIDATES = 10_000  # skopt's n_points
_N_RESTARTS = 5  # skopt's n_restarts_optimizer for "lbfgs"
_XI, _KAPPA = 0.01, 1.96  # skopt's defaults
_MARGIN = 0.02  # L-BFGS-B stays this far inside the [0, 1] box
_SAME = 1e-9  # two points closer than this in the [0, 1] space are the same point

Sampler = Literal["gp", "random"]
AcqOptimizer = Literal["sampling", "lbfgs"]


def derived_seed(*parts: Any) -> int:
    """A stable 32-bit seed from any printable parts (same inputs → same seed, any process)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def hedge_reward(predicted: np.ndarray, *, warp: str) -> np.ndarray:
    """GP-Hedge's reward for each nominee: minus the model's mean there, in NRMSE.

    skopt rewards in the objective's own units. Rewarding in the GP's log units made
    the differences between nominees ~3.5× larger at NRMSE ≈ 0.27, and since PI always
    nominates next to the incumbent (the lowest mean) the hedge locked into PI within a
    dozen asks (issue 22: gains ≈ [14, 16, 19]); back in NRMSE the three functions keep
    sharing the draws, as in skopt.
    """
    mean = np.asarray(predicted, dtype=float)
    return -(np.exp(mean) if warp == "log" else mean)


def hedge_choice(gains: np.ndarray, eta: float, valid: Sequence[int], rng: np.random.Generator) -> int:
    """GP-Hedge's pick (Hoffman et al. 2011): acquisition ``i`` with probability ∝ exp(η g_i), valid ones only."""
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
    search's [0, 1] space of ``n_dims`` dimensions (None: none yet). Anything else would be
    fed to the GP at the next reward, and a point far outside the box gives it no finite mean."""
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
    if not np.all(np.isfinite(nominees)) or nominees.min() < -_SAME or nominees.max() > 1 + _SAME:
        raise ValueError(f"stored nominees must lie in the search's [0, 1] box, got {str(raw)[:80]}")
    return nominees


@dataclass(frozen=True)
class Proposal:
    """A point to evaluate and what proposed it: ``EI``/``LCB``/``PI`` (the GP-Hedge
    member drawn), ``random``, or ``warm-start``."""

    params: dict[str, float]
    by: str


class CellOptimizer:
    """Asks parameter points for one (method, cell) and learns from finished trials.

    Parameters
    ----------
    space
        ``name -> (low, high, prior, kind)``, prior ``"log"`` or ``"linear"``, kind
        ``"real"`` or ``"int"``.
    n_initial
        Points before the GP takes over (warm-start points first, then random).
    seed
        Seeds every random draw and every fit: the sequence of points depends only on
        the seed, the warm-start points and the order of results.
    liar
        What trials in flight are told: a constant lie, ``cl_min`` (skopt's default),
        ``cl_mean`` or ``cl_max``, or ``kb`` (kriging believer: the GP's own prediction
        from the finished results).
    sampler
        ``"gp"`` (GP-Hedge) or ``"random"`` (random search, the baseline).
    acq_optimizer
        ``"lbfgs"``: L-BFGS-B from the best of 10 000 random candidates, as skopt's
        ``"lbfgs"``; ``"sampling"``: the best of the candidates.
    warm_start
        Points (dicts of every searched name) to try first, in order; only the first
        ``n_initial - 1`` asks use them, so each cell draws at least one random point.
    eta
        GP-Hedge's learning rate (skopt's default 1).
    warp
        ``"log"`` (default): the GP models log NRMSE; ``"none"``: the raw values.
    stop_tolerance, stop_patience
        The adaptive budget: when the expected improvement at the EI nominee (in log
        NRMSE, so about the relative improvement of the cell's best) stays below
        ``stop_tolerance`` for ``stop_patience`` asks in a row, the cell stops —
        :meth:`ask` returns ``None`` and :attr:`stopped` says why. ``None``: never.
    """

    def __init__(
        self,
        space: Mapping[str, tuple[float, float, str, str]],
        *,
        n_initial: int,
        seed: int,
        liar: Literal["cl_min", "cl_mean", "cl_max", "kb"] = "cl_min",
        sampler: Sampler = "gp",
        acq_optimizer: AcqOptimizer = "lbfgs",
        warm_start: Sequence[Mapping[str, float]] = (),
        eta: float = 1.0,
        warp: Literal["log", "none"] = "log",
        stop_tolerance: float | None = None,
        stop_patience: int = 3,
    ) -> None:
        from skopt.space import Integer, Real, Space  # deferred: skopt pulls scikit-learn (seconds)
        from skopt.utils import normalize_dimensions

        self.names = tuple(space)
        dims = []
        for name, (low, high, prior, kind) in space.items():
            skprior = "log-uniform" if prior == "log" else "uniform"
            if kind == "int":
                dims.append(Integer(int(low), int(high), prior=skprior, name=name))
            else:
                dims.append(Real(float(low), float(high), prior=skprior, name=name))
        self._space = Space(normalize_dimensions(dims))  # transform() maps onto [0, 1]^d
        self._is_int = tuple(isinstance(d, Integer) for d in dims)
        self._size = math.prod(int(d.high) - int(d.low) + 1 for d in dims) if all(self._is_int) else math.inf
        self.n_initial = int(n_initial)
        self.seed = int(seed)
        self.liar = liar
        self.sampler = sampler
        self.acq_optimizer = acq_optimizer
        self.eta = float(eta)
        self.warp = warp
        self.warm_start: list[tuple[float, ...]] = []
        self.set_warm_start(warm_start)
        self.X: list[list[float]] = []
        self.Y: list[float | None] = []  # None = failed trial, told as a penalty
        self.pending: dict[Any, list[float]] = {}
        self.n_asked = 0
        self.gains = np.zeros(len(ACQ_FUNCS))
        self.nominees: np.ndarray | None = None  # (3, d) in [0, 1]^d, the last fit's
        self._rewarded_at = 0  # finished results when the gains were last updated
        self._design_cache: np.ndarray | None = None
        self.stop_tolerance = None if stop_tolerance is None else float(stop_tolerance)
        self.stop_patience = int(stop_patience)
        self.streak = 0  # asks in a row whose expected improvement was below stop_tolerance
        self.stopped: str | None = None  # why the cell stopped early (adaptive budget)
        self.last_ei: float | None = None
        self.map: Any = None  # a MapSurrogate this cell asks through (set by its attach)
        self.cell: tuple[int, int] | None = None

    # ------------------------------------------------------------------ state

    def tell(self, params: Mapping[str, float], nrmse: float | None, *, key: Any = None) -> None:
        """Record a finished (``nrmse``) or failed (``None`` / non-finite) trial."""
        self.pending.pop(key, None)
        self.X.append(self._point(params))
        self.Y.append(float(nrmse) if nrmse is not None and math.isfinite(nrmse) else None)

    def set_warm_start(self, points: Sequence[Mapping[str, float]]) -> None:
        """Replace the warm-start points (tried in order, repeats dropped; only the first
        ``n_initial - 1`` asks use them, the last initial point is always random)."""
        self.warm_start = list(dict.fromkeys(tuple(self._point(p)) for p in points))

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
        return len(self._taken()) >= self._size

    def best(self) -> tuple[dict[str, float], float] | None:
        """The best finished point and its NRMSE; None before the first finished trial."""
        finished = [(y, x) for x, y in zip(self.X, self.Y, strict=True) if y is not None]
        if not finished:
            return None
        y, x = min(finished, key=lambda t: t[0])
        return dict(zip(self.names, x, strict=True)), y

    def state(self) -> dict[str, Any]:
        """The optimiser's own state as plain JSON numbers (the trials are stored apart)."""
        return {
            "n_asked": self.n_asked,
            "gains": [float(g) for g in self.gains],
            "nominees": None if self.nominees is None else self.nominees.tolist(),
            "rewarded_at": self._rewarded_at,
            "streak": self.streak,
            "stopped": self.stopped,
            "last_ei": self.last_ei,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state` (after the stored trials have been told).

        Every value is checked before any is taken: a ``ValueError`` (or ``KeyError`` /
        ``TypeError``) names the first that this optimiser could not continue from, and
        leaves it as it was.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"a stored search state is a table, got {type(state).__name__}")
        n_asked = stored_count(state, "n_asked")
        gains = stored_gains(state)
        nominees = stored_nominees(state, len(self.names))
        rewarded_at = stored_count(state, "rewarded_at", 0)
        streak = stored_count(state, "streak", 0)
        stopped = state.get("stopped")
        if stopped is not None and not isinstance(stopped, str):
            raise ValueError(f"stored stopped must be a reason (text) or null, got {stopped!r}")
        last_ei = state.get("last_ei")
        if last_ei is not None and (isinstance(last_ei, bool) or not isinstance(last_ei, int | float)):
            raise ValueError(f"stored last_ei must be a number or null, got {last_ei!r}")
        self.n_asked, self.gains, self.nominees = n_asked, gains, nominees
        self._rewarded_at, self.streak, self.stopped = rewarded_at, streak, stopped
        self.last_ei = None if last_ei is None else float(last_ei)

    def surrogate(self) -> Any:
        """The GP fitted on every told trial (failures at their penalty), as an skopt
        ``OptimizeResult`` that ``skopt.plots.plot_objective`` can draw; its values are
        in the GP's units (log NRMSE unless ``warp="none"``)."""
        from skopt.utils import create_result  # deferred: skopt pulls scikit-learn

        if self.n_told < 2:
            raise ValueError(f"a surrogate needs at least 2 trials, this cell has {self.n_told}")
        told = self._told_values()
        model = self._fit(self.X, told, self.seed)
        # the values in the GP's own units (log NRMSE by default), as its mean is
        return create_result(self.X, self._warped(told), self._space, self.seed, models=[model])

    def _point(self, params: Mapping[str, float]) -> list[float]:
        return [
            int(round(params[name])) if is_int else float(params[name])
            for name, is_int in zip(self.names, self._is_int, strict=True)
        ]

    def _taken(self) -> set[tuple[float, ...]]:
        return {tuple(x) for x in self.X} | {tuple(x) for x in self.pending.values()}

    def _finished(self) -> list[float]:
        return [y for y in self.Y if y is not None]

    def _told_values(self) -> list[float]:
        penalty = max([PENALTY_FLOOR, *self._finished()])
        return [y if y is not None else penalty for y in self.Y]

    def _lie(self, told: Sequence[float]) -> float:
        finished = self._finished() or list(told)
        if self.liar == "cl_min":
            return min(finished)
        if self.liar == "cl_max":
            return max(finished)
        return float(np.mean(finished))

    # ------------------------------------------------------------------ asking

    def ask(self, key: Any = None) -> Proposal | None:
        """A new point, pending under ``key`` until :meth:`tell` or :meth:`forget`;
        ``None`` when the space is exhausted or the cell has stopped (:attr:`stopped`)."""
        from threadpoolctl import threadpool_limits  # deferred: scikit-learn's dependency, loaded with it

        # the GP's linear algebra is small: BLAS threads only contend with the workers
        # on the driver's cores (measured 3× slower asks on a loaded 2-core machine)
        with threadpool_limits(limits=1, user_api="blas"):
            return self._ask(key)

    def _ask(self, key: Any) -> Proposal | None:
        if self.exhausted or self.stopped is not None:
            return None
        seed = derived_seed(self.seed, self.n_asked)
        self.n_asked += 1
        taken = self._taken()
        if self.map is not None:
            # the map's GP takes over once the cells around have n_initial results between them
            near = [self.map.opts[k] for k in self.map.local_cells(self.cell)]
            started = sum(o.n_told + len(o.pending) for o in near)
            in_start = started < self.n_initial or not any(o._finished() for o in near)
        else:
            in_start = self.n_told + len(self.pending) < self.n_initial or not self._finished()
        point, by = None, "random"
        # the last initial point is never a warm start; under the map (whose GP holds the
        # neighbours' results) a cell's warm starts are an earlier study's best points there
        warm = None
        if self.n_told + len(self.pending) < self.n_initial - 1:
            warm = next((p for p in self.warm_start if p not in taken), None)
        if warm is not None and (in_start or self.map is not None):
            point, by = list(warm), "warm-start"
        elif in_start:
            if self.sampler == "gp":
                point = self._design_point(taken)
        elif self.sampler == "gp":
            if self.map is not None:
                point, by, ei = self.map.propose(self, seed, taken)
            else:
                point, by, ei = self._gp_point(seed, taken)
            if self._converged(ei):
                return None
        if point is None:
            point = self._random_point(seed, taken)
        self.pending[key] = point
        return Proposal(dict(zip(self.names, point, strict=True)), by)

    def _converged(self, ei: float | None) -> bool:
        """Count asks whose expected improvement (log NRMSE: about the relative
        improvement) stayed below ``stop_tolerance``; after ``stop_patience`` in a row,
        with at least that many results of its own and ``n_initial`` (a map's GP can be
        confidently wrong about a cell it has barely seen), the cell stops and says why."""
        if self.stop_tolerance is None or ei is None:
            return False
        self.last_ei = float(ei)
        self.streak = self.streak + 1 if ei < math.log1p(self.stop_tolerance) else 0
        if self.streak >= self.stop_patience and len(self._finished()) >= max(self.stop_patience, self.n_initial):
            self.stopped = (
                f"converged: expected improvement below {100 * self.stop_tolerance:g} % of its best "
                f"for {self.streak} asks in a row"
            )
            return True
        return False

    def _cast(self, point: Sequence[Any]) -> list[float]:
        return [int(round(v)) if is_int else float(v) for v, is_int in zip(point, self._is_int, strict=True)]

    def _from_unit(self, x: np.ndarray) -> list[float]:
        """The point ``x`` of the optimiser's [0, 1]^d in the parameters' own space, cast."""
        # skopt has no annotations and pyright infers inverse_transform's rows as None
        return self._cast(cast("list[Any]", self._space.inverse_transform(x[None, :])[0]))

    def _design(self) -> np.ndarray:
        """The initial design: ``n_initial`` points of a scrambled Latin hypercube in the
        optimiser's [0, 1]^d (McKay, Beckman & Conover 1979), seeded by the cell's seed."""
        if self._design_cache is None:
            from scipy.stats import qmc  # deferred: scipy.stats is slow to import

            # `seed`, not scipy ≥ 1.15's `rng`: the two draw different designs from the same integer, and
            # stored studies resume on the designs `seed` drew; scipy still accepts it, its stubs do not
            seed = derived_seed(self.seed, "design")
            sampler = qmc.LatinHypercube(d=len(self.names), seed=seed)  # pyright: ignore[reportCallIssue]
            self._design_cache = sampler.random(max(self.n_initial, 1))
        return self._design_cache

    def _design_point(self, taken: set[tuple[float, ...]]) -> list[float] | None:
        """The design point farthest from every point taken (warm starts included), so
        the initial design fills the gaps the warm starts leave; ``None`` once all are used."""
        free = [x for x in self._design() if tuple(self._from_unit(x)) not in taken]
        if not free:
            return None
        if taken:
            taken_t = self._space.transform([list(p) for p in taken])
            gaps = [float(np.min(np.linalg.norm(taken_t - x, axis=1))) for x in free]
            x = free[int(np.argmax(gaps))]
        else:
            x = free[0]
        return self._from_unit(x)

    def _random_point(self, seed: int, taken: set[tuple[float, ...]]) -> list[float]:
        rng = np.random.default_rng(seed)
        for _ in range(100):
            draws = self._space.rvs(n_samples=64, random_state=int(rng.integers(2**31)))
            for draw in draws:
                point = self._cast(draw)
                if tuple(point) not in taken:
                    return point
        # a nearly exhausted integer space: enumerate what is left
        return self._from_unit(self._untaken(taken)[0])

    def _untaken(self, taken: set[tuple[float, ...]]) -> np.ndarray:
        # an integer space: each dimension's bounds are its (low, high)
        grid = itertools.product(*(range(int(low), int(high) + 1) for low, high in self._space.bounds))
        return self._space.transform([list(p) for p in grid if tuple(p) not in taken])

    def _warped(self, Y: Sequence[float]) -> list[float]:
        """The GP's targets: log NRMSE by default, so one over-smoothed trial near NRMSE 1
        does not flatten the differences between good ones (output warping)."""
        if self.warp == "log":
            return [math.log(max(y, 1e-12)) for y in Y]
        return list(Y)

    def _fit(self, X: list[list[float]], Y: list[float], seed: int) -> Any:
        from skopt.utils import cook_estimator  # deferred: skopt pulls scikit-learn

        # skopt has no annotations; pyright's inferred return type (a union with str and None) is wrong
        model: Any = cook_estimator("GP", space=self._space, random_state=seed)
        with warnings.catch_warnings():
            # GP hyper-parameter convergence notes are expected on small, noisy data
            warnings.simplefilter("ignore")
            model.fit(self._space.transform(X), self._warped(Y))
        return model

    def _reward(self, told: list[float], model: Any | None, seed: int) -> None:
        """GP-Hedge's gain update, with a model of the finished results only."""
        n_finished = len(self.Y)
        if self.nominees is None or n_finished <= self._rewarded_at:
            return
        fitted = model if model is not None else self._fit(self.X, told, seed)
        self.gains = self.gains + hedge_reward(fitted.predict(self.nominees), warp=self.warp)
        self._rewarded_at = n_finished

    def _gp_point(self, seed: int, taken: set[tuple[float, ...]]) -> tuple[list[float] | None, str, float | None]:
        told = self._told_values()
        believed = None  # a model of the finished results alone, when trials are in flight
        if self.pending and self.liar == "kb":
            # kriging believer: each running trial is told the GP's own prediction there
            believed = self._fit(self.X, told, derived_seed(seed, "reward"))
            predicted = believed.predict(self._space.transform(list(self.pending.values())))
            lies = [math.exp(v) if self.warp == "log" else float(v) for v in predicted]
        else:
            lies = [self._lie(told)] * len(self.pending)
        X = self.X + list(self.pending.values())
        Y = told + lies
        model = self._fit(X, Y, seed)
        self._reward(told, believed if self.pending else model, derived_seed(seed, "reward"))

        rng = np.random.default_rng(seed)
        if math.isfinite(self._size) and self._size <= _N_CANDIDATES:
            candidates = self._untaken(taken)  # a small integer space: every point left
        else:
            candidates = self._space.transform(self._space.rvs(_N_CANDIDATES, random_state=int(rng.integers(2**31))))
        taken_t = self._space.transform([list(p) for p in taken])
        y_opt = float(np.min(self._warped(Y)))
        placed, points, valid = self.nominate(model, y_opt, candidates, taken_t, taken)
        if not valid:
            return None, "random", None
        self.nominees = np.array(placed)
        choice = hedge_choice(self.gains, self.eta, valid, rng)
        ei = None
        if self.stop_tolerance is not None:
            from skopt.acquisition import gaussian_ei  # deferred: skopt pulls scikit-learn

            ei = float(np.ravel(gaussian_ei(self.nominees[:1], model, y_opt=y_opt, xi=0.0))[0])
        return points[choice], ACQ_FUNCS[choice], ei

    def nominate(
        self, model: Any, incumbent: float, candidates: np.ndarray, taken_t: np.ndarray, taken: set[tuple[float, ...]]
    ) -> tuple[list[np.ndarray], list[list[float] | None], list[int]]:
        """GP-Hedge's nominees: one point per acquisition function, optimised on ``model``.

        Returns the nominees in the transformed space (one that could not be placed keeps
        its slot at the first valid one, so every function is still scored at the next
        update), the same points in the parameters' own space (None where none was
        found), and the indices of the nominees that are new to this cell.
        """
        nominees, points = [], []
        for acq in ACQ_FUNCS:
            x = self._optimise(acq, model, incumbent, candidates, taken_t)
            nominees.append(x)
            points.append(None if x is None else self._from_unit(x))
        valid = [i for i, p in enumerate(points) if p is not None and tuple(p) not in taken]
        if not valid:
            return [], points, []
        fallback = nominees[valid[0]]
        return [x if x is not None else fallback for x in nominees], points, valid

    def _acq_values(self, acq: str, model: Any, y_opt: float, X: np.ndarray, grad: bool = False) -> Any:
        """The acquisition to *minimise* (skopt's convention: −EI, LCB, −PI)."""
        from skopt.acquisition import gaussian_ei, gaussian_lcb, gaussian_pi  # deferred: skopt pulls scikit-learn

        if acq == "LCB":
            return gaussian_lcb(X, model, kappa=_KAPPA, return_grad=grad)
        fn = gaussian_ei if acq == "EI" else gaussian_pi
        if grad:
            value, gradient = fn(X, model, y_opt=y_opt, xi=_XI, return_grad=True)
            return -value, -gradient
        # skopt has no annotations; without the gradient its acquisitions return one array
        return -cast("np.ndarray", fn(X, model, y_opt=y_opt, xi=_XI))

    def _optimise(
        self, acq: str, model: Any, y_opt: float, candidates: np.ndarray, taken: np.ndarray
    ) -> np.ndarray | None:
        values = np.asarray(self._acq_values(acq, model, y_opt, candidates), dtype=float)
        order = np.argsort(values)
        if self.acq_optimizer == "lbfgs" and not all(self._is_int):
            from scipy.optimize import fmin_l_bfgs_b  # deferred: scipy.optimize is slow to import

            def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
                value, gradient = self._acq_values(acq, model, y_opt, x[None, :], grad=True)
                return float(np.ravel(value)[0]), np.ravel(gradient)

            # a margin keeps L-BFGS-B off the faces of the box, where the GP's variance (and
            # so LCB and EI) grows only because no data lie beyond them
            bounds = [(_MARGIN, 1.0 - _MARGIN)] * candidates.shape[1]
            runs = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for x0 in candidates[order[:_N_RESTARTS]]:
                    x, f, _ = fmin_l_bfgs_b(objective, x0, bounds=bounds, maxiter=20)
                    runs.append((f, np.clip(x, _MARGIN, 1.0 - _MARGIN)))
            for _, x in sorted(runs, key=lambda r: r[0]):
                if not self._is_taken(x, taken):
                    return x
        for index in order:
            if not self._is_taken(candidates[index], taken):
                return candidates[index]
        return None

    def _is_taken(self, x: np.ndarray, taken: np.ndarray) -> bool:
        if taken.size == 0:
            return False
        point = self._from_unit(x)
        back = self._space.transform([point])[0]
        return bool(np.min(np.max(np.abs(taken - back), axis=1)) < _SAME)
