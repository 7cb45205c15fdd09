"""Distances on the tilt grid: which stored cell stands in for a given pair of tilt counts."""

from __future__ import annotations

import math


def nearest_cell(cells: list[tuple[int, int]], n_haadf: int, n_chem: int) -> tuple[int, int]:
    """The grid cell nearest ``(n_haadf, n_chem)`` in log tilt counts (ties: fewer tilts)."""

    def distance(cell: tuple[int, int]) -> tuple[float, int, int]:
        h, c = cell
        dh = math.log(max(h, 1) / max(n_haadf, 1))
        dc = math.log(max(c, 1) / max(n_chem, 1))
        return (round(dh * dh + dc * dc, 12), c, h)

    return min(cells, key=distance)
