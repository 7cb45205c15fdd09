"""The searched weights as a box: each one linear or logarithmic, real or whole, mapped onto [0, 1].

Every search works in the unit box: a weight with a ``log`` prior is spaced by its logarithm
(λ1 from 0.01 to 100 spans four decades, each as wide as the others), a ``linear`` one by its
value; a whole-number weight (iterations) is rounded when it comes back. The map is the one
scikit-optimize's normalised dimensions used (``Real``/``Integer`` with ``transform="normalize"``),
so the nominees that stores of earlier versions keep in this box mean the same point here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SAME = 1e-9  # two points closer than this in the unit box are the same point

Point = list[float]  # one value per searched weight, in the search's order


@dataclass(frozen=True)
class Dimension:
    """One searched weight.

    Attributes
    ----------
    name : str
        The weight's name.
    low, high : float
        Its bounds (inclusive).
    log : bool
        Spaced by its logarithm in the unit box.
    integer : bool
        A whole number (rounded when it leaves the box).
    """

    name: str
    low: float
    high: float
    log: bool
    integer: bool

    def _span(self) -> tuple[float, float]:
        if self.log:
            return math.log10(self.low), math.log10(self.high)
        return float(self.low), float(self.high)

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """Values of the weight as coordinates in [0, 1]."""
        values = np.asarray(values, dtype=float)
        if self.integer:
            values = np.round(values)
        low, high = self._span()
        if high == low:
            return values * 0.0
        return ((np.log10(values) if self.log else values) - low) / (high - low)

    def from_unit(self, x: np.ndarray) -> np.ndarray:
        """Coordinates in [0, 1] as values of the weight (clipped to its bounds, whole if it is whole)."""
        low, high = self._span()
        raw = np.asarray(x, dtype=float) * (high - low) + low
        values = np.clip(10.0**raw if self.log else raw, self.low, self.high)
        return np.round(values) if self.integer else values


class Space:
    """The box of a search: ``name -> (low, high, prior, kind)``, prior ``"log"`` or ``"linear"``, kind
    ``"real"`` or ``"int"`` (the study file's ranges).

    Parameters
    ----------
    ranges : mapping
        The searched weights in the order the search keeps them.
    """

    def __init__(self, ranges: Mapping[str, tuple[float, float, str, str]]) -> None:
        self.dims = tuple(
            Dimension(
                name,
                int(low) if kind == "int" else float(low),
                int(high) if kind == "int" else float(high),
                prior == "log",
                kind == "int",
            )
            for name, (low, high, prior, kind) in ranges.items()
        )
        self.names = tuple(d.name for d in self.dims)
        self.is_int = tuple(d.integer for d in self.dims)
        ints = all(self.is_int)
        self.size = math.prod(int(d.high) - int(d.low) + 1 for d in self.dims) if ints else math.inf

    @property
    def n_dims(self) -> int:
        """Searched weights."""
        return len(self.dims)

    def cast(self, point: Sequence[float]) -> list[float]:
        """A point with its whole-number weights rounded to ``int``."""
        return [int(round(v)) if d.integer else float(v) for v, d in zip(point, self.dims, strict=True)]

    def point(self, params: Mapping[str, float]) -> list[float]:
        """The point of a parameter table, in the search's order."""
        return self.cast([params[name] for name in self.names])

    def to_unit(self, points: Iterable[Sequence[float]]) -> np.ndarray:
        """Points (rows of weights) as rows of unit-box coordinates, shape ``(n, n_dims)``."""
        rows = np.asarray([list(p) for p in points], dtype=float).reshape(-1, self.n_dims)
        if rows.size == 0:
            return np.empty((0, self.n_dims))
        return np.stack([d.to_unit(rows[:, k]) for k, d in enumerate(self.dims)], axis=1)

    def from_unit(self, x: np.ndarray) -> list[float]:
        """One unit-box point as weights (clipped, whole numbers cast)."""
        x = np.asarray(x, dtype=float).reshape(self.n_dims)
        return self.cast([float(d.from_unit(x[k])) for k, d in enumerate(self.dims)])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points drawn uniformly in the unit box (log weights uniformly in their logarithm),
        whole-number weights snapped to the values they stand for; unit coordinates ``(n, n_dims)``."""
        u = rng.random((n, self.n_dims))
        for k, d in enumerate(self.dims):
            if d.integer:
                u[:, k] = d.to_unit(d.from_unit(u[:, k]))
        return u

    def untaken(self, taken: set[tuple[float, ...]]) -> np.ndarray:
        """Every point of an all-integer box not in ``taken``, as unit coordinates."""
        grid = itertools.product(*(range(int(d.low), int(d.high) + 1) for d in self.dims))
        return self.to_unit([p for p in grid if tuple(p) not in taken])

    def is_taken(self, x: np.ndarray, taken_unit: np.ndarray) -> bool:
        """Whether the weights that unit point ``x`` stands for are among ``taken_unit`` (unit rows)."""
        if taken_unit.size == 0:
            return False
        back = self.to_unit([self.from_unit(x)])[0]
        return bool(np.min(np.max(np.abs(taken_unit - back), axis=1)) < SAME)
