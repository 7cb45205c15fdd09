"""Warm starts: the points a cell in its start tries first, from what the study already knows.

Knowledge shared across cells: while a cell is in its start, its first points are the best points
found so far in its neighbouring cells of the same method (the 8 around it on the tilt grid), best
first, then the best points of the nearest cell of an earlier study (a ``--warm-start`` store, or
the rung below on the resolution ladder); only then the design (``[budget] warm_start``). A cell
whose neighbours' results already reach it through a shared model (the map's GP) starts only from
the earlier study's ``MAP_WARM_POINTS`` best points there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tomosweep.search.base import Search

Key = tuple[str, int, int]  # (method, n_haadf, n_chem)
Cell = tuple[int, int]

MAP_WARM_POINTS = 2  # with a map's GP, a cell starts from this many of an earlier study's best points


def nearest_cell(cells: Sequence[Cell], n_haadf: int, n_chem: int) -> Cell:
    """The grid cell nearest ``(n_haadf, n_chem)`` in log tilt counts (ties: fewer tilts)."""

    def distance(cell: Cell) -> tuple[float, int, int]:
        h, c = cell
        dh = math.log(max(h, 1) / max(n_haadf, 1))
        dc = math.log(max(c, 1) / max(n_chem, 1))
        return (round(dh * dh + dc * dc, 12), c, h)

    return min(cells, key=distance)


def neighbours(key: Key, cells: Sequence[Cell]) -> list[Key]:
    """The cells of the same method around ``key`` on the tilt grid (8-neighbourhood)."""
    method, h, c = key
    hs = sorted({cell[0] for cell in cells})
    cs = sorted({cell[1] for cell in cells})
    i, j = hs.index(h), cs.index(c)
    out = []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if (di or dj) and 0 <= i + di < len(hs) and 0 <= j + dj < len(cs):
                out.append((method, hs[i + di], cs[j + dj]))
    return out


def warm_points(
    key: Key,
    searches: Mapping[Key, Search],
    cells: Sequence[Cell],
    earlier: Sequence[tuple[str, Cell, Mapping[str, Any], float]],
) -> list[dict[str, float]]:
    """The points ``key``'s cell starts from (module docstring).

    Parameters
    ----------
    key
        ``(method, n_haadf, n_chem)``.
    searches
        Every cell's search (their :meth:`~tomosweep.search.base.Search.best` is read).
    cells
        The study's grid.
    earlier
        An earlier study's finished trials as ``(method, cell, params, value)``.
    """
    search = searches[key]
    bests = []
    for other in [] if search.shares_model else neighbours(key, cells):
        found = searches[other].best() if other in searches else None
        if found is not None:
            bests.append(found)
    points = [p for _, p in sorted(bests, key=lambda t: t[0])]
    method, h, c = key
    usable = [t for t in earlier if t[0] == method and all(n in t[2] for n in search.names)]
    if usable:
        # a study on another grid maps onto this one
        nearest = nearest_cell(sorted({(int(t[1][0]), int(t[1][1])) for t in usable}), h, c)
        ranked = sorted((t for t in usable if (int(t[1][0]), int(t[1][1])) == nearest), key=lambda t: t[3])
        points += [{n: t[2][n] for n in search.names} for t in ranked]
    return points[:MAP_WARM_POINTS] if search.shares_model else points
