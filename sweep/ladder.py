"""The resolution ladder: search the same map at smaller sizes of the specimen first.

``[budget] ladder = [16, 24]`` makes a study of 32³ search its whole map at 16³, then at
24³, then at 32³. Each rung is a study of its own — the same specimen, grid, methods,
ranges and seeds at the rung's size, ``ladder_trials`` per cell (default 2) — stored as
a complete tomosweep store inside the study's store directory, under ``ladder/<size>``,
so a rung is resumed, checked and exported like any store. Each rung, and then the study
at its own size, starts every cell from the best points of the rung below at that cell
(warm starts, as ``--warm-start`` gives), then searches as the study says.

Why it could pay: a trial's cost grows as the cube of the size (voxels; the tilts are the
cell's), and the weights are relative to a balance point the solver computes from the
data, so the best relative weights should move little with size. Measured
(``benchmarks/map_cost.py --only ladder``, 4 × 4 fused maps, 16³ → 24³): the 16³ best
weights score 1.09-1.12× the 24³ best at 24³ (the best ``lambda_tv`` grows about as n²),
and since the map surrogate already needs only a few trials per cell, a ladder with 2 rung
trials per cell cost 0.60× the core-seconds of a direct search to the same quality on one
specimen and 1.44× on the other (4 rung trials: 1.63× and worse). It is therefore opt-in.
Size as one more context dimension of the map's GP, instead of warm starts, has not been
tried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from tomosweep.errors import SpecError
from tomosweep.results import SweepStore, TrialRecord
from tomosweep.sweep.spec import Study, check_extension, study_from_dict

log = logging.getLogger(__name__)

LADDER_DIR = "ladder"


def rung_study(study: Study, size: int) -> Study:
    """``study`` at specimen size ``size``: one rung of its ladder (no ladder of its own)."""
    data = study.to_json()
    data["name"] = f"{study.name}@{size}"
    data["phantom"] = {**data["phantom"], "size": size}
    trials = study.budget.rung_trials()
    data["budget"] = {
        **data["budget"],
        "trials_per_cell": trials,
        "initial_points": min(study.budget.initial_points, trials),
        "ladder": [],
        "ladder_trials": None,
        "total": None,
    }
    return study_from_dict(data, source=f"{study.name}, ladder rung {size}")


def rung_path(store: str | Path, size: int) -> Path:
    """Where the rung of ``size`` is stored: inside the study's store directory."""
    return Path(store) / LADDER_DIR / str(size)


def stored_rungs(store: str | Path) -> list[tuple[int, Path, int]]:
    """The ladder rungs stored inside ``store``: (size, path, committed trials), smallest first."""
    folder = Path(store) / LADDER_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        with SweepStore.open(path) as rung:
            found.append((int(path.name), path, rung.n_committed))
    return found


RunRung = Callable[[Study, SweepStore, list[TrialRecord]], object]


def climb(
    study: Study,
    store: str | Path,
    run: RunRung,
    *,
    create: Callable[[Study, Path], SweepStore],
) -> list[TrialRecord]:
    """Run (or resume) every rung of ``study``'s ladder, smallest first; return the top
    rung's finished trials, the warm starts of the study at its own size.

    ``run(rung_study, open_store, warm_from)`` runs a rung's remaining budget on the
    caller's cluster; ``create(rung_study, path)`` makes a new rung store. A stored rung
    whose study differs from the one the ladder now asks for is refused, not mixed in.
    """
    earlier: list[TrialRecord] = []
    for size in study.budget.ladder:
        rung = rung_study(study, size)
        path = rung_path(store, size)
        if path.exists():
            opened = SweepStore.open(path, writable=True)
            try:
                _follow(opened, rung, path)
            except BaseException:
                opened.close()
                raise
        else:
            path.parent.mkdir(exist_ok=True)
            opened = create(rung, path)
        with opened:
            log.info(
                "ladder rung %d³: %d trials stored, %d per cell", size, opened.n_committed, rung.budget.trials_per_cell
            )
            run(rung, opened, earlier)
            earlier = [r for r in opened.records() if r.ok]
    return earlier


def _follow(opened: SweepStore, rung: Study, path: Path) -> None:
    """Bring a stored rung up to the rung the study now asks for: the same, or extended
    as ``resume --extend`` extends a study (a larger budget, a grown grid); else refuse."""
    if opened.spec_hash == rung.content_hash():
        opened.rebuild_maps()  # the driver may have died between a commit and its map update
        return
    stored = study_from_dict(opened.spec, source=f"{path} (stored ladder rung)")
    try:
        check_extension(stored, rung)
    except SpecError as exc:
        raise SpecError(f"the ladder rung stored at {path} was made for another study: {exc}") from None
    opened.update_study(
        spec=rung.to_json(),
        spec_hash=rung.content_hash(),
        n_haadf=rung.acquisition.n_haadf,
        n_chem=rung.acquisition.n_chem,
    )
