"""The sweep engine end to end on a real 2-process Dask cluster."""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import trial_hooks
from sweep_support import tiny_study

from tomosweep.errors import SpecError, StoreError, StoreLockedError
from tomosweep.results import FAILED, OK, SweepStore
from tomosweep.sweep import reconstruct_cell, resume_study, run_study, study_from_dict
from tomosweep.sweep.trial import TrialTask, run_trial


def per_key(store_path) -> collections.Counter:
    return collections.Counter((r.method, r.n_haadf, r.n_chem) for r in SweepStore.open(store_path).records())


def assert_no_duplicate_points(store_path) -> None:
    records = SweepStore.open(store_path).records()
    assert len({r.task_key for r in records}) == len(records)
    seen = collections.Counter(
        (r.method, r.n_haadf, r.n_chem, json.dumps(r.params, sort_keys=True)) for r in records if r.method == "fused"
    )
    assert max(seen.values()) == 1


def test_real_study_runs_its_budget_deterministically(tmp_path, client):
    study = study_from_dict(tiny_study())
    path = tmp_path / "s.zarr"
    summary = run_study(study, path, client=client)
    assert summary.complete and summary.n_trials == summary.n_new == 16 and summary.n_failed == 0
    assert set(per_key(path).values()) == {4}
    records = SweepStore.open(path).records()
    assert all(r.status == OK and 0 < r.nrmse < 2 for r in records)
    assert {r.worker for r in records} <= set(client.scheduler_info()["workers"].keys()) | {
        str(w["name"]) for w in client.scheduler_info()["workers"].values()
    }
    fused = next(r for r in records if r.method == "fused")
    assert set(fused.params) == {"lambda_haadf", "lambda_chem", "lambda_tv", "n_iter"}
    assert fused.params["n_iter"] == 4 and fused.iterations == 4
    assert set(fused.info["final_costs"]) >= {"haadf", "chem", "tv"}
    # determinism: the same (study, cell, params) gives the same NRMSE here as on the worker
    task = TrialTask(json.dumps(study.to_json(), sort_keys=True), "fused", fused.n_haadf, fused.n_chem, fused.params)
    again = run_trial(task)
    assert again.nrmse == pytest.approx(fused.nrmse, rel=1e-9)
    assert again.nrmse_elements == pytest.approx(fused.nrmse_elements, rel=1e-9)
    # reconstruct reruns the cell's best trial and gets the stored best NRMSE
    out, metrics = reconstruct_cell(path, (9, 3), tmp_path / "best.npz", method="sirt")
    best = SweepStore.open(path).maps("sirt")["best_nrmse"][1, 0]
    assert metrics["mean"] == pytest.approx(best, rel=1e-9)
    from tomosweep.phantoms import load_specimen

    saved = load_specimen(out)
    assert saved.elements == ("Co", "Cu", "O", "Au") and saved.volumes.shape == (4, 16, 16, 16)


def test_failing_trials_are_recorded_and_the_study_goes_on(tmp_path, client):
    path = tmp_path / "s.zarr"
    study = tiny_study(methods={"sirt": {"n_iter": {"low": 2, "high": 40, "prior": "log"}}})
    study["budget"] = {"trials_per_cell": 6, "initial_points": 3}
    summary = run_study(study_from_dict(study), path, client=client, trial_fn=trial_hooks.raising_trial)
    records = SweepStore.open(path).records()
    assert len(records) == 12 and summary.complete
    failed = [r for r in records if r.status == FAILED]
    assert failed and all(r.params["n_iter"] > 10 for r in failed)
    assert all(r.error.startswith("RuntimeError: boom at n_iter=") for r in failed)
    assert all(r.status == OK for r in records if r.params["n_iter"] <= 10)
    maps = SweepStore.open(path).maps("sirt")
    assert maps["n_failed"].sum() == len(failed) and maps["n_trials"].sum() == 12


def test_a_diverging_solver_is_a_failed_record(monkeypatch):
    from tomosweep.errors import DivergenceError
    from tomosweep.sweep import methods

    def diverge(cell, params, device):
        raise DivergenceError("fused: cost is NaN at iteration 3")

    monkeypatch.setitem(
        methods.METHODS, "sirt", methods.Method("sirt", methods.METHODS["sirt"].params, diverge, "test")
    )
    study = study_from_dict(tiny_study())
    record = run_trial(TrialTask(json.dumps(study.to_json()), "sirt", 5, 3, {"n_iter": 5}))
    assert record.status == FAILED and record.error.startswith("DivergenceError: fused: cost is NaN at iteration 3")


def _once_committed(path, n: int, act) -> threading.Thread:
    """A started thread that calls ``act()`` once the store at ``path`` holds ``n`` committed trials
    (a minute at most): a fault injected while the study runs."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                committed = SweepStore.open(path).n_committed
            except Exception:  # not created yet, or half-written while we look
                committed = 0
            if committed >= n:
                act()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_killing_a_worker_mid_study_loses_nothing(tmp_path, client):
    path = tmp_path / "s.zarr"
    study = tiny_study()
    study["budget"] = {"trials_per_cell": 5, "initial_points": 5}
    pids = list(client.run(os.getpid).values())
    killed = []

    def kill() -> None:
        os.kill(pids[0], signal.SIGKILL)
        killed.append(pids[0])

    thread = _once_committed(path, 4, kill)
    summary = run_study(study_from_dict(study), path, client=client, trial_fn=trial_hooks.sleepy_trial)
    thread.join()
    assert killed, "the worker was never killed"
    assert summary.n_trials == 20 and set(per_key(path).values()) == {5}
    assert all(r.status == OK for r in SweepStore.open(path).records())
    assert_no_duplicate_points(path)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests


def test_second_driver_is_refused(tmp_path, client):
    path = tmp_path / "s.zarr"
    study = study_from_dict(tiny_study(budget={"trials_per_cell": 1, "initial_points": 1}))
    run_study(study, path, client=client, trial_fn=trial_hooks.sleepy_trial)
    with SweepStore.open(path, writable=True):
        with pytest.raises(StoreLockedError, match="Only one driver may write a store"):
            resume_study(path, client=client)


def test_resume_refuses_a_changed_study_unless_extended(tmp_path, client):
    path = tmp_path / "s.zarr"
    base = tiny_study(budget={"trials_per_cell": 2, "initial_points": 2})
    run_study(study_from_dict(base), path, client=client, trial_fn=trial_hooks.sleepy_trial)
    grown = tiny_study(
        budget={"trials_per_cell": 3, "initial_points": 2}, acquisition={"n_haadf": [5, 9, 13], "n_chem": [3]}
    )
    with pytest.raises(SpecError, match="differs from the one stored.*--extend"):
        resume_study(path, study=study_from_dict(grown), client=client)
    assert len(SweepStore.open(path)) == 8  # untouched
    summary = resume_study(
        path, study=study_from_dict(grown), extend=True, client=client, trial_fn=trial_hooks.sleepy_trial
    )
    assert summary.n_trials == 2 * 3 * 3 and summary.n_new == 10
    assert set(per_key(path).values()) == {3}
    assert SweepStore.open(path).n_haadf == (5, 9, 13)
    # a finished study resumes to nothing new
    assert resume_study(path, client=client).n_new == 0


def test_a_cells_start_is_computed_once_and_absolute_weights_are_recorded(monkeypatch):
    from tomosweep.sweep import methods
    from tomosweep.sweep.trial import _cell_data_cached

    calls = []
    real_start = methods.fused_start

    def counting_start(*args, **kwargs):
        calls.append(1)
        return real_start(*args, **kwargs)

    monkeypatch.setattr(methods, "fused_start", counting_start)
    _cell_data_cached.cache_clear()
    study = study_from_dict(tiny_study(methods={"fused": {}, "poisson_ml_tv": {}}))
    study_json = json.dumps(study.to_json())
    records = [
        run_trial(TrialTask(study_json, "fused", 5, 3, {"lambda_haadf": lam, "lambda_tv": 1.0})) for lam in (0.1, 10.0)
    ] + [run_trial(TrialTask(study_json, "poisson_ml_tv", 5, 3, {"lambda_tv": 1.0}))]
    assert [r.status for r in records] == [OK, OK, OK], [r.error for r in records]
    assert len(calls) == 1  # one start for the cell, shared by both methods' trials
    solver = [r.info["solver"] for r in records[:2]]
    assert solver[0]["balance"] == solver[1]["balance"] > 0
    for lam, info in zip((0.1, 10.0), solver, strict=True):
        assert info["lambda_haadf"] == lam
        assert info["lambda_haadf_abs"] == pytest.approx(lam * info["balance"])
    _cell_data_cached.cache_clear()


def test_hebt_runs_on_a_grid_whose_chemical_tilts_are_not_haadf_tilts():
    # 9 HAADF tilts over ±70° and 4 chemical tilts share only the end points: HEBT pairs
    # each chemical map with the HAADF recorded alongside it, not with a HAADF-series tilt.
    from tomosweep.sweep.trial import _cell_data_cached

    _cell_data_cached.cache_clear()
    study = study_from_dict(tiny_study(acquisition={"n_haadf": [9], "n_chem": [4]}, methods={"hebt": {}}))
    cell = _cell_data_cached(json.dumps(study.to_json()), 9, 4)
    assert cell.haadf_at_chem.shape == cell.chem.shape[1:]
    record = run_trial(TrialTask(json.dumps(study.to_json()), "hebt", 9, 4, {"alpha": 0.3, "n_iter": 20}))
    assert record.status == OK, record.error
    assert 0 < record.nrmse < 1.5
    _cell_data_cached.cache_clear()


def _sequential(study, path, client, **kw):
    """Run a study one trial at a time (capacity 1), as the GP-Hedge resume contract is stated for."""
    from tomosweep.sweep.api import create_store
    from tomosweep.sweep.runner import Runner

    spec = study_from_dict(study)
    store = SweepStore.open(path, writable=True) if path.exists() else create_store(spec, path)
    with store:
        return Runner(spec, store, client, trial_fn=trial_hooks.synthetic_trial, slots=1, queue_extra=0, **kw).run()


def _fused_only(budget: int, surrogate: str = "map") -> dict:
    return tiny_study(
        acquisition={"n_haadf": [9], "n_chem": [3]},
        methods={"fused": {"lambda_haadf": {"low": 0.1, "high": 10.0}, "lambda_tv": {"low": 0.1, "high": 10.0}}},
        budget={"trials_per_cell": budget, "initial_points": 3, "surrogate": surrogate},
    )


@pytest.mark.parametrize("surrogate", ["map", "cell"])
def test_a_resumed_study_continues_with_the_same_optimiser_state(tmp_path, client, surrogate):
    _sequential(_fused_only(9, surrogate), tmp_path / "straight.zarr", client)
    _sequential(_fused_only(5, surrogate), tmp_path / "split.zarr", client)
    with SweepStore.open(tmp_path / "split.zarr") as store:
        states = store.optimiser_state()
        assert states["fused/9/3"]["n_asked"] == 5
        # GP-Hedge's gains and last nominees live with the map's surrogate, or with the cell's
        hedge = states["fused/map" if surrogate == "map" else "fused/9/3"]
        assert len(hedge["gains"]) == 3 and hedge["nominees"] is not None
        assert ("fused/map" in states) == (surrogate == "map")
    _sequential(_fused_only(9, surrogate), tmp_path / "split.zarr", client)  # the extended budget: 4 more
    straight = SweepStore.open(tmp_path / "straight.zarr")
    split = SweepStore.open(tmp_path / "split.zarr")
    assert [r.params for r in split.records()] == [r.params for r in straight.records()]
    assert [r.proposed_by for r in split.records()] == [r.proposed_by for r in straight.records()]
    assert split.optimiser_state() == straight.optimiser_state()
    bys = [r.proposed_by for r in straight.records()]
    assert bys[:3] == ["random"] * 3 and set(bys[3:]) <= {"EI", "LCB", "PI"}


def test_a_cell_whose_space_is_exhausted_stops_early_and_says_so(tmp_path, client):
    study = tiny_study(
        acquisition={"n_haadf": [9], "n_chem": [3]},
        methods={"sirt": {"n_iter": {"low": 2, "high": 4, "prior": "linear"}}},
        budget={"trials_per_cell": 8, "initial_points": 2},
    )
    summary = run_study(
        study_from_dict(study), tmp_path / "e.zarr", client=client, trial_fn=trial_hooks.synthetic_trial
    )
    assert summary.n_trials == 3 and summary.exhausted == (("sirt", 9, 3),) and summary.complete
    points = sorted(r.params["n_iter"] for r in SweepStore.open(tmp_path / "e.zarr").records())
    assert points == [2, 3, 4]


ACQ = {"EI", "LCB", "PI"}


def test_warm_start_from_an_earlier_study_starts_each_cell_at_its_best_points(tmp_path, client):
    first = _fused_only(6)
    run_study(study_from_dict(first), tmp_path / "a.zarr", client=client, trial_fn=trial_hooks.synthetic_trial)
    earlier = sorted((r for r in SweepStore.open(tmp_path / "a.zarr").records()), key=lambda r: r.nrmse)
    second = _fused_only(4)
    second["acquisition"] = {"n_haadf": [9, 12], "n_chem": [3]}  # 12 HAADF tilts: nearest cell is 9 × 3
    second["seed"] = 11
    _sequential(second, tmp_path / "b.zarr", client, warm_from=earlier)
    records = SweepStore.open(tmp_path / "b.zarr").records()
    for h in (9, 12):
        cell = [r for r in records if r.n_haadf == h]
        assert [r.proposed_by for r in cell[:2]] == ["warm-start", "warm-start"]
        assert [r.params for r in cell[:2]] == [r.params for r in earlier[:2]]
        # the last initial point is never a warm start; by then the two cells have four results
        # between them (more than initial_points), so the map's GP proposes it
        assert cell[2].proposed_by in ACQ


def test_export_draws_best_weights_and_a_cells_objective(tmp_path, client):
    import pandas as pd

    from tomosweep.sweep.api import export_store

    study = tiny_study(budget={"trials_per_cell": 5, "initial_points": 2})
    study["methods"]["fused"]["lambda_tv"] = {"low": 0.1, "high": 10.0}
    path = tmp_path / "s.zarr"
    run_study(study_from_dict(study), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    files = {p.name for p in export_store(path, tmp_path / "out", cell=(9, 3))}
    assert {
        "best_weights_fused.png",
        "best_weights_sirt.png",
        "objective_fused_9x3.png",
        "objective_sirt_9x3.png",
    } <= files
    for name in files:
        if name.endswith(".png"):
            assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert set(trials["proposed_by"]) <= {"random", "warm-start", "EI", "LCB", "PI"}
    assert (trials["proposed_by"] != "random").any()
    with pytest.raises(StoreError, match="not on this store's grid"):
        export_store(path, tmp_path / "out2", cell=(9, 4))


def test_median_stopping_thresholds():
    from tomosweep.sweep.runner import PRUNE_MIN_TRIALS, prune_thresholds

    curves = [[(10, 0.9 - 0.01 * i), (20, 0.5 + 0.01 * i), (30, 0.4 + 0.01 * i)] for i in range(PRUNE_MIN_TRIALS)]
    assert prune_thresholds(curves[:-1]) == {}  # too few trials to judge
    thresholds = prune_thresholds(curves + [[(10, 0.3)]])  # one converged after 10 iterations, at 0.3
    assert set(thresholds) == {20, 30}  # never at the first checkpoint
    assert thresholds[20] == pytest.approx(0.515)  # median of 0.50 … 0.54 and 0.3
    assert thresholds[30] == pytest.approx(0.415)


def test_a_trial_over_the_threshold_is_pruned_and_says_where():
    from tomosweep.results import PRUNED
    from tomosweep.sweep.trial import _cell_data_cached

    _cell_data_cached.cache_clear()
    study = study_from_dict(tiny_study(methods={"fused": {"n_iter": 60, "lambda_haadf": {"low": 0.1, "high": 10.0}}}))
    study_json = json.dumps(study.to_json())
    params = {"lambda_haadf": 1.0, "lambda_chem": 1.0, "lambda_tv": 1.0, "n_iter": 60}
    free = run_trial(TrialTask(study_json, "fused", 9, 3, params))
    assert free.status == OK and [k for k, _ in free.info["curve"]] == list(range(10, free.iterations + 1, 10))
    stopped = run_trial(TrialTask(study_json, "fused", 9, 3, params, prune={20: 0.0, 30: 0.0}))
    assert stopped.status == PRUNED and stopped.iterations == 20
    assert stopped.info["pruned"] == {"at": 20, "of": 60, "threshold": 0.0}
    assert stopped.nrmse == pytest.approx(free.info["curve"][1][1], rel=1e-9)  # the NRMSE it had reached
    _cell_data_cached.cache_clear()


def test_resume_refuses_a_specimen_file_that_changed(tmp_path, client):
    from tomosweep.phantoms import make_specimen, save_specimen

    specimen = make_specimen("nanocubes", 16)
    path = save_specimen(specimen, tmp_path / "truth.npz")
    study = tiny_study(phantom={"file": str(path)}, budget={"trials_per_cell": 2, "initial_points": 1})
    store = tmp_path / "s.zarr"
    run_study(study_from_dict(study), store, client=client, trial_fn=trial_hooks.synthetic_trial)
    assert SweepStore.open(store).inputs["phantom.file"]["path"] == str(path)
    resume_study(store, client=client, trial_fn=trial_hooks.synthetic_trial)  # unchanged: fine
    volumes = specimen.volumes.copy()
    volumes[0] *= 2  # same elements, other values
    changed = type(specimen).from_symbols("changed", specimen.elements, volumes)
    save_specimen(changed, path, overwrite=True)
    before = SweepStore.open(store).n_committed
    with pytest.raises(SpecError, match=r"phantom.file .*truth.npz has changed since .*sha256 then [0-9a-f]{16}…, now"):
        resume_study(store, client=client, trial_fn=trial_hooks.synthetic_trial)
    assert SweepStore.open(store).n_committed == before


def test_export_never_writes_into_a_store_nor_replaces_files_unasked(tmp_path, client):
    from tomosweep.sweep.api import export_store

    path = tmp_path / "s.zarr"
    run_study(study_from_dict(tiny_study()), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    with pytest.raises(StoreError, match="is inside the store"):
        export_store(path, path / "exports")
    with pytest.raises(StoreError, match="is inside the store"):
        export_store(path, path)
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(StoreError, match="is a file; export writes a folder"):
        export_store(path, tmp_path / "a_file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    export_store(path, out)
    with pytest.raises(StoreError, match=r"already holds trials.csv, .*pass --overwrite to replace these \d+ files"):
        export_store(path, out)
    export_store(path, out, overwrite=True)
    (out / "trials.csv").write_text("edited by hand")
    with pytest.raises(StoreError, match=r"holds trials.csv, not written by tomosweep \(or changed since\): never"):
        export_store(path, out, overwrite=True)  # an edited file is the user's now
    assert (out / "trials.csv").read_text() == "edited by hand" and (out / "notes.txt").read_text() == "mine"
    assert not (path / "exports").exists()


def test_check_reports_and_repairs_derived_damage_without_touching_trials(tmp_path, client):
    import subprocess
    import sys

    import zarr

    from tomosweep.sweep.check import check_store

    path = tmp_path / "s.zarr"
    run_study(study_from_dict(tiny_study()), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    assert check_store(path) == []
    trials_before = [(r.params, r.nrmse) for r in SweepStore.open(path).records()]
    best = SweepStore.open(path).maps("sirt")["best_nrmse"][0, 0]
    zarr.open_array(path / "maps" / "sirt" / "best_nrmse", mode="r+")[0, 0] = np.nan  # a best the trials hold
    group = zarr.open_group(path, mode="r+")
    group.attrs["optimiser"] = {**group.attrs["optimiser"], "fused/5/3": {"n_asked": 2, "gains": [1.0, "x", 0.0]}}
    findings = check_store(path)
    assert any("maps of sirt lack trials the committed rows hold" in f for f in findings)
    assert any("optimiser state fused/5/3 is unreadable" in f for f in findings)
    cli = [sys.executable, "-m", "tomosweep.cli", "check", str(path)]
    assert subprocess.run(cli, capture_output=True, text=True).returncode == 1
    repaired = subprocess.run([*cli, "--repair"], capture_output=True, text=True)
    assert repaired.returncode == 0 and "repaired" in repaired.stdout
    assert check_store(path) == []
    assert [(r.params, r.nrmse) for r in SweepStore.open(path).records()] == trials_before
    assert SweepStore.open(path).maps("sirt")["best_nrmse"][0, 0] == best
    group.attrs["n_committed"] = -1
    damaged = subprocess.run(cli, capture_output=True, text=True)
    assert damaged.returncode == 2 and "is damaged: n_committed is -1" in " ".join(damaged.stderr.split())


def test_the_heatmap_shows_each_cells_best_nrmse_in_its_place(tmp_path, client):
    from tomosweep.results.export import best_weights_figure, heatmap_figure

    study = tiny_study(acquisition={"n_haadf": [5, 9], "n_chem": [3, 4]})
    path = tmp_path / "s.zarr"
    run_study(study_from_dict(study), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    with SweepStore.open(path) as store:
        fig = heatmap_figure(store)
        for ax, method in zip(fig.axes, store.methods, strict=False):
            image = ax.get_images()[0]
            grid = store.maps(method)["best_nrmse"]
            assert np.array_equal(np.asarray(image.get_array()), grid)  # rows = HAADF, columns = chemical
            assert image.origin == "lower"
            assert [t.get_text() for t in ax.get_yticklabels()] == ["5", "9"]
            assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "4"]
            texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
            assert texts[(1, 0)] == f"{grid[1, 0]:.2f}"  # 9 HAADF × 3 chemical tilts
        weights = best_weights_figure(store, "fused")
        shown = np.asarray(weights.axes[0].get_images()[0].get_array())
        names = store.param_names
        assert np.array_equal(shown, store.maps("fused")["best_params"][:, :, names.index("lambda_haadf")])


def test_a_worker_the_local_cluster_closes_mid_study_is_opened_again(tmp_path, caplog):
    """distributed's local cluster closes a nanny for good when its worker, restarted twice within
    15 s, is still down at its lost-worker check; the runner opens it again, so the study ends
    with the cluster it started with."""
    import cloudpickle

    from tomosweep.cluster import open_client

    cloudpickle.register_pickle_by_value(trial_hooks)
    path = tmp_path / "s.zarr"
    study = tiny_study()
    study["budget"] = {"trials_per_cell": 5, "initial_points": 5}
    with open_client("local", n_workers=2) as own:
        cluster = own.cluster
        closed = []

        def close_a_nanny() -> None:
            name = sorted(cluster.workers, key=str)[0]
            cluster.sync(cluster.workers.pop(name).close)  # as distributed's check does
            closed.append(str(name))

        thread = _once_committed(path, 4, close_a_nanny)
        with caplog.at_level("WARNING", logger="tomosweep.sweep.runner"):
            summary = run_study(study_from_dict(study), path, client=own, trial_fn=trial_hooks.sleepy_trial)
        thread.join()
        assert closed, "no nanny was closed"
        assert summary.n_trials == 20 and all(r.status == OK for r in SweepStore.open(path).records())
        assert f"the local cluster had closed worker {closed[0]} while it restarted; opened it again" in caplog.text
        own.wait_for_workers(2, timeout=60)
        deadline = time.monotonic() + 30  # the cluster lists a nanny a moment after its worker reached the scheduler
        while len(cluster.workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(str(n) for n in cluster.workers) == ["0", "1"]
