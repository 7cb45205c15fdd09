"""One surrogate per method for the whole map: contextual Bayesian optimisation.

Every cell of a study searches the same weights, and the best weights move smoothly
across the (HAADF tilts × chemical tilts) grid, so what one cell learns is evidence for
the others. :class:`MapSurrogate` fits one Gaussian process per method over

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

The state that resume needs (gains, last nominees, the reward counter) is plain JSON
with the same keys as a cell optimiser's, stored under ``method/map``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from tomosweep.search.cell import (
    ACQ_FUNCS,
    CellOptimizer,
    derived_seed,
    hedge_choice,
    hedge_reward,
    stored_count,
    stored_gains,
    stored_nominees,
    unreadable,
)

Cell = tuple[int, int]

MAX_POINTS = 300  # points of the local GP of one ask (an exact fit on 300 points takes ~0.3 s)
CONTEXT_MIN_LENGTH = 0.3  # on the [0, 1] context axes: a 4-cell axis has cells 1/3 apart
TUNE_POINTS = 120  # points the hyper-parameters are estimated on
N_CANDIDATES = 2_000  # random candidates per ask (a cell's own GP uses skopt's 10 000)


def map_state_key(method: str) -> str:
    """Where a method's map surrogate keeps its state among the stored optimiser states."""
    return f"{method}/map"


def _map_kernel(n_dims: int) -> Any:
    """shape + level + noise: a Matern 5/2 over weights and context (one length scale
    each, skopt's bounds), plus a Matern 5/2 over the context alone — the level of a
    cell's NRMSE moves with its tilt counts far more than the shape of its surface
    does (more tilts, lower NRMSE everywhere), and a product kernel alone could only
    fit that with short context length scales, making the cells strangers again."""
    # deferred: skopt pulls scikit-learn
    from skopt.learning.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

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
    return shape + level + WhiteKernel()


def _map_gp(n_dims: int, seed: int, theta: Sequence[float] | None) -> Any:
    from skopt.learning import GaussianProcessRegressor  # deferred: skopt pulls scikit-learn

    kernel = _map_kernel(n_dims)
    if theta is not None:
        kernel = kernel.clone_with_theta(np.asarray(theta, dtype=float))
    return GaussianProcessRegressor(
        kernel=kernel,
        normalize_y=True,
        noise="gaussian",
        n_restarts_optimizer=2 if theta is None else 0,
        random_state=seed,
    )


# log units: a stored hyper-parameter this far beyond its kernel's bounds was not fitted here
THETA_SLACK = 2.0


def _stored_theta(raw: Any, n_dims: int | None) -> list[float] | None:
    """The GP's stored log hyper-parameters: finite numbers, each within (a little beyond) its
    kernel's bounds; None when there are none. A list of another length is kept: :meth:`MapSurrogate.fit`
    estimates fresh ones then, as for a grid of another shape."""
    if raw is None:
        return None
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValueError(f"stored GP hyper-parameters must be a list of numbers, got {str(raw)[:80]!r}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in raw):
        raise ValueError(f"stored GP hyper-parameters must be finite numbers, got {str(raw)[:80]}")
    theta = [float(v) for v in raw]
    if n_dims is not None:
        bounds = _map_kernel(n_dims).bounds
        if len(theta) == len(bounds):
            outside = [
                k
                for k, (v, (lo, hi)) in enumerate(zip(theta, bounds, strict=True))
                if not lo - THETA_SLACK <= v <= hi + THETA_SLACK
            ]
            if outside:
                raise ValueError(
                    f"stored GP hyper-parameter {outside[0]} is {theta[outside[0]]:g}, far outside its kernel's "
                    f"bounds ({bounds[outside[0]][0]:.3g} to {bounds[outside[0]][1]:.3g} in log units)"
                )
    return theta


class _AtContext:
    """A fitted GP seen as a function of the weights alone, the context held fixed.

    skopt's acquisition functions call ``predict`` with gradient flags; the gradients
    of the full model are cut to the weights' dimensions.
    """

    def __init__(self, model: Any, context: np.ndarray) -> None:
        self.model = model
        self.context = context

    def predict(
        self,
        X: np.ndarray,
        return_std: bool = False,
        return_cov: bool = False,
        return_mean_grad: bool = False,
        return_std_grad: bool = False,
    ) -> Any:
        X = np.atleast_2d(X)
        d = X.shape[1]
        full = np.hstack([X, np.tile(self.context, (len(X), 1))])
        out = self.model.predict(
            full, return_std=return_std, return_mean_grad=return_mean_grad, return_std_grad=return_std_grad
        )
        if not (return_std or return_mean_grad or return_std_grad):
            return out
        out = list(out)
        index = 1 + int(return_std)
        if return_mean_grad:
            out[index] = np.asarray(out[index])[..., :d]
            index += 1
        if return_std_grad:
            out[index] = np.asarray(out[index])[..., :d]
        return tuple(out)


class MapSurrogate:
    """The whole map's GP for one method; cell optimisers attach to it and ask through it.

    Parameters
    ----------
    cells
        The study's grid cells ``(n_haadf, n_chem)``.
    seed
        Seeds the fits (with the asking cell's own ask seed).
    eta
        GP-Hedge's learning rate.
    max_points
        Most trials one ask's local GP is fitted on (nearest cells first).
    """

    def __init__(self, cells: Sequence[Cell], *, seed: int, eta: float = 1.0, max_points: int = MAX_POINTS) -> None:
        self.seed = int(seed)
        self.method = ""
        self.eta = float(eta)
        self.max_points = int(max_points)
        self.opts: dict[Cell, CellOptimizer] = {}
        hs = sorted({h for h, _ in cells})
        cs = sorted({c for _, c in cells})
        self._h_index = {h: i for i, h in enumerate(hs)}
        self._c_index = {c: j for j, c in enumerate(cs)}
        self._log_h = (math.log(hs[0]), math.log(hs[-1]))
        self._log_c = (math.log(cs[0]), math.log(cs[-1]))
        self.gains = np.zeros(len(ACQ_FUNCS))
        self.nominees: np.ndarray | None = None  # (3, d + 2): weights and context
        self._rewarded_at = 0
        self.theta: list[float] | None = None  # the GP's log hyper-parameters, last estimate
        self._tuned_at = 0  # results told when they were estimated

    def attach(self, cell: Cell, opt: CellOptimizer) -> None:
        """Make ``opt`` (the cell's optimiser) ask through this map."""
        self.opts[cell] = opt
        opt.map = self
        opt.cell = cell

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """What resuming needs, as JSON values: GP-Hedge gains and nominees, the last reward and tuning."""
        return {
            "n_asked": 0,
            "gains": [float(g) for g in self.gains],
            "nominees": None if self.nominees is None else self.nominees.tolist(),
            "rewarded_at": self._rewarded_at,
            "theta": self.theta,
            "tuned_at": self._tuned_at,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a stored :meth:`state` (resume).

        Parameters
        ----------
        state : mapping
            What :meth:`state` returned.

        Raises
        ------
        ValueError
            Where a stored value is not one this surrogate could continue from: gains or
            hyper-parameters that are not finite numbers (or lie far outside the kernel's
            bounds), nominees outside the search's [0, 1] box, counters that are not whole
            numbers. Nothing is taken then.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"a stored search state is a table, got {type(state).__name__}")
        gains = stored_gains(state)
        n_dims = self._n_dims()
        nominees = state.get("nominees")
        if n_dims is not None:
            nominees = stored_nominees(state, n_dims)
        elif nominees is not None:
            nominees = np.asarray(nominees, dtype=float).reshape(len(ACQ_FUNCS), -1)
        rewarded_at = stored_count(state, "rewarded_at", 0)
        tuned_at = stored_count(state, "tuned_at", 0)
        theta = _stored_theta(state.get("theta"), n_dims)
        self.gains, self.nominees, self._rewarded_at = gains, nominees, rewarded_at
        self.theta, self._tuned_at = theta, tuned_at

    def _n_dims(self) -> int | None:
        """Dimensions of the map's GP inputs (weights and the two context axes); None before any cell attached."""
        opt = next(iter(self.opts.values()), None)
        return None if opt is None else len(opt.names) + 2

    @property
    def n_finished(self) -> int:
        """Results told to the map (failures included: they are told a penalty)."""
        return sum(o.n_told for o in self.opts.values())

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

        order = sorted(self.opts, key=lambda k: (ring(k), k))
        out, count = [], 0
        for r in sorted({ring(k) for k in order}):
            members = [k for k in order if ring(k) == r]
            size = sum(self.opts[k].n_told + len(self.opts[k].pending) for k in members)
            if r > 1 and count + size > self.max_points:
                break
            out += members
            count += size
        return out

    def training_set(self, cell: Cell, *, with_pending: bool) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Inputs (weights in [0, 1], context), warped targets, and the index of the
        rows that are the asking cell's own finished trials."""
        rows: list[np.ndarray] = []
        targets: list[float] = []
        own: list[int] = []
        cells = self.local_cells(cell)
        per_cell = []
        for other in cells:
            opt = self.opts[other]
            z = self.context(other)
            told = opt._warped(opt._told_values()) if opt.n_told else []
            X = [*opt.X]
            Y = list(told)
            if with_pending and opt.pending:
                lies = opt._warped([opt._lie(opt._told_values())] * len(opt.pending)) if opt.n_told else None
                if lies is None:  # a cell with no result yet: the lie of the whole neighbourhood
                    finished = [y for k in cells for y in self.opts[k].Y if y is not None]
                    lies = opt._warped([min(finished) if finished else 1.0] * len(opt.pending))
                X += list(opt.pending.values())
                Y += lies
            per_cell.append((other, opt, z, X, Y))
        n_all = sum(len(X) for *_, X, _ in per_cell)
        for other, opt, z, X, Y in per_cell:
            if not X:
                continue
            keep = range(len(X))
            if other != cell and n_all > self.max_points:
                # thin a crowded first ring evenly (deterministic), never the asking cell
                share = max(1, int(len(X) * (self.max_points - len(self.opts[cell].X)) / max(n_all, 1)))
                keep = np.unique(np.linspace(0, len(X) - 1, share).round().astype(int)).tolist()
            Xt = opt._space.transform([X[k] for k in keep])
            for row, k in zip(Xt, keep, strict=True):
                if other == cell and k < opt.n_told and opt.Y[k] is not None:
                    own.append(len(rows))
                rows.append(np.concatenate([row, z]))
                targets.append(Y[k])
        return np.array(rows), np.array(targets), own

    def fit(self, X: np.ndarray, Y: np.ndarray, seed: int, *, tune: bool = False) -> Any:
        """The GP on ``(X, Y)``; its hyper-parameters are the map's :attr:`theta`,
        estimated by maximum likelihood only when ``tune`` or when there are none yet
        (from the last estimate, with no random restarts once there is one, on at most
        ``TUNE_POINTS`` points evenly thinned). Estimating them is what costs (~200
        likelihood evaluations, each cubic in the points); a fit with them held is one
        Cholesky factorisation."""
        fresh = self.theta is None or len(self.theta) != len(_map_kernel(X.shape[1]).theta)
        if fresh or tune:
            model = _map_gp(X.shape[1], seed, None if fresh else self.theta)
            keep = np.unique(np.linspace(0, len(X) - 1, min(len(X), TUNE_POINTS)).round().astype(int))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # hyper-parameter convergence notes on small, noisy data
                model.fit(X[keep], Y[keep])
            # skopt zeroes the fitted white noise for prediction and keeps it in noise_
            noise = math.log(max(float(model.noise_ or 1e-5), 1e-5))
            self.theta = [*(float(v) for v in model.kernel_.k1.theta), noise]
            self._tuned_at = self.n_finished
        model = _map_gp(X.shape[1], seed, self.theta)
        model.optimizer = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, Y)
        return model

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
        self, opt: CellOptimizer, seed: int, taken: set[tuple[float, ...]]
    ) -> tuple[list[float] | None, str, float | None]:
        """A point for ``opt``'s cell, the acquisition that chose it, and the expected
        improvement there in log NRMSE (about the relative improvement) at the EI nominee."""
        cell = opt.cell
        assert cell is not None  # the map's optimisers are made for their cells
        z = self.context(cell)
        pending_near = any(self.opts[k].pending for k in self.local_cells(cell))
        X, Y, own = self.training_set(cell, with_pending=True)
        model = self.fit(X, Y, seed, tune=self._tune_now())
        reward_seed = derived_seed(seed, "reward")
        if self.nominees is not None and self.n_finished > self._rewarded_at:
            finished_model = model
            if pending_near:
                Xf, Yf, _ = self.training_set(cell, with_pending=False)
                finished_model = self.fit(Xf, Yf, reward_seed)
            if self.nominees.shape[1] == X.shape[1]:
                self.gains = self.gains + hedge_reward(finished_model.predict(self.nominees), warp=opt.warp)
            self._rewarded_at = self.n_finished

        at = _AtContext(model, z)
        rng = np.random.default_rng(seed)
        candidates = opt._space.transform(opt._space.rvs(N_CANDIDATES, random_state=int(rng.integers(2**31))))
        taken_t = opt._space.transform([list(p) for p in taken]) if taken else np.empty((0, candidates.shape[1]))
        if not own and not opt.pending:
            # a cell's first point is a warm start from the whole map: its best mean there
            for index in np.argsort(at.predict(candidates)):
                if not opt._is_taken(candidates[index], taken_t):
                    # skopt's rows are inferred as None (its transpose fills a list made of Nones)
                    row = cast("list[Any]", opt._space.inverse_transform(candidates[index][None, :])[0])
                    point = opt._cast(row)
                    return point, "warm-start", None
        # the cell's own best; a cell with no result yet compares with the map's best guess there
        incumbent = float(np.min(Y[own])) if own else float(np.min(at.predict(candidates)))
        placed, points, valid = opt.nominate(at, incumbent, candidates, taken_t, taken)
        if not valid:
            return None, "random", None
        self.nominees = np.array([np.concatenate([x, z]) for x in placed])
        from skopt.acquisition import gaussian_ei  # deferred: skopt pulls scikit-learn

        ei = float(np.ravel(gaussian_ei(placed[0][None, :], at, y_opt=incumbent, xi=0.0))[0])
        choice = hedge_choice(self.gains, self.eta, valid, rng)
        return points[choice], ACQ_FUNCS[choice], ei


def attach_map(method: str, opts: Mapping[Cell, CellOptimizer], *, seed: int) -> MapSurrogate:
    """One map surrogate for ``method``'s cell optimisers (``{(n_haadf, n_chem): opt}``)."""
    surrogate = MapSurrogate(list(opts), seed=derived_seed(seed, "map", method))
    surrogate.method = method
    for cell, opt in opts.items():
        surrogate.attach(cell, opt)
    return surrogate


def _maps(opts: Mapping[Any, CellOptimizer]) -> dict[str, MapSurrogate]:
    found: dict[str, MapSurrogate] = {}
    for opt in opts.values():
        if opt.map is not None:
            found.setdefault(opt.map.method, opt.map)
    return found


def map_states(opts: Mapping[Any, CellOptimizer]) -> dict[str, Any]:
    """The state of every map surrogate behind ``opts``, keyed as the store keeps it."""
    return {map_state_key(method): surrogate.state() for method, surrogate in _maps(opts).items()}


def restore_maps(opts: Mapping[Any, CellOptimizer], states: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Give each map surrogate behind ``opts`` its stored state (resume); a store without
    one (a study that ran with per-cell surrogates until now) starts with fresh gains.

    Returns ``(key, why)`` for each stored state the surrogate could not continue from; those
    surrogates are left fresh (the caller refuses, or resets them on request)."""
    problems = []
    for method, surrogate in _maps(opts).items():
        key = map_state_key(method)
        state = states.get(key)
        if state is None:
            surrogate._rewarded_at = surrogate.n_finished
            continue
        try:
            surrogate.restore(state)
        except (KeyError, TypeError, ValueError) as exc:
            problems.append((key, unreadable(exc)))
    return problems
