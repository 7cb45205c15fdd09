"""One Bayesian optimiser per (method, cell), asynchronous by constant liar.

scikit-optimize's ``Optimizer`` (GP, Matern kernel, ``acq_func="gp_hedge"``) is used
as a *stateless* proposal function: for every new point a fresh optimiser is told all
finished results plus, for each trial still running, a constant lie (Ginsbourger et
al. 2010), in one ``tell(X, Y)``, and asked once. This is deliberate:

- skopt's own ``ask(n_points)`` keeps its lies in a throw-away copy, and a plain
  ``ask()`` without a ``tell`` returns the same cached point; keeping the pending set
  here and applying the lie per point is what makes asynchronous asks diverse;
- the zarr store is the source of truth, so resuming is the same call as asking;
- each fit is O(n³); one fit per ask with ``model_queue_size=1`` keeps the driver lean.

Failed trials are told a penalty, the worst finished NRMSE of the cell (at least
``PENALTY_FLOOR``, the NRMSE of an uncorrelated guess is √2), so the GP learns to
avoid that region without one huge value flattening the surface.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

PENALTY_FLOOR = 1.5


def derived_seed(*parts: Any) -> int:
    """A stable 32-bit seed from any printable parts (same inputs → same seed, any process)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


class CellOptimizer:
    """Asks parameter points for one (method, cell) and learns from finished trials.

    Parameters
    ----------
    space
        ``name -> (low, high, prior, kind)``, prior ``"log"`` or ``"linear"``, kind
        ``"real"`` or ``"int"``.
    n_initial
        Random points before the GP takes over.
    seed
        Seeds every random draw and every fit: the sequence of points depends only on
        the seed and the order of results.
    liar
        ``cl_min`` (skopt's default), ``cl_mean`` or ``cl_max``.
    """

    def __init__(
        self,
        space: Mapping[str, tuple[float, float, str, str]],
        *,
        n_initial: int,
        seed: int,
        liar: Literal["cl_min", "cl_mean", "cl_max"] = "cl_min",
    ) -> None:
        from skopt.space import Integer, Real, Space

        self.names = tuple(space)
        dims = []
        for name, (low, high, prior, kind) in space.items():
            skprior = "log-uniform" if prior == "log" else "uniform"
            if kind == "int":
                dims.append(Integer(int(low), int(high), prior=skprior, name=name))
            else:
                dims.append(Real(float(low), float(high), prior=skprior, name=name))
        self._space = Space(dims)
        self._dims = dims
        self._is_int = tuple(isinstance(d, Integer) for d in dims)
        self.n_initial = int(n_initial)
        self.seed = int(seed)
        self.liar = liar
        self.X: list[list[float]] = []
        self.Y: list[float | None] = []  # None = failed trial, told as a penalty
        self.pending: dict[Any, list[float]] = {}
        self.n_asked = 0

    # ------------------------------------------------------------------ state

    def tell(self, params: Mapping[str, float], nrmse: float | None, *, key: Any = None) -> None:
        """Record a finished (``nrmse``) or failed (``None`` / non-finite) trial."""
        self.pending.pop(key, None)
        self.X.append(self._point(params))
        self.Y.append(float(nrmse) if nrmse is not None and math.isfinite(nrmse) else None)

    def forget(self, key: Any) -> None:
        """Drop a pending point without a result (its trial will be asked again)."""
        self.pending.pop(key, None)

    @property
    def n_told(self) -> int:
        return len(self.X)

    def best(self) -> tuple[dict[str, float], float] | None:
        finished = [(y, x) for x, y in zip(self.X, self.Y, strict=True) if y is not None]
        if not finished:
            return None
        y, x = min(finished, key=lambda t: t[0])
        return dict(zip(self.names, x, strict=True)), y

    def _point(self, params: Mapping[str, float]) -> list[float]:
        return [
            int(round(params[name])) if is_int else float(params[name])
            for name, is_int in zip(self.names, self._is_int, strict=True)
        ]

    def _told_values(self) -> list[float]:
        finished = [y for y in self.Y if y is not None]
        penalty = max([PENALTY_FLOOR, *finished])
        return [y if y is not None else penalty for y in self.Y]

    def _lie(self, told: Sequence[float]) -> float:
        finished = [y for y in self.Y if y is not None] or list(told)
        if self.liar == "cl_min":
            return min(finished)
        if self.liar == "cl_max":
            return max(finished)
        return float(np.mean(finished))

    # ------------------------------------------------------------------ asking

    def ask(self, key: Any = None) -> dict[str, float]:
        """A new point; it stays pending under ``key`` until :meth:`tell` or :meth:`forget`."""
        seed = derived_seed(self.seed, self.n_asked)
        self.n_asked += 1
        if self.n_told + len(self.pending) < self.n_initial or self.n_told == 0:
            point = self._space.rvs(n_samples=1, random_state=seed)[0]
        else:
            point = self._gp_point(seed)
        point = [int(v) if is_int else float(v) for v, is_int in zip(point, self._is_int, strict=True)]
        self.pending[key] = point
        return dict(zip(self.names, point, strict=True))

    def _gp_point(self, seed: int) -> list[Any]:
        from skopt import Optimizer

        told = self._told_values()
        lie = self._lie(told)
        X = self.X + list(self.pending.values())
        Y = told + [lie] * len(self.pending)
        opt = Optimizer(
            self._dims,
            base_estimator="GP",
            acq_func="gp_hedge",
            acq_optimizer="sampling",
            n_initial_points=0,
            random_state=seed,
            model_queue_size=1,
        )
        with warnings.catch_warnings():
            # a repeated point ("evaluated before") and GP hyper-parameter convergence
            # notes are expected on small, noisy data and are not errors
            warnings.simplefilter("ignore")
            opt.tell(X, Y)
            return list(opt.ask())
