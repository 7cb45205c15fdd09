"""The map surrogate: one GP per method over (weights, tilt counts), adaptive budgets, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import trial_hooks
from sweep_support import tiny_study

from tomosweep.results import SweepStore
from tomosweep.search.base import derived_seed
from tomosweep.search.cell import cell_search
from tomosweep.search.map import MapCell, MapGP, map_searches, map_state_key, map_states, restore_maps
from tomosweep.sweep import study_from_dict

SPACE = {"a": (0.01, 100.0, "log", "real"), "b": (0.01, 100.0, "log", "real")}
CELLS = [(10, 3), (10, 12), (40, 3), (40, 12)]


def optimum(cell) -> float:
    """Where the best ``a`` lies in a cell: it moves smoothly with the HAADF tilts."""
    return 0.5 * (cell[0] / 10) ** 1.5


def objective(params, cell) -> float:
    """Minimum 0.1 + 0.3 / n_chem at a = optimum(cell), b = 0.3."""
    return (
        0.1
        + 0.3 / cell[1]
        + 0.05 * math.log10(params["a"] / optimum(cell)) ** 2
        + 0.05 * math.log10(params["b"] / 0.3) ** 2
    )


def make_map(**options):
    return map_searches("fused", CELLS, SPACE, seed=7, n_initial=4, **options)


def drive(opts, n, start=0, cells=None):
    """Round-robin over the cells, one trial at a time; the points asked, in order."""
    cells = cells or list(opts)
    asked = []
    for k in range(start, start + n):
        cell = cells[k % len(cells)]
        proposal = opts[cell].ask(k)
        if proposal is None:
            asked.append((cell, None))
            continue
        opts[cell].tell(proposal.params, objective(proposal.params, cell), key=k)
        asked.append((cell, proposal.params))
    return asked


@pytest.mark.slow
def test_a_cell_whose_neighbours_were_searched_needs_few_trials_of_its_own():
    gaps = {}
    for mode in ("map", "cell"):
        for seed in range(4):
            if mode == "map":
                opts = map_searches("fused", CELLS, SPACE, seed=seed, n_initial=4)
            else:
                opts = {cell: cell_search(SPACE, n_initial=4, seed=derived_seed(seed, *cell)) for cell in CELLS}
            drive(opts, 24, cells=CELLS[:3])  # three cells searched, 8 trials each
            drive(opts, 4, start=100, cells=CELLS[3:])  # the fourth: 4 trials of its own
            gaps.setdefault(mode, []).append(opts[CELLS[3]].best()[0] - (0.1 + 0.3 / CELLS[3][1]))
    # measured: map [0.0011, 0.0003, 0.0001, 0.0007], alone [0.0078, 0.048, 0.012, 0.028]
    assert np.median(gaps["map"]) < 0.005 < np.median(gaps["cell"])
    assert max(gaps["map"]) < 0.005


def test_same_results_same_points_and_a_restored_map_continues_the_same_sequence():
    straight = make_map()
    drive(straight, 10)
    states = json.loads(json.dumps({**map_states(straight), **{str(k): o.state() for k, o in straight.items()}}))
    resumed = make_map()
    for cell, opt in straight.items():
        for x, y in zip(opt.X, opt.Y, strict=True):
            resumed[cell].tell(dict(zip(opt.names, x, strict=True)), y)
    restore_maps(resumed, states)
    for cell, opt in resumed.items():
        opt.restore(states[str(cell)])
    assert drive(resumed, 4, start=10) == drive(straight, 4, start=10)
    again = make_map()
    assert drive(again, 14) == [(c, p) for c, p in drive(make_map(), 14)]


def test_the_acquisition_at_a_context_is_the_full_model_with_the_tilt_counts_held():
    opts = make_map()
    drive(opts, 8)
    model = opts[CELLS[0]].model
    X, Y, _ = model.training_set(CELLS[1], with_pending=False)
    gp = model.fit(X, Y, 0)
    z = model.context(CELLS[1])
    w = np.array([[0.4, 0.6], [0.1, 0.9]])
    mean, std = gp.predict(np.hstack([w, np.tile(z, (2, 1))]))
    assert np.all(np.isfinite(mean)) and np.all(std >= 0)
    # at a trained point the noise-free posterior is near its target, and its uncertainty small
    at_train, sd_train = gp.predict(X[:1])
    assert abs(at_train[0] - Y[0]) < 0.5 * np.std(Y) + 1e-9 and sd_train[0] < np.std(Y)


def test_a_crowded_map_fits_the_asking_cell_and_its_nearest_cells_only():
    cells = [(h, c) for h in (5, 10, 20, 40, 80) for c in (2, 4, 8, 16, 32)]
    surrogate = MapGP(cells, SPACE, seed=0, max_points=60)
    for cell in cells:
        opt = MapCell(SPACE, model=surrogate, cell=cell, n_initial=2, seed=1)
        for k in range(5):
            opt.tell({"a": 1.0 + k, "b": 1.0}, 0.5)
    near = surrogate.local_cells((5, 2))  # a corner: itself and its 3 neighbours (20 trials), then ring 2 (25)
    assert near[0] == (5, 2) and set(near[:4]) == {(5, 2), (5, 4), (10, 2), (10, 4)}
    assert len(near) == 9
    X, Y, own = surrogate.training_set((20, 8), with_pending=False)  # the centre: its first ring is thinned
    assert len(X) <= 60 + 5 and len(own) == 5 and X.shape[1] == 4


def test_a_cell_stops_once_improvement_stays_below_the_tolerance_and_the_reason_is_kept():
    opts = make_map(stop_tolerance=0.02, stop_patience=2)
    asked = drive(opts, 40)
    stopped = {cell for cell, p in asked if p is None}
    assert stopped, "no cell converged on an easy bowl"
    for cell in stopped:
        opt = opts[cell]
        assert opt.stopped.startswith("converged: expected improvement below 2 %")
        assert opt.ask("again") is None
        state = json.loads(json.dumps(opt.state()))
        fresh = cell_search(SPACE, n_initial=4, seed=0)
        fresh.restore(state)
        assert fresh.stopped == opt.stopped and fresh.ask("x") is None
        # it stopped near its optimum, not before it had a say
        assert opt.best()[0] < 0.1 + 0.3 / cell[1] + 0.01 and opt.n_told >= 4


def test_a_damaged_map_state_is_named_and_left_fresh():
    opts = make_map()
    problems = restore_maps(opts, {map_state_key("fused"): {"gains": [1.0, math.inf, 0.0]}})
    assert problems == [("fused/map", "stored GP-Hedge gains must be 3 finite numbers, got [1.0, inf, 0.0]")]
    assert next(iter(opts.values())).model.hedge.gains.tolist() == [0.0, 0.0, 0.0]


def test_the_budget_section_takes_the_surrogate_and_the_adaptive_budget():
    study = study_from_dict(
        tiny_study(budget={"trials_per_cell": 6, "surrogate": "map", "stop_tolerance": 0.01, "total": 10})
    )
    assert study.budget.surrogate == "map" and study.budget.stop_patience == 3 and study.budget.total == 10
    from tomosweep.errors import SpecError

    with pytest.raises(SpecError, match="stop_tolerance"):
        study_from_dict(tiny_study(budget={"trials_per_cell": 6, "stop_tolerance": 2}))


def _sequential(study, path, client):
    from tomosweep.sweep.api import create_store
    from tomosweep.sweep.runner import Runner

    spec = study_from_dict(study)
    store = SweepStore.open(path, writable=True) if path.exists() else create_store(spec, path)
    with store:
        return Runner(spec, store, client, trial_fn=trial_hooks.synthetic_trial, slots=1, queue_extra=0).run()


def _map_study(budget: int, **extra) -> dict:
    return tiny_study(
        acquisition={"n_haadf": [5, 9], "n_chem": [3, 6]},
        methods={"fused": {"lambda_haadf": {"low": 0.1, "high": 10.0}, "lambda_tv": {"low": 0.1, "high": 10.0}}},
        budget={"trials_per_cell": budget, "initial_points": 3, "surrogate": "map", **extra},
    )


@pytest.mark.slow
def test_a_map_study_resumes_exactly_and_a_total_caps_it(tmp_path, client):
    _sequential(_map_study(5), tmp_path / "straight.zarr", client)
    _sequential(_map_study(3), tmp_path / "split.zarr", client)
    _sequential(_map_study(5), tmp_path / "split.zarr", client)  # the extended budget: 2 more per cell
    straight = SweepStore.open(tmp_path / "straight.zarr")
    split = SweepStore.open(tmp_path / "split.zarr")
    assert [r.params for r in split.records()] == [r.params for r in straight.records()]
    assert split.optimiser_state() == straight.optimiser_state()
    assert "fused/map" in straight.optimiser_state()
    assert {r.proposed_by for r in straight.records()} & {"EI", "LCB", "PI"}
    summary = _sequential(_map_study(4, total=6), tmp_path / "capped.zarr", client)
    assert summary.n_trials == 6 and summary.budget == 6 and summary.complete


def test_status_and_exports_say_which_cells_stopped_early_and_why(tmp_path, client, capsys):
    import pandas as pd
    from sweep_support import run_cli

    from tomosweep.sweep.api import run_study

    study = tiny_study(
        methods={"fused": {"lambda_haadf": {"low": 0.1, "high": 10.0}, "lambda_tv": {"low": 0.1, "high": 10.0}}},
        budget={"trials_per_cell": 30, "initial_points": 3, "stop_tolerance": 0.05, "stop_patience": 2},
    )
    path = tmp_path / "s.zarr"
    run_study(study_from_dict(study), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    code, out, err = run_cli(["status", path, "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    stopped = [r for r in rows if r["stopped"]]
    assert stopped, "no cell of an easy bowl stopped early"
    assert all(r["stopped"].startswith("converged: expected improvement below 5 %") for r in stopped)
    assert all(r["trials"] < 30 for r in stopped)
    code, out, err = run_cli(["status", path], capsys)
    assert code == 0 and "stopped before their cap" in out
    assert f"fused {stopped[0]['n_haadf']}×{stopped[0]['n_chem']} after {stopped[0]['trials']} trials" in out
    code, out, err = run_cli(["export", path, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    reasons = pd.read_csv(tmp_path / "out" / "best_params.csv")["stopped"].astype(object).fillna("")
    assert sorted(r for r in reasons if r) == sorted(r["stopped"] for r in stopped)
