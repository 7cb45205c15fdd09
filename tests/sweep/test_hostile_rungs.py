"""Rungs of a resolution ladder, stored search states and the small messages, tried as a hostile
or unlucky user would: every store inside a store is checked, refused or repaired as the top one.

Each case asserts the exit status, one clear line (no traceback) and that nothing committed was
lost. The stores are written without a cluster (records appended by hand), as in
``test_hostile_store``; the CLI runs in-process through its entry point.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import trial_hooks
import zarr
from sweep_support import TINY_SIRT_TOML, run_cli, tiny_study

from tomosweep.errors import TomosweepError
from tomosweep.results import OK, SweepStore, TrialRecord
from tomosweep.sweep import load_study, study_from_dict
from tomosweep.sweep.api import create_store, resume_study
from tomosweep.sweep.ladder import LADDER_DIR, rung_path, rung_study
from tomosweep.sweep.runner import EXHAUSTED, RunSummary

N_ELEMENTS = 4  # nanocubes: Co, Cu, O, Au
ELEMENTS = ("Co", "Cu", "O", "Au")


def _trial(method: str, h: int, c: int, k: int) -> TrialRecord:
    value = 0.2 + 0.01 * k + (0.1 if method == "sirt" else 0.0) + 0.001 * h
    params = {"lambda_haadf": 0.5 + k, "lambda_tv": 1.0, "n_iter": 4.0} if method == "fused" else {"n_iter": 3.0 + k}
    return TrialRecord(
        method=method,
        n_haadf=h,
        n_chem=c,
        params=params,
        status=OK,
        nrmse=value,
        nrmse_elements=(value,) * N_ELEMENTS,
        iterations=4,
        wall_time_s=0.1,
        worker="w",
        finished_at=1.0,
    )


def _fill(store: SweepStore, per_cell: int) -> None:
    for k in range(per_cell):
        for method in store.methods:
            for h in store.n_haadf:
                for c in store.n_chem:
                    store.append(_trial(method, h, c, k))


@pytest.fixture
def full(tmp_path) -> Path:
    """The tiny study's store at its full budget (16 trials), written without a cluster."""
    path = tmp_path / "s.zarr"
    with create_store(study_from_dict(tiny_study()), path, elements=ELEMENTS) as store:
        _fill(store, 4)
    return path


def test_a_cell_stopped_by_its_tolerance_is_announced_with_its_own_reason(capsys):
    from tomosweep.cli.study import _summary

    converged = "converged: expected improvement below 1 % of its best for 3 asks in a row"
    summary = RunSummary(
        store="s.zarr",
        n_trials=7,
        n_new=7,
        n_failed=0,
        budget=8,
        wall_time_s=1.0,
        exhausted=(("fused", 5, 3), ("sirt", 9, 3)),
        exhausted_unused=1,
        stop_reasons=((("fused", 5, 3), converged), (("sirt", 9, 3), EXHAUSTED)),
    )
    _summary(summary)
    captured = capsys.readouterr()
    lines = " ".join((captured.out + captured.err).split())
    assert f"fused at 5 HAADF × 3 chemical tilts stopped early (budget.stop_tolerance): {converged}." in lines
    assert "fused at 5 HAADF × 3 chemical tilts: every point" not in lines
    assert "sirt at 9 HAADF × 3 chemical tilts: every point of its search space is evaluated" in lines


@pytest.mark.parametrize("made", [False, True])
def test_continue_with_resume_is_said_only_for_a_store_that_exists(tmp_path, capsys, monkeypatch, full, made):
    """Ctrl-C before the store was made (a plugin's import, a cluster that never came up) names
    no resume command: there is nothing to resume."""
    from tomosweep.cli import study as study_commands

    path = full if made else tmp_path / "never.zarr"
    toml = tmp_path / "study.toml"
    toml.write_text(TINY_SIRT_TOML)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study_commands, "run_study", interrupted)
    code, out, err = run_cli(["run", toml, "--store", path], capsys)
    line = " ".join(err.split())
    assert code == 130 and "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err
    if made:
        assert f"continue with `tomosweep resume {path}`" in line
    else:
        assert line == f"interrupted before the store {path} was made" and not path.exists()


# --------------------------------------------------------------------------- ladder rungs

LADDERED_TOML = """
name = "laddered"
seed = 3
[phantom]
name = "nanocubes"
size = 24
[acquisition]
n_haadf = [5, 9]
n_chem = [3]
[methods.fused]
lambda_haadf = { low = 0.1, high = 10.0, prior = "log" }
lambda_tv = 1.0
n_iter = 4
[methods.sirt]
n_iter = { low = 2, high = 30, prior = "log" }
[budget]
trials_per_cell = 4
initial_points = 2
ladder = [16]
ladder_trials = 2
[cluster]
n_workers = 1
"""


def _study_file(tmp_path: Path, text: str = LADDERED_TOML, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def laddered(tmp_path) -> Path:
    """A laddered study's store, its rung 16³ complete (8 trials) and 8 trials at its own size."""
    study = load_study(_study_file(tmp_path))
    path = tmp_path / "s.zarr"
    with create_store(study, path, elements=ELEMENTS) as store:
        (path / LADDER_DIR).mkdir()
        with create_store(rung_study(study, 16), rung_path(path, 16), elements=ELEMENTS) as rung:
            _fill(rung, 2)
        _fill(store, 2)
    return path


def snapshot(path: Path) -> dict:
    """What nothing may lose: the committed rows as stored, each map's best values and counts,
    and the study the store holds."""
    group = zarr.open_group(path, mode="r")
    n = group.attrs["n_committed"]
    store = SweepStore.open(path)
    return {
        "n": n,
        "spec_hash": group.attrs["spec_hash"],
        "columns": {c: np.asarray(group[f"trials/{c}"][:n]) for c in ("method", "n_haadf", "nrmse", "params")},
        "best": {m: store.maps(m)["best_nrmse"] for m in store.methods},
        "counts": {m: store.maps(m)["n_trials"] for m in store.methods},
    }


def assert_nothing_lost(path: Path, before: dict, *, same_study: bool = True) -> None:
    after = snapshot(path)
    assert after["n"] >= before["n"]
    if same_study:
        assert after["spec_hash"] == before["spec_hash"]  # no half-applied study update
    for name, values in before["columns"].items():
        np.testing.assert_array_equal(after["columns"][name][: before["n"]], values)
    for m, best in before["best"].items():
        finite = np.isfinite(best)
        assert np.all(after["best"][m][finite] <= best[finite]), m
        assert np.all(after["counts"][m] >= before["counts"][m]), m


def check_lines(path, capsys, *extra) -> tuple[int, list[str]]:
    code, out, err = run_cli(["check", str(path), *extra], capsys)
    assert "Traceback" not in out + err
    return code, [line.removeprefix(f"{path}: ") for line in out.splitlines() if line.strip()]


def refused(args, capsys) -> str:
    """``tomosweep ARGS`` exits 2 with one error line, no traceback; returns it (wrapping undone)."""
    code, out, err = run_cli([*map(str, args), "--quiet"], capsys)
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1, err
    return " ".join(err.split())


def _rung(path: Path) -> Path:
    return rung_path(path, 16)


def test_a_healthy_laddered_store_checks_healthy_and_lists_its_rung(laddered, capsys):
    assert check_lines(laddered, capsys) == (0, ["healthy"])
    code, out, err = run_cli(["status", laddered], capsys)
    assert code == 0 and f"ladder rung 16³: 8 trials (tomosweep status {_rung(laddered)})" in " ".join(out.split())
    assert "not rungs of this study" not in out


def test_a_rung_with_n_committed_lowered_is_found_refused_even_by_extend_and_counted_back(laddered, capsys, tmp_path):
    rung_before, top_before = snapshot(_rung(laddered)), snapshot(laddered)
    zarr.open_group(_rung(laddered), mode="r+").update_attributes({"n_committed": 4})
    code, lines = check_lines(laddered, capsys)
    assert code == 1
    assert lines == [
        "ladder/16: n_committed is 4 but trials 4–7 after it hold written trials (n_committed lowered by hand?): "
        "a resume would write over them; --repair counts the 4 intact one(s) back in"
    ]
    more = _study_file(tmp_path, LADDERED_TOML.replace("ladder_trials = 2", "ladder_trials = 3"), "more.toml")
    for args in (["resume", laddered], ["resume", laddered, "--study", more, "--extend"]):
        line = refused(args, capsys)
        assert f"the ladder rung {_rung(laddered)} is damaged: n_committed is 4 but trials 4–7" in line
        assert f"`tomosweep check --repair {laddered}` counts them back in, then resume" in line
        assert_nothing_lost(laddered, top_before)  # the extension was not half applied to the top store
    assert check_lines(laddered, capsys, "--repair")[0] == 0
    assert_nothing_lost(_rung(laddered), rung_before)
    assert snapshot(_rung(laddered))["n"] == 8 and check_lines(laddered, capsys) == (0, ["healthy"])


@pytest.mark.parametrize("column", ["nrmse", "method", "meta"])
def test_a_rung_with_a_deleted_trials_chunk_is_found_left_and_refused(laddered, capsys, column):
    chunk = _rung(laddered) / "trials" / column / "c" / "0"
    chunk.unlink()
    rung_before, top_before = snapshot(_rung(laddered)), snapshot(laddered)
    code, lines = check_lines(laddered, capsys)
    assert code == 1 and lines[0].startswith(f"ladder/16: trials/{column} chunk 0 (trials 0–7) is missing (deleted?)")
    code, lines = check_lines(laddered, capsys, "--repair")
    assert code == 1 and lines[-1].endswith("left as they are (repair only adds what the trials prove)")
    line = refused(["resume", laddered], capsys)
    assert f"the ladder rung {_rung(laddered)} is damaged: trials/{column} chunk 0 (trials 0–7) is missing" in line
    assert f"`tomosweep check {laddered}` lists what is wrong" in line
    assert_nothing_lost(_rung(laddered), rung_before)
    assert_nothing_lost(laddered, top_before)
    for m in ("fused", "sirt"):  # the rung's maps keep every best its trials had
        np.testing.assert_array_equal(SweepStore.open(_rung(laddered)).maps(m)["best_nrmse"], rung_before["best"][m])


def _half_create(path: Path, monkeypatch, writes: int) -> None:
    """A rung store created by tomosweep and killed at its ``writes``-th write to disk."""
    from zarr.storage import LocalStore

    study = rung_study(load_study(_study_file(path.parent.parent.parent)), 16)
    real_set, count = LocalStore._set, [0]

    class Killed(BaseException):
        pass

    async def dying(self, key, value, exclusive=False):
        if str(self.root).startswith(str(path)):
            count[0] += 1
            if count[0] >= writes:
                raise Killed
        return await real_set(self, key, value, exclusive=exclusive)

    monkeypatch.setattr(LocalStore, "_set", dying)
    with pytest.raises(Killed):
        create_store(study, path, elements=ELEMENTS)
    monkeypatch.setattr(LocalStore, "_set", real_set)


@pytest.mark.parametrize("writes", [2, 3, 6, 12])
def test_a_half_created_rung_is_named_refused_and_removed_by_repair(laddered, capsys, monkeypatch, writes):
    rung = _rung(laddered)
    shutil.rmtree(rung)
    _half_create(rung, monkeypatch, writes)
    assert (rung / "zarr.json").exists()  # killed after the rung's zarr.json was written
    top_before = snapshot(laddered)
    code, lines = check_lines(laddered, capsys)
    assert code == 1
    assert lines == [
        "ladder/16 is left half-created (a driver stopped while creating it; it holds no trial): --repair removes it"
    ]
    line = refused(["resume", laddered], capsys)
    assert line == (
        f"error: the ladder rung {rung} was left half-created (a driver stopped while creating it; it holds no trial): "
        f"`tomosweep check --repair {laddered}` removes it, then resume"
    )
    code, out, err = run_cli(["status", laddered], capsys)
    assert code == 0 and "ladder rung 16³" not in out and "1 thing(s) under ladder/ are not rungs" in out
    assert check_lines(laddered, capsys, "--repair")[0] == 0
    assert not rung.exists() and check_lines(laddered, capsys) == (0, ["healthy"])
    assert_nothing_lost(laddered, top_before)


def test_a_rung_holding_a_trial_is_never_taken_for_a_half_created_one(laddered, capsys):
    (_rung(laddered) / "maps").rename(_rung(laddered) / "maps-moved")  # unreadable, yet trials are there
    code, lines = check_lines(laddered, capsys, "--repair")
    assert code == 1 and lines[0].startswith("ladder/16 is not a readable tomosweep store (")
    assert lines[0].endswith(": left as it is")
    assert (_rung(laddered) / "trials" / "nrmse" / "c" / "0").exists()
    line = refused(["resume", laddered], capsys)
    assert "the study cannot climb its ladder through it. Nothing was written" in line


@pytest.mark.parametrize("name", ["0016", "17", "notes", "16.old"])
def test_a_stray_folder_under_ladder_is_reported_by_check_and_never_listed_as_a_rung(laddered, capsys, name):
    shutil.copytree(_rung(laddered), laddered / LADDER_DIR / name)
    code, lines = check_lines(laddered, capsys, "--repair")
    assert code == 1 and any(line.startswith(f"ladder/{name} is not a rung") for line in lines), lines
    assert (laddered / LADDER_DIR / name).is_dir()  # left as it is
    code, out, err = run_cli(["status", laddered], capsys)
    text = " ".join(out.split())
    assert code == 0 and text.count("ladder rung") == 1 and "ladder rung 16³: 8 trials" in text
    assert f"1 thing(s) under ladder/ are not rungs of this study: `tomosweep check {laddered}`" in text


def test_a_rung_made_for_another_study_is_reported_never_listed_and_refused(laddered, tmp_path, capsys):
    other = load_study(_study_file(tmp_path, LADDERED_TOML.replace("seed = 3", "seed = 99"), "other.toml"))
    foreign = tmp_path / "foreign.zarr"
    with create_store(rung_study(other, 16), foreign, elements=ELEMENTS) as store:
        _fill(store, 1)
    shutil.rmtree(_rung(laddered))
    shutil.move(foreign, _rung(laddered))
    before = snapshot(_rung(laddered))
    code, lines = check_lines(laddered, capsys)
    assert code == 1 and lines == [
        "ladder/16 is a rung made for another study (the study's 'seed' differs from the stored one; only the "
        "budget and grid may change): left as it is"
    ]
    code, out, err = run_cli(["status", laddered], capsys)
    assert code == 0 and "ladder rung 16³" not in out
    line = refused(["resume", laddered], capsys)
    assert f"{_rung(laddered)} is a rung made for another study" in line and "Nothing was written" in line
    assert_nothing_lost(_rung(laddered), before)


def test_a_linked_ladder_is_reported_refused_and_never_written_through(laddered, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(laddered / LADDER_DIR)
    (laddered / LADDER_DIR).symlink_to(elsewhere)
    code, lines = check_lines(laddered, capsys)
    assert code == 1 and lines == [
        f"ladder is a symbolic link (to {elsewhere}); tomosweep never creates or writes a rung through one: "
        "left as it is"
    ]
    line = refused(["resume", laddered], capsys)
    assert f"{laddered / LADDER_DIR} is a symbolic link (to {elsewhere}); tomosweep never creates" in line
    assert list(elsewhere.iterdir()) == []


def test_a_rung_is_never_created_through_a_linked_ladder(laddered, tmp_path):
    from tomosweep.errors import StoreError
    from tomosweep.sweep.ladder import climb

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(laddered / LADDER_DIR)
    (laddered / LADDER_DIR).symlink_to(elsewhere)
    made = []
    with pytest.raises(StoreError, match="is a symbolic link"):
        climb(load_study(_study_file(tmp_path)), laddered, lambda *a: None, create=lambda s, p: made.append(p))
    assert made == [] and list(elsewhere.iterdir()) == []


def test_a_linked_rung_folder_is_reported_and_refused(laddered, tmp_path, capsys):
    moved = tmp_path / "rung-elsewhere"
    shutil.move(_rung(laddered), moved)
    _rung(laddered).symlink_to(moved)
    before = snapshot(moved)
    code, lines = check_lines(laddered, capsys, "--repair")
    assert code == 1 and lines[0].startswith(f"ladder/16 is a symbolic link (to {moved}); tomosweep never opens")
    line = refused(["resume", laddered], capsys)
    assert "is a symbolic link" in line and "the study cannot climb its ladder through it" in line
    assert_nothing_lost(moved, before)


# --------------------------------------------------------------------------- stored search states

FRESH_MAP = {"n_asked": 0, "gains": [0.0, 0.0, 0.0], "nominees": None, "rewarded_at": 0, "theta": None, "tuned_at": 0}
FRESH_CELL = {"n_asked": 4, "gains": [0.0, 0.0, 0.0], "nominees": None, "rewarded_at": 0, "streak": 0}

HOSTILE_STATES = {
    "theta-nan": (
        {"fused/map": {**FRESH_MAP, "theta": [math.nan] * 9}},
        "optimiser state fused/map is unreadable (stored GP hyper-parameters must be finite numbers",
    ),
    "theta-text": (
        {"fused/map": {**FRESH_MAP, "theta": "abc"}},
        "optimiser state fused/map is unreadable (stored GP hyper-parameters must be a list of numbers",
    ),
    "theta-huge": (
        {"fused/map": {**FRESH_MAP, "theta": [1e6] * 9}},
        "optimiser state fused/map is unreadable (stored GP hyper-parameter 0 is 1e+06, far outside its kernel's",
    ),
    "nominees-huge": (
        {"fused/map": {**FRESH_MAP, "nominees": [[1e300] * 3] * 3}},
        "optimiser state fused/map is unreadable (stored nominees must lie in the search's [0, 1] box",
    ),
    "nominees-shape": (
        {"sirt/map": {**FRESH_MAP, "nominees": [[0.5] * 5]}},
        "optimiser state sirt/map is unreadable (stored nominees must be 3 points of 3 numbers in [0, 1]",
    ),
    "gains-text": (
        {"fused/map": {**FRESH_MAP, "gains": "x"}},
        "optimiser state fused/map is unreadable (stored GP-Hedge gains must be 3 finite numbers, got 'x')",
    ),
    "counter-negative": (
        {"fused/map": {**FRESH_MAP, "tuned_at": -3}},
        "optimiser state fused/map is unreadable (stored tuned_at must be a whole number ≥ 0, got -3)",
    ),
    "cell-counter-text": (
        {"sirt/5/3": {**FRESH_CELL, "n_asked": "x"}},
        "optimiser state sirt/5/3 is unreadable (stored n_asked must be a whole number, got 'x')",
    ),
    "cell-missing-gains": (
        {"sirt/9/3": {"n_asked": 4}},
        "optimiser state sirt/9/3 is unreadable (it has no 'gains')",
    ),
    "cell-stopped-number": (
        {"fused/5/3": {**FRESH_CELL, "stopped": 5}},
        "optimiser state fused/5/3 is unreadable (stored stopped must be a reason (text) or null, got 5)",
    ),
    "not-a-table": (
        [1, 2],
        'the stored search states (attribute "optimiser") are a list, not a table',
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_STATES))
def test_a_search_state_resume_would_refuse_is_found_by_check_refused_whole_and_reset_by_repair(
    full, tmp_path, capsys, case
):
    states, expected = HOSTILE_STATES[case]
    zarr.open_group(full, mode="r+").update_attributes({"optimiser": states})
    before = snapshot(full)
    code, lines = check_lines(full, capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(expected), lines
    assert lines[0].endswith("; --repair resets it (the search there restarts from its trials)")
    # the study file that extends the stored one: refused before its update is written
    grown = tiny_study(budget={"trials_per_cell": 6, "initial_points": 2})
    toml = tmp_path / "grown.toml"
    toml.write_text(_toml(grown))
    for args in (["resume", full], ["resume", full, "--study", toml, "--extend"]):
        line = refused(args, capsys)
        assert line.startswith(f"error: store {full} is damaged: {expected}"), line
        assert line.endswith(
            f"`tomosweep check --repair {full}` resets the search state (the trials stay), then resume"
        )
        assert_nothing_lost(full, before)
    code, out, err = run_cli(["status", full], capsys)  # a reader is never stopped by it
    assert code == 0 and "Traceback" not in out + err
    assert check_lines(full, capsys, "--repair")[0] == 0
    assert check_lines(full, capsys) == (0, ["healthy"])
    assert_nothing_lost(full, before)


def test_a_rung_search_state_is_checked_and_reset_as_the_top_ones(laddered, capsys):
    zarr.open_group(_rung(laddered), mode="r+").update_attributes(
        {"optimiser": {"fused/map": {**FRESH_MAP, "theta": [math.nan] * 9}}}
    )
    code, lines = check_lines(laddered, capsys)
    assert code == 1 and lines[0].startswith("ladder/16: optimiser state fused/map is unreadable (stored GP hyper")
    line = refused(["resume", laddered], capsys)
    assert f"the ladder rung {_rung(laddered)} is damaged: optimiser state fused/map is unreadable" in line
    assert f"`tomosweep check --repair {laddered}` resets the search state" in line
    assert check_lines(laddered, capsys, "--repair")[0] == 0
    assert check_lines(laddered, capsys) == (0, ["healthy"])


def test_hedge_choice_never_draws_from_nan_probabilities():
    from tomosweep.search.hedge import hedge_choice

    rng = np.random.default_rng(0)
    # the valid functions' gains far below an invalid one's: exp underflows to 0 for all of them
    assert hedge_choice(np.array([1e300, -1e300, -1e300]), 1.0, [1, 2], rng) in (1, 2)
    assert hedge_choice(np.array([1000.0, 0.0, 0.0]), 1.0, [1, 2], rng) in (1, 2)
    assert hedge_choice(np.array([np.nan, 0.0, np.inf]), 1.0, [0, 1, 2], rng) in (0, 1, 2)


def _toml(study: dict) -> str:
    """A study dict as a TOML file (tables of scalars, lists and inline tables only)."""

    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, bool):
            return str(v).lower()
        return str(v)

    lines = [f"{k} = {value(v)}" for k, v in study.items() if not isinstance(v, dict)]
    for section, table in study.items():
        if isinstance(table, dict):
            if section == "methods":
                for method, params in table.items():
                    lines += [f"[methods.{method}]", *(f"{k} = {value(v)}" for k, v in params.items())]
            else:
                lines += [f"[{section}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- with a cluster


def test_a_repaired_rung_is_extended_by_resume_with_every_committed_trial_kept(laddered, tmp_path, capsys, client):
    zarr.open_group(_rung(laddered), mode="r+").update_attributes({"n_committed": 4})
    rung_rows = [(r.method, r.cell, r.nrmse) for r in SweepStore.open(_rung(laddered)).records()]
    # the study's own budget grows with the rungs' (ladder_trials alone would warm nothing and is refused)
    grown = LADDERED_TOML.replace("ladder_trials = 2", "ladder_trials = 3").replace(
        "trials_per_cell = 4", "trials_per_cell = 5"
    )
    more = load_study(_study_file(tmp_path, grown, "m.toml"))
    with pytest.raises(TomosweepError, match="check --repair"):
        resume_study(laddered, study=more, extend=True, client=client, trial_fn=trial_hooks.synthetic_trial)
    assert check_lines(laddered, capsys, "--repair")[0] == 0
    summary = resume_study(laddered, study=more, extend=True, client=client, trial_fn=trial_hooks.synthetic_trial)
    assert summary.complete
    with SweepStore.open(_rung(laddered)) as rung:
        assert rung.n_committed == 4 * 3  # 4 cells of two methods × 3: the 8 written ones counted back in
        assert [(r.method, r.cell, r.nrmse) for r in rung.records()][:4] == rung_rows
    result = check_lines(laddered, capsys)
    assert result == (0, ["healthy"]), result
