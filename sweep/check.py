"""``tomosweep check``: a store's health found without trusting it, and a repair that only adds back.

A store is audited row by row (:meth:`~tomosweep.results.store.SweepStore.audit`), compared with
its own stored study (:func:`study_findings`), and its replicates and every stored search state
checked, each state by the code a resume continues from
(:func:`~tomosweep.sweep.runner.state_problems`); every ladder rung gets the same. A resume refuses
what this finds (:func:`refuse_damaged`, :func:`refuse_damaged_ladder`).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tomosweep.errors import SpecError, StoreError
from tomosweep.results import SweepStore
from tomosweep.sweep.ladder import LadderEntry, refuse_linked_ladder, survey_ladder
from tomosweep.sweep.runner import state_problems
from tomosweep.sweep.spec import PluginCodeNeeded, Study, stored_study

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def study_findings(store: SweepStore) -> list[str]:
    """Where the store disagrees with its own stored study (one line each): a spec edited without
    its hash, method or parameter names that are not the spec's (swapped: the trials' labels
    cannot be trusted), a grid that is not the spec's, trials off the grid."""
    try:
        study = stored_study(store)
    except SpecError as exc:
        return [f"the stored study is not a valid study ({exc}): left as it is"]
    findings = []
    if study.content_hash() != store.spec_hash:
        findings.append(
            f"the stored study does not match its hash (spec_hash {store.spec_hash[:16]}, the spec hashes to "
            f"{study.content_hash()}): the spec or its hash was edited; left as it is"
        )
    if tuple(study.methods) != store.methods:
        findings.append(
            f"the store's methods ({', '.join(store.methods)}) are not its study's ({', '.join(study.methods)}): "
            "the trials' method labels cannot be trusted; left as they are"
        )
    if tuple(study.param_names) != store.param_names:
        findings.append(
            f"the store's parameter names ({', '.join(store.param_names)}) are not its study's "
            f"({', '.join(study.param_names)}): the trials' parameter columns cannot be trusted; left as they are"
        )
    grid = (tuple(study.acquisition.n_haadf), tuple(study.acquisition.n_chem))
    if (store.n_haadf, store.n_chem) != grid:
        findings.append(
            f"the store's grid (n_haadf {list(store.n_haadf)}, n_chem {list(store.n_chem)}) is not its study's "
            f"(n_haadf {list(grid[0])}, n_chem {list(grid[1])}): left as it is"
        )
    return findings


def _state_findings(store: SweepStore) -> tuple[list[str], list[str], list[str]]:
    """Stored search states, as (findings of states no resume reads, findings of states a resume
    would refuse, the keys ``--repair`` resets): states that name no method of the store, and
    states the code a resume continues from cannot continue from."""
    foreign, unreadable, bad = [], [], []
    raw = store.attrs.get("optimiser") or {}
    for key in raw if isinstance(raw, dict) else ():
        if str(key).split("/")[0] not in store.methods:
            bad.append(str(key))
            foreign.append(f"optimiser state {key} names no method of this store; --repair removes it")
    try:
        study = stored_study(store)
    except SpecError:
        return foreign, unreadable, bad  # study_findings says so, and no resume reads such a store's states
    try:
        problems = state_problems(study, store)
    except PluginCodeNeeded as exc:  # resume checks them again, with the plugin imported
        foreign.append(f"the stored search states were not checked: {exc}")
        return foreign, unreadable, bad
    for key, why in problems:
        bad.append(key)
        where = f"optimiser state {key} is unreadable ({why})" if key else why
        unreadable.append(f"{where}; --repair resets it (the search there restarts from its trials)")
    return foreign, unreadable, bad


def refuse_damaged(store: SweepStore, *, top: Path | None = None) -> None:
    """Refuse to write a store whose trials, study or search states cannot be trusted: one line
    naming the first problem and the command that lists them all (a resume would build on, or
    write over, them). ``top``: the study's store, for a ladder rung inside it (its check
    walks the rungs)."""
    audit = store.audit()
    problems = study_findings(store)
    if audit.blocks_resume:
        problems = [f for f in audit.findings if "maps" not in f.split(":")[0]] + problems
    states = [] if problems else _state_findings(store)[1]  # a damaged store's are never read
    problems += states
    if not problems:
        return
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    where = top if top is not None else store.path
    if audit.lowered:
        fix = f"`tomosweep check --repair {where}` counts them back in, then resume"
    elif states:
        fix = f"`tomosweep check --repair {where}` resets the search state (the trials stay), then resume"
    else:
        fix = f"`tomosweep check {where}` lists what is wrong"
    what = f"the ladder rung {store.path}" if top is not None else f"store {store.path}"
    raise StoreError(f"{what} is damaged: {problems[0]}{more}. Nothing was written; {fix}")


def refuse_damaged_ladder(store: Path, study: Study) -> None:
    """Refuse a resume of ``study`` whose ladder cannot be climbed as stored (before anything is
    written): a linked ``ladder/``, and for each rung it climbs, one that is half-created, made
    for another study or damaged (trials, study or search states), as the top store is refused."""
    if not study.budget.ladder:
        return
    refuse_linked_ladder(store)
    for entry in survey_ladder(store, study):
        if entry.size not in study.budget.ladder:
            continue  # strays: no resume touches them; `check` names them
        if entry.half_created:
            raise StoreError(
                f"the ladder rung {entry.path} was left half-created (a driver stopped while creating it; it holds "
                f"no trial): `tomosweep check --repair {store}` removes it, then resume"
            )
        if entry.problem:
            raise StoreError(
                f"{entry.path} is {entry.problem}: the study cannot climb its ladder through it. Nothing was "
                "written; move it out of the store, then resume"
            )
        with SweepStore.open(entry.path) as rung:
            refuse_damaged(rung, top=store)


def _check_one(path: Path) -> tuple[list[str], list[str]]:
    """One store's findings (see :func:`check_store`) and the search states ``--repair`` resets."""
    findings: list[str] = []
    with SweepStore.open(path) as opened:
        audit = opened.audit()
        findings += audit.findings
        findings += study_findings(opened)
        findings += [
            f"replicate entry {key!r}: {why}; left as it is (plan and figures skip it)" if key else f"{why}; left"
            for key, why in opened.replicate_problems()
        ]
        foreign, unreadable, bad_states = _state_findings(opened)
        findings += foreign + unreadable
    return findings, bad_states


def _repair_one(opened: SweepStore, bad_states: list[str]) -> None:
    """What ``check --repair`` does to one store it holds the lock of: only adds back."""
    audit = opened.audit()  # again, under the lock
    if audit.uncommitted:
        opened.recommit(audit.uncommitted)
        audit = opened.audit()
    opened.add_to_maps(audit.damaged_rows)
    if bad_states:
        opened.reset_optimiser_state(bad_states)


def check_store(store: PathLike, *, repair: bool = False) -> list[str]:
    """A store's health, one finding per line (empty: healthy), its ladder rungs' included.

    Opening validates the attributes and array shapes (a damaged store raises
    :class:`StoreError` naming the damage); then the trial rows are audited without trusting
    any of them (:meth:`SweepStore.audit`: missing or unreadable chunks, impossible values,
    written rows after the commit counter, maps against the intact rows), the store is
    compared with its stored study (:func:`study_findings`), and the replicates and every
    stored search state are checked, each state by the code a resume continues from
    (:func:`~tomosweep.sweep.runner.state_problems`). Every rung under ``ladder/`` gets the
    same audit, its lines prefixed ``ladder/<size>:``; whatever else is there (a stray or
    linked folder, a half-created rung, a rung of another study) is named.

    ``repair`` only ever adds back: it counts intact written rows after the commit counter
    back in, adds to the maps what the intact trials hold (never lowering a count, never
    losing a best), rebuilds unreadable maps and resets the search states a resume could
    not continue from; in every rung too, and it removes a half-created rung (which holds
    no trial). Whatever it cannot prove (damaged trials, an edited study, a foreign rung)
    it leaves as it is; the returned lines are the findings before the repair, and a
    second check says what is left.
    """
    path = Path(store)
    findings, bad_states = _check_one(path)
    with SweepStore.open(path) as opened:
        try:
            study: Study | None = stored_study(opened)
        except SpecError:
            study = None  # study_findings said so: no size is known to be a rung
    rungs: list[tuple[LadderEntry, list[str]]] = []
    for entry in survey_ladder(path, study):
        if entry.problem:
            outcome = "--repair removes it" if entry.half_created else "left as it is"
            findings.append(f"{entry.name} is {entry.problem}: {outcome}")
            continue
        rung_findings, rung_states = _check_one(entry.path)
        findings += [f"{entry.name}: {line}" for line in rung_findings]
        if rung_findings:
            rungs.append((entry, rung_states))
    if repair and findings:
        # under the study's lock: no driver climbs the ladder meanwhile
        with SweepStore.open(path, writable=True) as opened:
            _repair_one(opened, bad_states)
            for entry in survey_ladder(path, study):
                if entry.half_created:
                    log.info("%s: removing the half-created ladder rung %s", path, entry.path)
                    shutil.rmtree(entry.path)
            for entry, rung_states in rungs:
                with SweepStore.open(entry.path, writable=True) as rung:
                    _repair_one(rung, rung_states)
    return findings
