"""Proposals only: where the next trial of a cell should go.

Every search answers one interface, :class:`Search` (ask, tell, forget, done, state, validate,
restore): the cell's own GP (:class:`CellGP`), a cell of its method's map-wide GP
(:class:`MapCell` asking a :class:`MapGP`) and random search (:class:`RandomSearch`); the warm
starts a cell begins with come from :func:`warm_points`. This room knows no store, no Dask and no
study file; it imports nothing of the project but the errors.
"""

from tomosweep.search.base import Proposal, Search
from tomosweep.search.cell import CellGP, RandomSearch, cell_search
from tomosweep.search.map import MapCell, MapGP, map_searches
from tomosweep.search.warm import nearest_cell, warm_points

__all__ = [
    "CellGP",
    "MapCell",
    "MapGP",
    "Proposal",
    "RandomSearch",
    "Search",
    "cell_search",
    "map_searches",
    "nearest_cell",
    "warm_points",
]
