"""One surrogate per method for the whole map: contextual Bayesian optimisation.

Every cell of a study searches the same weights, and the best weights move smoothly
across the (HAADF tilts × chemical tilts) grid, so what one cell learns is evidence for
the others. :class:`MapSurrogate` fits one Gaussian process per method over

    (searched weights in the optimiser's [0, 1] space, log n_haadf, log n_chem),

the tilt counts scaled onto [0, 1] over the study's grid, on every finished trial of
the method (and, for the proposal fit, on every trial in flight in any cell, told a
lie as in :mod:`tomosweep.sweep.optimizer`). An ask for a cell maximises the
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
from typing import TYPE_CHECKING, Any

import numpy as np

from tomosweep.sweep.optimizer import ACQ_FUNCS, derived_seed, hedge_reward

if TYPE_CHECKING:
    from tomosweep.sweep.optimizer import CellOptimizer

Cell = tuple[int, int]

MAX_POINTS = 300  # points of the local GP of one ask (an exact fit on 300 points takes ~0.3 s)
N_CANDIDATES = 2_000  # random candidates per ask (a cell's own GP uses skopt's 10 000)


def map_state_key(method: str) -> str:
    """Where a method's map surrogate keeps its state among the stored optimiser states."""
    return f"{method}/map"


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

    def attach(self, cell: Cell, opt: CellOptimizer) -> None:
        """Make ``opt`` (the cell's optimiser) ask through this map."""
        self.opts[cell] = opt
        opt.map = self
        opt.cell = cell

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "n_asked": 0,
            "gains": [float(g) for g in self.gains],
            "nominees": None if self.nominees is None else self.nominees.tolist(),
            "rewarded_at": self._rewarded_at,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        gains = np.asarray(state["gains"], dtype=float)
        if gains.shape != (len(ACQ_FUNCS),) or not np.all(np.isfinite(gains)):
            raise ValueError(f"stored GP-Hedge gains must be {len(ACQ_FUNCS)} finite numbers, got {state['gains']!r}")
        self.gains = gains
        nominees = state.get("nominees")
        self.nominees = None if nominees is None else np.asarray(nominees, dtype=float).reshape(len(ACQ_FUNCS), -1)
        self._rewarded_at = int(state.get("rewarded_at", 0))

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

    def fit(self, X: np.ndarray, Y: np.ndarray, seed: int) -> Any:
        from skopt.space import Real, Space
        from skopt.utils import cook_estimator

        space = Space([Real(0.0, 1.0) for _ in range(X.shape[1])])
        model = cook_estimator("GP", space=space, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hyper-parameter convergence notes on small, noisy data
            model.fit(X, Y)
        return model

    # ------------------------------------------------------------------ asking

    def propose(
        self, opt: CellOptimizer, seed: int, taken: set[tuple[float, ...]]
    ) -> tuple[list[float] | None, str, float | None]:
        """A point for ``opt``'s cell, the acquisition that chose it, and the expected
        improvement there in log NRMSE (about the relative improvement) at the EI nominee."""
        cell = opt.cell
        z = self.context(cell)
        pending_near = any(self.opts[k].pending for k in self.local_cells(cell))
        X, Y, own = self.training_set(cell, with_pending=True)
        model = self.fit(X, Y, seed)
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
        # the cell's own best; a cell with no result yet compares with the map's best guess there
        incumbent = float(np.min(Y[own])) if own else float(np.min(at.predict(candidates)))
        taken_t = opt._space.transform([list(p) for p in taken]) if taken else np.empty((0, candidates.shape[1]))
        nominees, points = [], []
        for acq in ACQ_FUNCS:
            x = opt._optimise(acq, at, incumbent, candidates, taken_t)
            nominees.append(x)
            points.append(None if x is None else opt._cast(opt._space.inverse_transform(x[None, :])[0]))
        valid = [i for i, p in enumerate(points) if p is not None and tuple(p) not in taken]
        if not valid:
            return None, "random", None
        fallback = nominees[valid[0]]
        placed = [x if x is not None else fallback for x in nominees]
        self.nominees = np.array([np.concatenate([x, z]) for x in placed])
        from skopt.acquisition import gaussian_ei

        ei = float(np.ravel(gaussian_ei(placed[0][None, :], at, y_opt=incumbent, xi=0.0))[0])
        logits = self.gains - self.gains.max()
        probs = np.exp(self.eta * logits)
        probs[[i for i in range(len(ACQ_FUNCS)) if i not in valid]] = 0.0
        probs /= probs.sum()
        choice = int(rng.choice(len(ACQ_FUNCS), p=probs))
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


def restore_maps(opts: Mapping[Any, CellOptimizer], states: Mapping[str, Any]) -> None:
    """Give each map surrogate behind ``opts`` its stored state (resume); a store without
    one (a study that ran with per-cell surrogates until now) starts with fresh gains."""
    from tomosweep.errors import StoreError

    for method, surrogate in _maps(opts).items():
        state = states.get(map_state_key(method))
        if state is None:
            surrogate._rewarded_at = surrogate.n_finished
            continue
        try:
            surrogate.restore(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(
                f"the stored state of the {method} map surrogate is unreadable ({exc}); the trials are intact: "
                f'deleting "{map_state_key(method)}" from the "optimiser" attribute restarts it from them'
            ) from None
