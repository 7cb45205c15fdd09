"""The optimiser's view of one cell: a GP fitted on its stored trials, and its landscape drawn.

Used by ``tomosweep export --cell`` (the ``objective_*.png`` figures) and by the live page
(:mod:`tomosweep.view`), which cannot draw it on its own: it needs the sweep's optimiser.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from tomosweep.errors import StoreError
from tomosweep.results import SweepStore
from tomosweep.results.export import objective_figure
from tomosweep.search.cell import CellGP
from tomosweep.sweep.spec import stored_study


def cell_surrogates(store: SweepStore, cell: tuple[int, int]) -> dict[str, Any]:
    """Per method, a GP fitted on one cell's stored trials (what its optimiser sees)."""
    store.cell_index(*cell)  # a clear error for a cell off the grid
    study = stored_study(store)  # without its plugins: only their trials and recorded kinds are needed
    records = store.records()
    out = {}
    for method in study.methods:
        ranges = study.searched(method)
        space = {n: (r.low, r.high, r.prior, study.param_kind(method, n)) for n, r in ranges.items()}
        opt = CellGP(space, n_initial=1, seed=study.seed)
        for r in records:
            if r.method == method and r.cell == tuple(cell):
                opt.tell(r.params, r.nrmse if r.ok else None)
        if opt.n_told < 2:
            raise StoreError(
                f"{method} has {opt.n_told} trial(s) at {cell[0]} × {cell[1]}; the objective plot needs at least 2"
            )
        out[method] = opt.surface()
    return out


def landscape_pngs(store: Path, cell: tuple[int, int]) -> list[tuple[str, bytes]]:
    """Each method's objective at ``cell`` as its GP sees it (the export's ``objective_*.png``), as PNG."""
    images = []
    with SweepStore.open(store) as opened:
        surrogates = cell_surrogates(opened, cell)
        for method, result in surrogates.items():
            title = f"{method}, {cell[0]} HAADF × {cell[1]} chemical tilts ({len(result.points)} trials)"
            fig = objective_figure(result, title)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
            images.append(
                (f"{method}: the GP's mean log NRMSE (partial dependence), trials as dots", buffer.getvalue())
            )
    return images
