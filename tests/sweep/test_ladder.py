"""The resolution ladder: rungs stored inside the study's store, each starting the next."""

from __future__ import annotations

import pytest
import trial_hooks
from sweep_support import run_cli, tiny_study

from tomosweep.errors import SpecError, StoreError
from tomosweep.results import SweepStore
from tomosweep.sweep import study_from_dict
from tomosweep.sweep.api import resume_study, run_study
from tomosweep.sweep.ladder import rung_path, rung_study


def _laddered(trials: int = 6, **budget) -> dict:
    study = tiny_study(
        phantom={"name": "nanocubes", "size": 24},
        acquisition={"n_haadf": [5, 9], "n_chem": [3]},
        methods={"fused": {"lambda_haadf": {"low": 0.1, "high": 10.0}, "lambda_tv": {"low": 0.1, "high": 10.0}}},
        budget={"trials_per_cell": trials, "initial_points": 3, "ladder": [16], **budget},
    )
    return study


def test_a_rung_is_the_same_study_at_its_size_with_its_own_budget():
    study = study_from_dict(_laddered(ladder_trials=4))
    rung = rung_study(study, 16)
    assert rung.phantom.size == 16 and rung.phantom.name == study.phantom.name
    assert rung.budget.trials_per_cell == 4 and rung.budget.ladder == []
    assert rung.acquisition == study.acquisition and rung.methods == study.methods and rung.seed == study.seed
    # the default rung budget is 2 trials per cell (never above the cap)
    assert study_from_dict(_laddered(trials=10)).budget.rung_trials() == 2
    assert study_from_dict(_laddered(trials=1, initial_points=1)).budget.rung_trials() == 1


def test_each_cell_starts_from_the_rung_below_and_a_resume_goes_on(tmp_path, client, capsys):
    path = tmp_path / "s.zarr"
    run_study(study_from_dict(_laddered(ladder_trials=3)), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    rung = SweepStore.open(rung_path(path, 16))
    assert rung.spec["phantom"]["size"] == 16 and rung.n_committed == 2 * 3  # 2 cells × 3
    main = SweepStore.open(path)
    assert main.n_committed == 2 * 6
    for h in (5, 9):
        rung_best = sorted((r for r in rung.records() if r.n_haadf == h), key=lambda r: r.nrmse)
        cell = [r for r in main.records() if r.n_haadf == h]
        # under the map surrogate: the rung's two best points at this cell, best first
        assert [r.proposed_by for r in cell[:2]] == ["warm-start", "warm-start"]
        assert [r.params for r in cell[:2]] == [r.params for r in rung_best[:2]]
    # a larger budget for the rung and the study: the rung grows first, then the study
    code, out, err = run_cli(["check", path], capsys)
    assert code == 0, out + err
    code, out, err = run_cli(["status", path], capsys)
    assert code == 0 and f"ladder rung 16³: 6 trials (tomosweep status {rung_path(path, 16)})" in " ".join(out.split())
    resume_study(
        path,
        study=study_from_dict(_laddered(trials=8, ladder_trials=4)),
        extend=True,
        client=client,
        trial_fn=trial_hooks.synthetic_trial,
    )
    assert SweepStore.open(rung_path(path, 16)).n_committed == 2 * 4
    assert SweepStore.open(path).n_committed == 2 * 8


def test_a_stored_rung_of_another_study_is_refused(tmp_path, client):
    path = tmp_path / "s.zarr"
    run_study(study_from_dict(_laddered()), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    other = study_from_dict({**_laddered(), "seed": 99})
    with SweepStore.open(rung_path(path, 16), writable=True) as store:
        store.update_study(spec=rung_study(other, 16).to_json(), spec_hash="0" * 16, n_haadf=[5, 9], n_chem=[3])
    with pytest.raises(StoreError, match=r"ladder/16 is a rung made for another study .*Nothing was written"):
        resume_study(path, client=client, trial_fn=trial_hooks.synthetic_trial)


@pytest.mark.parametrize(
    ("budget", "phantom", "message"),
    [
        ({"ladder": [24]}, None, "below the study's phantom.size"),
        ({"ladder": [20, 16]}, None, "smallest first"),
        ({"ladder": [8]}, None, "sizes ≥ 16"),
        ({"ladder": [16]}, {"file": "x.npz"}, "needs a built-in specimen"),
    ],
)
def test_a_ladder_that_cannot_be_climbed_is_refused_by_key(budget, phantom, message):
    raw = _laddered(**budget)
    if phantom:
        raw["phantom"] = phantom
    with pytest.raises(SpecError, match=message):
        study_from_dict(raw)


def test_a_laddered_study_runs_real_trials_from_the_command_line(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(
        """
name = "laddered"
seed = 1
[phantom]
name = "nanocubes"
size = 20
[acquisition]
n_haadf = [6]
n_chem = [3]
[methods.sirt]
n_iter = { low = 2, high = 30, prior = "log" }
[budget]
trials_per_cell = 4
initial_points = 2
ladder = [16]
ladder_trials = 3
[cluster]
n_workers = 1
"""
    )
    store = tmp_path / "s.zarr"
    code, out, err = run_cli(["run", study, "--store", store], capsys)
    assert code == 0, out + err
    with SweepStore.open(rung_path(store, 16)) as rung:
        assert rung.n_committed == 3 and all(r.ok for r in rung.records())
    with SweepStore.open(store) as main:
        records = main.records()
        assert len(records) == 4 and records[0].proposed_by == "warm-start"
        assert 0 < min(r.nrmse for r in records) < 1


def _sequential_ladder(raw: dict, path, client) -> None:
    """A laddered study one trial at a time (the determinism contract is stated for that)."""
    from tomosweep.sweep.api import create_store
    from tomosweep.sweep.ladder import climb
    from tomosweep.sweep.runner import Runner

    study = study_from_dict(raw)

    def run(s, store, warm):
        return Runner(
            s, store, client, trial_fn=trial_hooks.synthetic_trial, slots=1, queue_extra=0, warm_from=warm
        ).run()

    store = SweepStore.open(path, writable=True) if path.exists() else create_store(study, path)
    with store:
        run(study, store, climb(study, path, run, create=lambda s, p: create_store(s, p)))


def test_a_laddered_study_resumed_with_a_larger_budget_equals_one_run_straight(tmp_path, client):
    _sequential_ladder(_laddered(trials=6, ladder_trials=3), tmp_path / "straight.zarr", client)
    _sequential_ladder(_laddered(trials=4, ladder_trials=3), tmp_path / "split.zarr", client)
    _sequential_ladder(_laddered(trials=6, ladder_trials=3), tmp_path / "split.zarr", client)
    for part in ("", "ladder/16"):
        straight = SweepStore.open(tmp_path / "straight.zarr" / part)
        split = SweepStore.open(tmp_path / "split.zarr" / part)
        assert [r.params for r in split.records()] == [r.params for r in straight.records()]
        assert [r.proposed_by for r in split.records()] == [r.proposed_by for r in straight.records()]
        assert split.optimiser_state() == straight.optimiser_state()


def test_raising_ladder_trials_alone_on_a_complete_study_is_refused_as_warming_nothing(tmp_path, client):
    path = tmp_path / "s.zarr"
    run_study(study_from_dict(_laddered(ladder_trials=3)), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    before = SweepStore.open(rung_path(path, 16)).n_committed
    with pytest.raises(SpecError, match="ladder_trials is raised but every cell .* would warm nothing"):
        resume_study(
            path,
            study=study_from_dict(_laddered(ladder_trials=4)),
            extend=True,
            client=client,
            trial_fn=trial_hooks.synthetic_trial,
        )
    assert SweepStore.open(rung_path(path, 16)).n_committed == before
