"""One surrogate per method for the whole map: contextual Bayesian optimisation.

Every cell of a study searches the same weights, and the best weights move smoothly
across the (HAADF tilts × chemical tilts) grid, so what one cell learns is evidence for
the others. :class:`MapGP` fits one Gaussian process per method over

    (searched weights in the optimiser's [0, 1] space, log n_haadf, log n_chem),

the tilt counts scaled onto [0, 1] over the study's grid, on every finished trial of
the method (and, for the proposal fit, on every trial in flight in any cell, told a
lie as in :mod:`tomosweep.search.cell`). Its kernel is a sum: a Matern 5/2 over
weights and context (the shape of the surface, moving across the grid) plus one over
the context alone (the level of the NRMSE, which more tilts lower everywhere). An ask for a cell maximises the
acquisition with the cell's tilt counts held fixed — contextual Bayesian optimisation
(Krause & Ong 2011, "Contextual Gaussian process bandit optimization", with the
context as extra kernel dimensions). The Matern 5/2 kernel has one length scale per
dimension, so the GP itself learns how far along the grid evidence carries.

GP-Hedge runs as in a cell optimiser, with one set of gains per method: each fit's
three nominees (EI, LCB, PI at the asking cell's context) are rewarded by the next
model fitted on finished results. EI and PI compare with the cell's own best finished
value; a cell with no result of its own yet compares with the model's best mean at its
context.

Cheap asks at paper scale: an exact GP is cubic in its points, and a 12 × 12 map with
50 trials per cell has 7 200. The model for one ask is fitted on the asking cell's
trials and those of the nearest cells on the tilt grid (rings of the Chebyshev
neighbourhood, nearest first) up to ``max_points`` — a local GP in tilt space; points
farther away than the kernel's length scales carry almost nothing anyway.

The state that resume needs (gains, last nominees, the reward counter, the hyper-parameters) is
plain JSON, stored under ``method/map``; each cell's own state (its seed counter and adaptive
budget) is stored under the cell's key, as for every search. :class:`MapGP` reads the cells' trials
through the public ledger of :class:`~tomosweep.search.base.Search` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tomosweep.search.base import Point, Search, derived_seed, stored_count, unreadable
from tomosweep.search.gp import ACQ_FUNCS, GaussianProcess, expected_improvement, stored_theta
from tomosweep.search.hedge import Hedge, HedgeSearch, nominate, stored_gains, stored_nominees
from tomosweep.search.space import Space

Cell = tuple[int, int]

MAX_POINTS = 300  # points of the local GP of one ask (an exact fit on 300 points takes ~0.3 s)
CONTEXT_MIN_LENGTH = 0.3  # on the [0, 1] context axes: a 4-cell axis has cells 1/3 apart
TUNE_POINTS = 120  # points the hyper-parameters are estimated on
N_CANDIDATES = 2_000  # random candidates per ask (a cell's own GP ranks 10 000)


def map_state_key(method: str) -> str:
    """Where a method's map surrogate keeps its state among the stored optimiser states."""
    return f"{method}/map"


def _map_kernel(n_dims: int) -> Any:
    """shape + level + noise: a Matern 5/2 over weights and context (one length scale
    each), plus a Matern 5/2 over the context alone — the level of a cell's NRMSE moves with its
    tilt counts far more than the shape of its surface does (more tilts, lower NRMSE everywhere),
    and a product kernel alone could only fit that with short context length scales, making the
    cells strangers again."""
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    n_weights = n_dims - 2
    # The context's length scales stay above CONTEXT_MIN_LENGTH: the best weights move
    # smoothly across the grid (the premise of a map surrogate), and on a small grid
    # (two tilt counts per axis) the likelihood cannot tell a long length scale from
    # none, and preferred none — every cell a stranger again, its first points at corners.
    context = [(CONTEXT_MIN_LENGTH, 100.0)] * 2
    # Matern takes one length scale per dimension; its signature is only inferred from the default 1.0
    shape = ConstantKernel(1.0, (0.01, 1000.0)) * Matern(
        length_scale=np.ones(n_dims),  # pyright: ignore[reportArgumentType]
        length_scale_bounds=[(0.01, 100.0)] * n_weights + context,
        nu=2.5,
    )
    # the weights' length scales pinned far beyond the [0, 1] box: a function of the context only
    level = ConstantKernel(1.0, (0.01, 1000.0)) * Matern(
        length_scale=[1e4] * n_weights + [1.0, 1.0],  # pyright: ignore[reportArgumentType]
        length_scale_bounds=[(1e4, 1e5)] * n_weights + context,
        nu=2.5,
    )
    return shape + level + WhiteKernel(1.0, (1e-5, 1e5))


def _map_gp(n_dims: int, seed: int, theta: Sequence[float] | None, *, optimise: bool = True) -> GaussianProcess:
    kernel = _map_kernel(n_dims)
    if theta is not None:
        kernel = kernel.clone_with_theta(np.asarray(theta, dtype=float))
    return GaussianProcess(kernel, seed=seed, restarts=2 if theta is None else 0, optimise=optimise)


def _theta_bounds(n_dims: int | None) -> np.ndarray | None:
    return None if n_dims is None else _map_kernel(n_dims).bounds


class MapGP:
    """The whole map's GP for one method; the method's :class:`MapCell` searches ask through it.

    Parameters
    ----------
    cells
        The study's grid cells ``(n_haadf, n_chem)``.
    space
        The method's searched box (``name -> (low, high, prior, kind)``).
    seed
        Seeds the fits (with the asking cell's own ask seed).
    eta
        GP-Hedge's learning rate.
    max_points
        Most trials one ask's local GP is fitted on (nearest cells first).
    """

    def __init__(
        self,
        cells: Sequence[Cell],
        space: Mapping[str, tuple[float, float, str, str]],
        *,
        seed: int,
        eta: float = 1.0,
        max_points: int = MAX_POINTS,
        method: str = "",
    ) -> None:
        self.seed = int(seed)
        self.method = method
        self.space = Space(space)
        self.max_points = int(max_points)
        self.cells: dict[Cell, MapCell] = {}
        hs = sorted({h for h, _ in cells})
        cs = sorted({c for _, c in cells})
        self._h_index = {h: i for i, h in enumerate(hs)}
        self._c_index = {c: j for j, c in enumerate(cs)}
        self._log_h = (math.log(hs[0]), math.log(hs[-1]))
        self._log_c = (math.log(cs[0]), math.log(cs[-1]))
        self.hedge = Hedge(eta)  # nominees (3, d + 2): weights and context
        self.theta: list[float] | None = None  # the GP's log hyper-parameters, last estimate
        self._tuned_at = 0  # results told when they were estimated

    def attach(self, cell: Cell, search: MapCell) -> None:
        """Make ``search`` (the cell's) ask through this map."""
        self.cells[cell] = search

    # ------------------------------------------------------------------ state

    @property
    def n_dims(self) -> int:
        """Dimensions of the GP's inputs: the weights and the two context axes."""
        return self.space.n_dims + 2

    def state(self) -> dict[str, Any]:
        """What resuming needs, as JSON values: GP-Hedge's portfolio, the hyper-parameters and when
        they were estimated."""
        return {**self.hedge.state(), "theta": self.theta, "tuned_at": self._tuned_at}

    def validate(self, state: Any) -> dict[str, Any]:
        """The values :meth:`restore` would take, each checked.

        Raises
        ------
        ValueError
            Gains or hyper-parameters that are not finite numbers (or lie far outside the
            kernel's bounds), nominees outside the [0, 1] box, counters that are not whole numbers.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"a stored search state is a table, got {type(state).__name__}")
        return {
            "gains": stored_gains(state),
            "nominees": stored_nominees(state, self.n_dims),
            "rewarded_at": stored_count(state, "rewarded_at", 0),
            "tuned_at": stored_count(state, "tuned_at", 0),
            # a list of another length is kept: fit estimates fresh ones then, as for a grid of another shape
            "theta": stored_theta(state.get("theta"), _theta_bounds(self.n_dims)),
        }

    def restore(self, state: Any) -> None:
        """Take back a stored :meth:`state` (resume); nothing is taken unless all of it passes
        :meth:`validate`."""
        values = self.validate(state)
        self.hedge.gains, self.hedge.nominees = values["gains"], values["nominees"]
        self.hedge.rewarded_at, self._tuned_at, self.theta = values["rewarded_at"], values["tuned_at"], values["theta"]

    def fresh_resume(self) -> None:
        """A store that kept no map state (a study that ran with per-cell GPs until now): fresh
        gains, rewarded from the next result on."""
        self.hedge.rewarded_at = self.n_finished

    @property
    def n_finished(self) -> int:
        """Results told to the map (failures included: they are told a penalty)."""
        return sum(s.n_told for s in self.cells.values())

    # ------------------------------------------------------------------ the model

    def context(self, cell: Cell) -> np.ndarray:
        """The cell's tilt counts on [0, 1] (log scale over the grid's range)."""

        def scaled(value: float, span: tuple[float, float]) -> float:
            low, high = span
            return 0.0 if high == low else (math.log(value) - low) / (high - low)

        return np.array([scaled(cell[0], self._log_h), scaled(cell[1], self._log_c)])

    def local_cells(self, cell: Cell) -> list[Cell]:
        """The cells whose trials one ask's GP is fitted on: the asking cell, then whole
        rings of neighbours on the tilt grid while they fit in ``max_points``; the first
        ring is thinned evenly rather than left out."""
        i, j = self._h_index[cell[0]], self._c_index[cell[1]]

        def ring(other: Cell) -> int:
            return max(abs(self._h_index[other[0]] - i), abs(self._c_index[other[1]] - j))

        order = sorted(self.cells, key=lambda k: (ring(k), k))
        out, count = [], 0
        for r in sorted({ring(k) for k in order}):
            members = [k for k in order if ring(k) == r]
            size = sum(self.cells[k].n_spent for k in members)
            if r > 1 and count + size > self.max_points:
                break
            out += members
            count += size
        return out

    def started(self, cell: Cell) -> tuple[int, bool]:
        """Points spent by the cells around ``cell`` (itself included), and whether any has a result."""
        near = [self.cells[k] for k in self.local_cells(cell)]
        return sum(s.n_spent for s in near), any(s.finished() for s in near)

    def training_set(self, cell: Cell, *, with_pending: bool) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Inputs (weights in [0, 1], context), warped targets, and the index of the
        rows that are the asking cell's own finished trials."""
        rows: list[np.ndarray] = []
        targets: list[float] = []
        own: list[int] = []
        cells = self.local_cells(cell)
        per_cell = []
        for other in cells:
            search = self.cells[other]
            z = self.context(other)
            told = search.warped(search.told_values()) if search.n_told else []
            X = [*search.X]
            Y = list(told)
            if with_pending and search.pending:
                if search.n_told:
                    lies = search.warped([search.lie(search.told_values())] * len(search.pending))
                else:  # a cell with no result yet: the lie of the whole neighbourhood
                    finished = [y for k in cells for y in self.cells[k].finished()]
                    lies = search.warped([min(finished) if finished else 1.0] * len(search.pending))
                X += list(search.pending.values())
                Y += lies
            per_cell.append((other, search, z, X, Y))
        n_all = sum(len(X) for *_, X, _ in per_cell)
        for other, search, z, X, Y in per_cell:
            if not X:
                continue
            keep = range(len(X))
            if other != cell and n_all > self.max_points:
                # thin a crowded first ring evenly (deterministic), never the asking cell
                share = max(1, int(len(X) * (self.max_points - len(self.cells[cell].X)) / max(n_all, 1)))
                keep = np.unique(np.linspace(0, len(X) - 1, share).round().astype(int)).tolist()
            Xt = self.space.to_unit([X[k] for k in keep])
            for row, k in zip(Xt, keep, strict=True):
                if other == cell and k < search.n_told and search.Y[k] is not None:
                    own.append(len(rows))
                rows.append(np.concatenate([row, z]))
                targets.append(Y[k])
        return np.array(rows), np.array(targets), own

    def fit(self, X: np.ndarray, Y: np.ndarray, seed: int, *, tune: bool = False) -> GaussianProcess:
        """The GP on ``(X, Y)``; its hyper-parameters are the map's :attr:`theta`,
        estimated by maximum likelihood only when ``tune`` or when there are none yet
        (from the last estimate, with no random restarts once there is one, on at most
        ``TUNE_POINTS`` points evenly thinned). Estimating them is what costs (~200
        likelihood evaluations, each cubic in the points); a fit with them held is one
        Cholesky factorisation. A re-estimate starts both from the last estimate and from the
        kernel's defaults, and keeps the likelier."""
        fresh = self.theta is None or len(self.theta) != len(_map_kernel(X.shape[1]).theta)
        if fresh or tune:
            keep = np.unique(np.linspace(0, len(X) - 1, min(len(X), TUNE_POINTS)).round().astype(int))
            model = _map_gp(X.shape[1], seed, None if fresh else self.theta).fit(X[keep], Y[keep])
            if not fresh:
                # also from the kernel's defaults: an estimate from the first few points can be a poor
                # optimum (a weight's length scale at its bound) that a search from it never leaves
                again = _map_gp(X.shape[1], seed, _map_kernel(X.shape[1]).theta).fit(X[keep], Y[keep])
                model = again if again.likelihood > model.likelihood else model
            self.theta = model.theta
            self._tuned_at = self.n_finished
        return _map_gp(X.shape[1], seed, self.theta, optimise=False).fit(X, Y)

    def _tune_now(self) -> bool:
        """Re-estimate the hyper-parameters after every new result while the map has
        at most ``TUNE_POINTS`` of them (estimates from a few points are poor, and
        held they cost a cell 0.05-0.1 NRMSE on the test bowl), then whenever it has
        grown by a quarter since the last estimate."""
        if self.theta is None:
            return True
        if self.n_finished <= TUNE_POINTS:
            return self.n_finished > self._tuned_at
        return self.n_finished >= self._tuned_at * 5 // 4

    # ------------------------------------------------------------------ asking

    def propose(
        self, search: MapCell, seed: int, taken: set[tuple[float, ...]]
    ) -> tuple[Point | None, str, float | None]:
        """A point for ``search``'s cell, the acquisition that chose it, and the expected
        improvement there in log NRMSE (about the relative improvement) at the EI nominee."""
        cell = search.cell
        z = self.context(cell)
        pending_near = any(self.cells[k].pending for k in self.local_cells(cell))
        X, Y, own = self.training_set(cell, with_pending=True)
        model = self.fit(X, Y, seed, tune=self._tune_now())
        reward_seed = derived_seed(seed, "reward")
        if self.hedge.nominees is not None and self.n_finished > self.hedge.rewarded_at:
            finished_model = model
            if pending_near:
                Xf, Yf, _ = self.training_set(cell, with_pending=False)
                finished_model = self.fit(Xf, Yf, reward_seed)
            if self.hedge.nominees.shape[1] == X.shape[1]:
                self.hedge.reward(finished_model.mean, self.n_finished, warp=search.warp)
            self.hedge.rewarded_at = self.n_finished

        def at_context(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            W = np.atleast_2d(W)
            return model.predict(np.hstack([W, np.tile(z, (len(W), 1))]))

        rng = np.random.default_rng(seed)
        candidates = self.space.sample(N_CANDIDATES, rng)
        taken_unit = self.space.to_unit(taken)
        if not own and not search.pending:
            # a cell's first point is a warm start from the whole map: its best mean there
            for index in np.argsort(at_context(candidates)[0]):
                if not self.space.is_taken(candidates[index], taken_unit):
                    return self.space.from_unit(candidates[index]), "warm-start", None
        # the cell's own best; a cell with no result yet compares with the map's best guess there
        incumbent = float(np.min(Y[own])) if own else float(np.min(at_context(candidates)[0]))
        placed, points, valid = nominate(self.space, at_context, incumbent, candidates, taken, lbfgs=search.lbfgs)
        if not valid:
            return None, "random", None
        self.hedge.nominees = np.array([np.concatenate([x, z]) for x in placed])
        ei = expected_improvement(at_context, placed[0], incumbent)
        choice = self.hedge.choose(valid, rng)
        return points[choice], ACQ_FUNCS[choice], ei


class MapCell(HedgeSearch):
    """A cell that asks through its method's :class:`MapGP` once the cells around it have
    ``n_initial`` points between them; warm starts (an earlier study's best points) come first.

    Parameters
    ----------
    space
        As :class:`~tomosweep.search.base.Search`.
    model
        The method's map.
    cell
        The cell's tilt counts ``(n_haadf, n_chem)``.
    acq_optimizer
        As :class:`~tomosweep.search.cell.CellGP`.
    **options
        Those of :class:`~tomosweep.search.base.Search` and ``eta``, GP-Hedge's learning rate.
    """

    kind = "map"
    warm_beyond_start = True
    shares_model = True

    def __init__(
        self,
        space: Mapping[str, tuple[float, float, str, str]],
        *,
        model: MapGP,
        cell: Cell,
        acq_optimizer: str = "lbfgs",
        **options: Any,
    ) -> None:
        super().__init__(space, **options)
        self.model = model
        self.cell = (int(cell[0]), int(cell[1]))
        self.lbfgs = acq_optimizer == "lbfgs"
        model.attach(self.cell, self)

    def in_start(self) -> bool:
        """The map's GP takes over once the cells around have ``n_initial`` points between them
        and one result."""
        spent, any_result = self.model.started(self.cell)
        return spent < self.n_initial or not any_result

    def propose(self, seed: int, taken: set[tuple[float, ...]]) -> tuple[Point | None, str, float | None]:
        """The map's pick for this cell."""
        return self.model.propose(self, seed, taken)


def map_searches(
    method: str,
    cells: Sequence[Cell],
    space: Mapping[str, tuple[float, float, str, str]],
    *,
    seed: int,
    cell_seed: Any = None,
    **options: Any,
) -> dict[Cell, MapCell]:
    """One :class:`MapCell` per cell of ``method``, all asking one :class:`MapGP`.

    ``cell_seed(cell)`` gives each cell's own seed (default: derived from ``seed`` and the cell);
    ``options`` are those of :class:`MapCell`.
    """
    model = MapGP(cells, space, seed=derived_seed(seed, "map", method), method=method)
    out = {}
    for cell in cells:
        own = derived_seed(seed, *cell) if cell_seed is None else cell_seed(cell)
        out[tuple(cell)] = MapCell(space, model=model, cell=cell, seed=own, **options)
    return out


def _maps(searches: Mapping[Any, Search]) -> dict[str, MapGP]:
    found: dict[str, MapGP] = {}
    for search in searches.values():
        if isinstance(search, MapCell):
            found.setdefault(search.model.method, search.model)
    return found


def map_states(searches: Mapping[Any, Search]) -> dict[str, Any]:
    """The state of every map behind ``searches``, keyed as the store keeps it."""
    return {map_state_key(method): model.state() for method, model in _maps(searches).items()}


def restore_maps(searches: Mapping[Any, Search], states: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Give each map behind ``searches`` its stored state (resume); a store without one (a study
    that ran with per-cell GPs until now) starts with fresh gains.

    Returns ``(key, why)`` for each stored state the map could not continue from; those maps are
    left fresh (the caller refuses, or resets them on request)."""
    problems = []
    for method, model in _maps(searches).items():
        key = map_state_key(method)
        state = states.get(key)
        if state is None:
            model.fresh_resume()
            continue
        try:
            model.restore(state)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append((key, unreadable(exc)))
    return problems
