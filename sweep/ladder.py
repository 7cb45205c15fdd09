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

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tomosweep.errors import SpecError, StoreError
from tomosweep.results import SweepStore, TrialRecord
from tomosweep.sweep.spec import Study, check_extension, study_from_dict

log = logging.getLogger(__name__)

LADDER_DIR = "ladder"
_HEARTBEAT = re.compile(r"\.?[1-9]\d*\.live\.json(\.\d+\.tmp)?")


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


@dataclass(frozen=True)
class LadderEntry:
    """One thing found under a store's ``ladder/``: a rung of its study (``problem`` empty) or
    not (a stray folder, a symbolic link, a half-created rung, a rung made for another study)."""

    name: str  # as a path under the store: "ladder/16"
    path: Path
    size: int | None  # the rung's size, None where the name is not one
    problem: str = ""  # what it is instead, to follow "<name> is "
    n_committed: int = 0
    half_created: bool = False  # a rung a driver stopped creating: it holds no trial


def _creation_leftovers(path: Path) -> bool:
    """Whether ``path`` holds only what creating a store writes before its first trial: metadata
    (``zarr.json``), the lock note and the grid. Such a folder holds no trial, so removing it
    loses nothing."""
    try:
        root = json.loads((path / "zarr.json").read_text()) if (path / "zarr.json").is_file() else {}
        attrs = root.get("attributes", {}) if isinstance(root, dict) else {}
    except (OSError, ValueError):
        attrs = {}
    if attrs.get("n_committed", 0) not in (0, None):
        return False
    for folder, dirs, files in os.walk(path):
        here = Path(folder).relative_to(path)
        if any((Path(folder) / d).is_symlink() for d in dirs):
            return False
        for name in files:
            in_grid = here.parts[:1] == ("grid",)
            if (Path(folder) / name).is_symlink() or not (
                name == "zarr.json" or in_grid or (here == Path(".") and name == ".tomosweep.lock")
            ):
                return False
    return True


def refuse_linked_ladder(store: str | Path, size: int | None = None) -> None:
    """Refuse a ``ladder/`` (or a rung folder) that is a symbolic link: a rung written there
    (its trials, lock, heartbeats) would land outside the store, wherever a received store points."""
    for path in (Path(store) / LADDER_DIR, *([rung_path(store, size)] if size is not None else [])):
        if path.is_symlink():
            raise StoreError(
                f"{path} is a symbolic link (to {os.readlink(path)}); tomosweep never creates or writes a ladder "
                f"rung through one. Replace it with a folder (or remove it) and resume"
            )


def survey_ladder(store: str | Path, study: Study | None) -> list[LadderEntry]:
    """Everything under ``store``'s ``ladder/``, each judged against the rungs ``study`` climbs
    (None: a study that could not be read; then each folder named by a size is audited as a
    rung, unjudged). Reads only."""
    folder = Path(store) / LADDER_DIR
    if folder.is_symlink():
        why = f"a symbolic link (to {os.readlink(folder)}); tomosweep never creates or writes a rung through one"
        return [LadderEntry(LADDER_DIR, folder, None, why)]
    if not folder.exists():
        return []
    if not folder.is_dir():
        return [LadderEntry(LADDER_DIR, folder, None, "not a folder")]
    sizes = list(study.budget.ladder) if study is not None else []
    entries = []
    for path in sorted(folder.iterdir(), key=lambda p: (not p.name.isdigit(), len(p.name), p.name)):
        if _HEARTBEAT.fullmatch(path.name):
            continue  # a rung's heartbeat for `tomosweep view`, beside it as a study's is beside its store
        name = f"{LADDER_DIR}/{path.name}"
        size = int(path.name) if path.name.isdigit() and str(int(path.name)) == path.name else None
        if path.is_symlink():
            problem = f"a symbolic link (to {os.readlink(path)}); tomosweep never opens or writes a rung through one"
        elif size is None:
            problem = "not a rung (a rung's folder is named by its size, as ladder/16)"
        elif study is not None and size not in sizes:
            ladder = f"its ladder is {sizes}" if sizes else "it has no ladder"
            problem = f"not a rung of this study ({ladder})"
        elif not path.is_dir():
            problem = "not a folder"
        else:
            entries.append(_judge_rung(name, path, size, study))
            continue
        entries.append(LadderEntry(name, path, size, problem))
    return entries


def _judge_rung(name: str, path: Path, size: int, study: Study | None) -> LadderEntry:
    try:
        with SweepStore.open(path) as opened:
            n, spec, spec_hash = opened.n_committed, opened.spec, opened.spec_hash
    except StoreError as exc:
        if _creation_leftovers(path):
            return LadderEntry(
                name,
                path,
                size,
                "left half-created (a driver stopped while creating it; it holds no trial)",
                half_created=True,
            )
        return LadderEntry(name, path, size, f"not a readable tomosweep store ({exc})")
    if study is None:
        return LadderEntry(name, path, size, n_committed=n)
    rung = rung_study(study, size)
    if spec_hash != rung.content_hash():
        try:
            check_extension(study_from_dict(spec, source=f"{path} (stored ladder rung)", read_only=True), rung)
        except SpecError as exc:
            return LadderEntry(name, path, size, f"a rung made for another study ({exc})")
    return LadderEntry(name, path, size, n_committed=n)


def _survey_stored(store: str | Path) -> list[LadderEntry]:
    with SweepStore.open(store) as opened:
        spec = opened.spec
    try:
        study = study_from_dict(spec, source=f"{store} (stored study)", read_only=True)  # status imports no plugin
    except SpecError:
        study = None  # `check` says so; the rungs are then listed unjudged
    return survey_ladder(store, study)


def stored_rungs(store: str | Path) -> list[tuple[int, Path, int]]:
    """The ladder rungs of the study stored in ``store``: (size, path, committed trials), smallest
    first. Anything else under ``ladder/`` (:func:`ladder_problems`) is not a rung."""
    return [(e.size, e.path, e.n_committed) for e in _survey_stored(store) if not e.problem and e.size is not None]


def ladder_problems(store: str | Path) -> list[LadderEntry]:
    """What is under ``store``'s ``ladder/`` but is not a rung of its study (see :func:`survey_ladder`)."""
    return [e for e in _survey_stored(store) if e.problem]


RunRung = Callable[[Study, SweepStore, list[TrialRecord]], object]


def climb(
    study: Study,
    store: str | Path,
    run: RunRung,
    *,
    create: Callable[[Study, Path], SweepStore],
    refuse: Callable[[SweepStore], None] = lambda opened: None,
) -> list[TrialRecord]:
    """Run (or resume) every rung of ``study``'s ladder, smallest first; return the top
    rung's finished trials, the warm starts of the study at its own size.

    ``run(rung_study, open_store, warm_from)`` runs a rung's remaining budget on the
    caller's cluster; ``create(rung_study, path)`` makes a new rung store. A stored rung
    whose study differs from the one the ladder now asks for is refused, not mixed in, and
    so is one that ``refuse(open_rung)`` refuses (a damaged one: it raises) before anything
    is written to it. No rung is opened or created through a symbolic link.
    """
    earlier: list[TrialRecord] = []
    for size in study.budget.ladder:
        rung = rung_study(study, size)
        path = rung_path(store, size)
        refuse_linked_ladder(store, size)
        if path.exists():
            opened = open_rung(store, size)
            try:
                refuse(opened)
                _follow(opened, rung, path)
            except BaseException:
                opened.close()
                raise
        else:
            path.parent.mkdir(exist_ok=True)
            refuse_linked_ladder(store, size)  # planted between the check and the mkdir
            opened = create(rung, path)
        with opened:
            log.info(
                "ladder rung %d³: %d trials stored, %d per cell", size, opened.n_committed, rung.budget.trials_per_cell
            )
            run(rung, opened, earlier)
            earlier = [r for r in opened.records() if r.ok]
    return earlier


def open_rung(store: str | Path, size: int, *, writable: bool = True) -> SweepStore:
    """The stored rung of ``size``; a half-created one is one line naming the command that removes it."""
    path = rung_path(store, size)
    try:
        return SweepStore.open(path, writable=writable)
    except StoreError:
        if path.is_dir() and not path.is_symlink() and _creation_leftovers(path):
            raise StoreError(
                f"the ladder rung {path} was left half-created (a driver stopped while creating it; it holds "
                f"no trial): `tomosweep check --repair {store}` removes it, then resume"
            ) from None
        raise


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
