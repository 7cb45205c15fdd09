"""A store damaged by hand, a second driver, dead workers, an interrupted --extend: nothing lost.

Every damage case asserts what ``tomosweep check`` says (one line per finding, exit 1),
that ``check --repair`` destroys nothing (committed trials and the maps' best values
as they were; only what the trials prove is added back) and that ``resume`` refuses
a store it would build on or write over (exit 2, one ``error:`` line, nothing written).
The CLI runs in-process through its entry point, as in ``test_bad_inputs``.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trial_hooks
import zarr
from sweep_support import TINY_SIRT_TOML, run_cli, tiny_study

from tomosweep.errors import ClusterError, TomosweepError
from tomosweep.results import OK, SweepStore, TrialRecord
from tomosweep.sweep import study_from_dict
from tomosweep.sweep.api import create_store, resume_study, run_study
from tomosweep.sweep.check import check_store, refuse_damaged

N_ELEMENTS = 4  # nanocubes: Co, Cu, O, Au


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


@pytest.fixture
def full(tmp_path) -> Path:
    """The tiny study's store at its full budget (16 trials), written without a cluster."""
    study = study_from_dict(tiny_study())
    path = tmp_path / "s.zarr"
    with create_store(study, path, elements=("Co", "Cu", "O", "Au")) as store:
        for k in range(4):
            for method in ("fused", "sirt"):
                for h in (5, 9):
                    store.append(_trial(method, h, 3, k))
    return path


def snapshot(path: Path) -> dict:
    """Everything repair must never lose: the committed rows as stored, and each map's best values."""
    group = zarr.open_group(path, mode="r")
    store = SweepStore.open(path)
    n = group.attrs["n_committed"]
    return {
        "n": n,
        "columns": {name: np.asarray(group[f"trials/{name}"][:n]) for name in ("method", "n_haadf", "nrmse", "params")},
        "best": {m: store.maps(m)["best_nrmse"] for m in store.methods},
        "counts": {m: store.maps(m)["n_trials"] for m in store.methods},
    }


def assert_nothing_lost(path: Path, before: dict) -> None:
    after = snapshot(path)
    assert after["n"] >= before["n"]
    for name, values in before["columns"].items():
        np.testing.assert_array_equal(after["columns"][name][: before["n"]], values)
    for m, best in before["best"].items():
        finite = np.isfinite(best)
        assert np.all(after["best"][m][finite] <= best[finite]), m  # never a best lost
        assert np.all(after["counts"][m] >= before["counts"][m]), m  # never a count lowered


def check_lines(path, capsys, *extra):
    code, out, err = run_cli(["check", str(path), *extra], capsys)
    assert "Traceback" not in out + err
    return code, [line.removeprefix(f"{path}: ") for line in out.splitlines() if line.strip()]


def refused_resume(path, capsys) -> str:
    """``tomosweep resume S`` exits 2 with one error line; returns it (wrapping undone)."""
    code, out, err = run_cli(["resume", str(path), "--quiet"], capsys)
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1, err
    return " ".join(err.split())


def test_a_healthy_store_checks_healthy(full, capsys):
    assert check_lines(full, capsys) == (0, ["healthy"])


def _delete_chunk(path: Path, column: str) -> None:
    chunk = path / "trials" / column / "c" / "0"
    assert chunk.exists()
    shutil.rmtree(chunk) if chunk.is_dir() else chunk.unlink()


@pytest.mark.parametrize("column", ["nrmse", "n_haadf", "method", "params", "meta"])
def test_a_deleted_trial_chunk_is_found_left_as_it_is_and_blocks_resume(full, capsys, column):
    _delete_chunk(full, column)
    before = snapshot(full)  # what survived: nothing of it may go
    code, lines = check_lines(full, capsys)
    assert code == 1
    assert lines[0].startswith(f"trials/{column} chunk 0 (trials 0–15) is missing (deleted?): those trials read as")
    code, lines = check_lines(full, capsys, "--repair")
    assert code == 1 and lines[-1].endswith("left as they are (repair only adds what the trials prove)")
    assert_nothing_lost(full, before)
    # the maps still hold every best the trials had (the deleted method chunk relabels nothing)
    for m in ("fused", "sirt"):
        np.testing.assert_array_equal(SweepStore.open(full).maps(m)["best_nrmse"], before["best"][m])
    line = refused_resume(full, capsys)
    assert f"store {full} is damaged: trials/{column} chunk 0 (trials 0–15) is missing" in line
    assert f"`tomosweep check {full}` lists what is wrong" in line
    assert_nothing_lost(full, before)


def test_a_truncated_trial_chunk_is_found_and_left(full, capsys):
    before = snapshot(full)
    chunk = full / "trials" / "nrmse" / "c" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[:7])
    before["columns"].pop("nrmse")
    code, lines = check_lines(full, capsys, "--repair")
    assert code == 1 and lines[0].startswith("trials/nrmse chunk 0 (trials 0–15) cannot be read")
    for m in ("fused", "sirt"):
        np.testing.assert_array_equal(SweepStore.open(full).maps(m)["best_nrmse"], before["best"][m])
    chunk.write_bytes(data)
    assert check_lines(full, capsys) == (0, ["healthy"])


def test_n_committed_lowered_by_hand_blocks_resume_and_repair_counts_the_rows_back(full, capsys):
    before = snapshot(full)
    zarr.open_group(full, mode="r+").update_attributes({"n_committed": 12})
    code, lines = check_lines(full, capsys)
    assert code == 1
    assert lines[0] == (
        "n_committed is 12 but trials 12–15 after it hold written trials (n_committed lowered by hand?): "
        "a resume would write over them; --repair counts the 4 intact one(s) back in"
    )
    line = refused_resume(full, capsys)
    assert f"`tomosweep check --repair {full}` counts them back in, then resume" in line
    assert check_lines(full, capsys, "--repair")[0] == 0
    assert_nothing_lost(full, before)
    assert snapshot(full)["n"] == 16
    assert check_lines(full, capsys) == (0, ["healthy"])


def test_one_written_but_uncommitted_row_is_a_crash_not_a_block_and_repair_counts_it_in(full):
    with SweepStore.open(full, writable=True) as store:
        store.append(_trial("sirt", 5, 3, 9))
    zarr.open_group(full, mode="r+").update_attributes({"n_committed": 16})  # killed before its commit
    assert any(f.startswith("trial 16 is written but not committed") for f in check_store(full))
    with SweepStore.open(full, writable=True) as store:
        refuse_damaged(store)  # a resume goes on: the next trial is written over it
    check_store(full, repair=True)
    assert SweepStore.open(full).n_committed == 17 and check_store(full) == []


def _edit_attrs(path, **changes):
    group = zarr.open_group(path, mode="r+")
    group.update_attributes({k: v(group.attrs[k]) if callable(v) else v for k, v in changes.items()})


EDITS = {
    "spec-without-hash": (
        {"spec": lambda s: {**s, "budget": {**s["budget"], "trials_per_cell": 6}}},
        "the stored study does not match its hash",
    ),
    "swapped-methods": ({"methods": lambda m: m[::-1]}, "the store's methods (sirt, fused) are not its study's"),
    "swapped-params": (
        {"param_names": lambda p: p[::-1]},
        "the store's parameter names (n_iter, lambda_tv, ",
    ),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_an_edited_study_is_found_left_and_blocks_resume(full, capsys, case):
    changes, expected = EDITS[case]
    _edit_attrs(full, **changes)
    before = snapshot(full)
    code, lines = check_lines(full, capsys)
    assert code == 1 and any(line.startswith(expected) for line in lines), lines
    code, lines = check_lines(full, capsys, "--repair")
    assert code == 1 and any(line.startswith(expected) for line in lines)
    assert_nothing_lost(full, before)
    assert expected in refused_resume(full, capsys)


def test_an_edited_grid_is_found_and_blocks_resume(full, capsys):
    zarr.open_array(full / "grid" / "n_haadf", mode="r+")[:] = [5, 7]
    code, lines = check_lines(full, capsys)
    assert code == 1
    assert "the store's grid (n_haadf [5, 7], n_chem [3]) is not its study's (n_haadf [5, 9], n_chem [3])" in lines[-1]
    assert "the store's grid (n_haadf [5, 7]" in refused_resume(full, capsys)


@pytest.mark.parametrize(
    ("junk", "expected"),
    [
        ({"sirt/5/3": {"params": "x"}}, "replicate entry 'sirt/5/3': its params are not numbers"),
        ({"nonsense": 3}, "replicate entry 'nonsense': its key is not method/n_haadf/n_chem"),
        (
            {"sirt/5/3": {"params": {"n_iter": 3}, "noise_seeds": [1, 2], "nrmse": [0.3]}},
            "replicate entry 'sirt/5/3': it has 1 NRMSE values for 2 noise seeds",
        ),
        ("junk", "attribute replicates is a str, not a table of cells"),
    ],
)
def test_junk_replicates_are_named_and_never_used(full, capsys, junk, expected):
    _edit_attrs(full, replicates=junk)
    code, lines = check_lines(full, capsys)
    assert code == 1 and any(line.startswith(expected) for line in lines), lines
    assert SweepStore.open(full).replicates() == {}


def test_good_replicates_stay_usable_beside_junk(full):
    good = {"params": {"n_iter": 3.0}, "noise_seeds": [1, 2], "nrmse": [0.3, None], "failed": ["x"]}
    _edit_attrs(full, replicates={"sirt/5/3": good, "fused/5/3": []})
    assert SweepStore.open(full).replicates() == {"sirt/5/3": good}


def test_unreadable_maps_are_rebuilt_by_repair(full, capsys):
    before = snapshot(full)
    chunk = next(p for p in (full / "maps" / "sirt" / "n_trials" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"\x00")
    code, lines = check_lines(full, capsys)
    assert code == 1 and lines[0].startswith("the maps cannot be read (")
    assert check_lines(full, capsys, "--repair")[0] == 0
    assert_nothing_lost(full, before)
    assert check_lines(full, capsys) == (0, ["healthy"])


def test_a_bad_generation_attribute_is_one_line(full, capsys):
    _edit_attrs(full, generation="two")
    code, out, err = run_cli(["status", str(full)], capsys)
    assert code == 2 and "attribute generation is 'two', not a generation number" in " ".join(err.split())


def test_a_log_file_that_is_a_symlink_is_never_written_through(tmp_path):
    import logging

    from tomosweep.nofollow import NoFollowFileHandler

    target = tmp_path / "precious"
    target.write_text("keep")
    (tmp_path / "s.zarr.log").symlink_to(target)
    with pytest.raises(TomosweepError, match=r"s\.zarr\.log is a symbolic link; tomosweep never writes through one"):
        NoFollowFileHandler(tmp_path / "s.zarr.log", delay=True)
    handler = NoFollowFileHandler(tmp_path / "other.log", delay=True)
    (tmp_path / "other.log").symlink_to(target)  # planted after the check, before the first line
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "a line\ninjected", None, None)
    with pytest.raises(TomosweepError):
        handler._open()
    handler.close()
    assert target.read_text() == "keep" and record.getMessage()


# --------------------------------------------------------------------------- with a cluster


@pytest.mark.slow
def test_an_extension_killed_at_many_writes_resumes_to_the_full_budget(tmp_path, client, monkeypatch):
    """``resume S --study grow.toml --extend`` killed at the k-th store write (during the grid change
    or the trials after it); the same command then finishes it with every earlier trial kept."""
    from zarr.storage import LocalStore

    small = study_from_dict(tiny_study(budget={"trials_per_cell": 2, "initial_points": 2}))
    grown = study_from_dict(
        tiny_study(
            acquisition={"n_haadf": [5, 9, 12], "n_chem": [3, 6]}, budget={"trials_per_cell": 2, "initial_points": 2}
        )
    )
    base = tmp_path / "base.zarr"
    run_study(small, base, client=client, trial_fn=trial_hooks.synthetic_trial)
    committed = [(r.method, r.cell, r.nrmse) for r in SweepStore.open(base).records()]
    real_set = LocalStore._set

    class Killed(Exception):
        pass

    outcomes = set()
    for k in (1, 2, 4, 8, 16, 30, 45, 60, 90):
        path = tmp_path / f"k{k}.zarr"
        shutil.copytree(base, path)
        count = [0]

        async def dying(self, key, value, exclusive=False, _count=count, _k=k):
            _count[0] += 1
            if _count[0] >= _k:
                raise Killed
            return await real_set(self, key, value, exclusive=exclusive)

        monkeypatch.setattr(LocalStore, "_set", dying)
        try:
            resume_study(path, study=grown, extend=True, client=client, trial_fn=trial_hooks.synthetic_trial)
        except Killed:
            pass
        monkeypatch.setattr(LocalStore, "_set", real_set)
        with SweepStore.open(path) as store:
            outcomes.add((store.n_haadf, store.n_chem))
            assert [(r.method, r.cell, r.nrmse) for r in store.records()][: len(committed)] == committed
        summary = resume_study(path, study=grown, extend=True, client=client, trial_fn=trial_hooks.synthetic_trial)
        assert summary.complete and summary.n_trials == 2 * 2 * 6, k
        assert [(r.method, r.cell, r.nrmse) for r in SweepStore.open(path).records()][: len(committed)] == committed
        assert check_store(path) == []
    assert outcomes == {((5, 9), (3,)), ((5, 9, 12), (3, 6))}  # killed before and after the switch


@pytest.mark.slow
def test_no_worker_left_stops_the_driver_with_the_resume_command(tmp_path, monkeypatch):
    """Every worker killed (no nanny brings one back): the driver stops after the timeout, not never."""
    import cloudpickle
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(trial_hooks)
    monkeypatch.setenv("TOMOSWEEP_NO_WORKER_TIMEOUT_S", "3")
    path = tmp_path / "s.zarr"
    study = study_from_dict(tiny_study(budget={"trials_per_cell": 20, "initial_points": 2}))
    with (
        LocalCluster(n_workers=0, processes=True, dashboard_address=None, host="127.0.0.1") as cluster,
        Client(cluster) as client,
    ):
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--no-nanny"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
        )
        with worker:
            client.wait_for_workers(1, timeout=60)

            class KillAfterTwo:
                def start(self, **kw):
                    pass

                def update(self, record, *, done, **kw):
                    if done == 2:
                        worker.send_signal(signal.SIGKILL)

                def close(self):
                    pass

            t0 = time.monotonic()
            with pytest.raises(ClusterError) as caught:
                run_study(study, path, client=client, trial_fn=trial_hooks.sleepy_trial, progress=KillAfterTwo())
            waited = time.monotonic() - t0
            worker.wait()
    message = str(caught.value)
    assert "every worker is gone and none came back" in message
    assert message.endswith(f"run `tomosweep resume {path}`")
    assert waited < 60
    with SweepStore.open(path) as store:
        assert store.n_committed >= 2 and all(r.ok for r in store.records())
    assert check_store(path) == []


@pytest.mark.slow
def test_two_real_drivers_removing_the_lock_file_lets_the_second_nowhere(tmp_path):
    """``tomosweep run`` writing; the lock file deleted; ``tomosweep resume`` is still refused, and the
    first driver's trials are all there, checked healthy."""
    study = tmp_path / "study.toml"
    study.write_text(TINY_SIRT_TOML.replace("trials_per_cell = 3", "trials_per_cell = 40"))
    store = tmp_path / "s.zarr"
    cli = [sys.executable, "-m", "tomosweep.cli"]
    env = {**os.environ, "TOMOSWEEP_DASK_LOG_LEVEL": "CRITICAL"}
    first = subprocess.Popen(
        [*cli, "run", str(study), "--store", str(store), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    with first:
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if (store / "zarr.json").exists() and zarr.open_group(store, mode="r").attrs.get("n_committed", 0):
                    break
                time.sleep(0.2)
            (store / ".tomosweep.lock").unlink()
            second = subprocess.run(
                [*cli, "resume", str(store), "--quiet"], capture_output=True, text=True, env=env, cwd=tmp_path
            )
            assert second.returncode == 2, second.stderr
            assert "is being written by another driver (holder unknown)" in " ".join(second.stderr.split())
        finally:
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=120)
    assert first.returncode in (0, 130)
    with SweepStore.open(store) as opened:
        n = opened.n_committed
        records = opened.records()
    assert n >= 1 and len({r.trial_id for r in records}) == n
    assert [f for f in check_store(store) if not f.startswith("trial ")] == []
    assert not math.isnan(records[0].nrmse)


def test_a_trial_lost_with_its_workers_is_resubmitted_then_recorded_as_lost_never_nonetype():
    from distributed.scheduler import KilledWorker

    from tomosweep.sweep.runner import Runner, _Ticket

    class LostFuture:
        status = "lost"

        def exception(self):
            return None  # what Dask gives for a result that went with its worker

    runner = Runner.__new__(Runner)
    runner.max_worker_deaths = 2
    ticket, deaths = _Ticket(("sirt", 5, 3), {"n_iter": 3.0}, ask_id=1), {}
    assert runner._outcome(LostFuture(), ticket, deaths, KilledWorker) is None  # resubmitted
    assert runner._outcome(LostFuture(), ticket, deaths, KilledWorker) is None
    record = runner._outcome(LostFuture(), ticket, deaths, KilledWorker)
    assert record.status == "failed" and record.attempts == 3
    assert record.error.startswith("lost to worker deaths: the workers running this trial died or left 3 times")
    assert "NoneType" not in record.error


def test_a_log_file_on_a_full_disk_is_one_warning_not_a_traceback_per_line(tmp_path, capsys, monkeypatch):
    import errno
    import logging

    from tomosweep.nofollow import NoFollowFileHandler

    handler = NoFollowFileHandler(tmp_path / "s.zarr.log", delay=True)
    logger = logging.getLogger("tomosweep.test-full-log")
    logger.addHandler(handler)
    try:

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(handler, "_open", full)
        for k in range(3):
            logger.warning("line %d", k)
    finally:
        logger.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    log = tmp_path / "s.zarr.log"
    assert err == f"warning: cannot write the log {log} (No space left on device); the study goes on without it\n"


def test_a_full_disk_during_a_run_is_one_line_and_the_committed_trials_stay(tmp_path, client, monkeypatch):
    import errno

    from zarr.storage import LocalStore

    from tomosweep.errors import StoreError

    path = tmp_path / "s.zarr"
    real_set = LocalStore._set
    commits = []

    async def filling(self, key, value, exclusive=False):
        if key == "zarr.json" and str(self.root) == str(path) and len(commits) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real_set(self, key, value, exclusive=exclusive)

    class Count:
        def start(self, **kw):
            pass

        def update(self, record, **kw):
            commits.append(record)

        def close(self):
            pass

    monkeypatch.setattr(LocalStore, "_set", filling)
    study = study_from_dict(tiny_study())
    with pytest.raises(StoreError) as caught:
        run_study(study, path, client=client, trial_fn=trial_hooks.synthetic_trial, progress=Count())
    monkeypatch.setattr(LocalStore, "_set", real_set)
    assert str(caught.value) == (
        f"no space left on the disk of {path}: the 3 committed trials are safe; free some space and run "
        f"`tomosweep resume {path}`"
    )
    with SweepStore.open(path) as store:
        assert store.n_committed == 3 and [r.nrmse for r in store.records()] == [r.nrmse for r in commits]
    summary = resume_study(path, client=client, trial_fn=trial_hooks.synthetic_trial)
    assert summary.complete and summary.n_trials == 16


@pytest.mark.parametrize("command", ["status", "export"])
def test_a_deleted_method_chunk_is_never_read_as_some_method(full, capsys, tmp_path, command):
    _delete_chunk(full, "method")
    args = [command, str(full)] + (["--out", str(tmp_path / "out")] if command == "export" else [])
    code, out, err = run_cli(args, capsys)
    assert code == 2 and "Traceback" not in out + err
    assert f"store {full} is damaged: trial 0 holds no valid method or status (a deleted chunk?)" in " ".join(
        err.split()
    )
    assert not (tmp_path / "out").exists()
