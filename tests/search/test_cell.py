"""The per-cell optimiser: GP-Hedge state, asynchronous proposals, no repeats, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tomosweep.search.cell import ACQ_FUNCS, PENALTY_FLOOR, CellGP, cell_search

SPACE = {
    "a": (0.01, 100.0, "log", "real"),
    "b": (0.01, 100.0, "log", "real"),
    "n": (2, 40, "log", "int"),
}


def bowl(p) -> float:
    """A smooth objective with its minimum 0.1 at a = 2, b = 0.3, n = 12."""
    return (
        0.1
        + 0.05 * math.log10(p["a"] / 2) ** 2
        + 0.05 * math.log10(p["b"] / 0.3) ** 2
        + 0.2 * math.log10(p["n"] / 12) ** 2
    )


def run(opt: CellGP, n: int, start: int = 0) -> list[dict]:
    points = []
    for k in range(start, start + n):
        proposal = opt.ask(k)
        points.append(proposal.params)
        opt.tell(proposal.params, bowl(proposal.params), key=k)
    return points


def test_same_seed_same_points_and_another_seed_other_points():
    a = run(cell_search(SPACE, n_initial=3, seed=5), 7)
    b = run(cell_search(SPACE, n_initial=3, seed=5), 7)
    c = run(cell_search(SPACE, n_initial=3, seed=6), 7)
    assert a == b
    assert a != c


def test_the_gp_learns_the_bowl_and_every_proposal_names_its_acquisition():
    opt = cell_search(SPACE, n_initial=4, seed=1)
    bys = []
    for k in range(20):
        proposal = opt.ask(k)
        bys.append(proposal.by)
        opt.tell(proposal.params, bowl(proposal.params), key=k)
    assert bys[:4] == ["random"] * 4
    assert set(bys[4:]) <= set(ACQ_FUNCS)
    assert opt.best()[0] < 0.105  # random search at 20 points: median 0.120 over 10 seeds


def test_hedge_gains_change_with_results_and_only_with_results():
    opt = cell_search(SPACE, n_initial=2, seed=2)
    run(opt, 3)
    assert opt.nominees is not None and opt.nominees.shape == (3, 3)
    before = opt.gains.copy()
    run(opt, 1, start=3)
    assert not np.array_equal(opt.gains, before)
    # asks with no new result in between (trials in flight) leave the gains alone
    settled = opt.gains.copy()
    opt.ask("x")
    after_one = opt.gains.copy()
    opt.ask("y")
    assert np.array_equal(opt.gains, after_one)
    assert not np.array_equal(after_one, settled)  # the first of them saw the last result


def test_asynchronous_asks_are_diverse_under_the_constant_liar():
    for liar in ("cl_min", "cl_mean", "cl_max", "kb"):
        opt = cell_search(SPACE, n_initial=3, seed=3, liar=liar)
        run(opt, 5)
        pending = [opt.ask(("p", i)).params for i in range(4)]
        assert len({json.dumps(p, sort_keys=True) for p in pending}) == 4, liar
        assert len(opt.pending) == 4


def test_a_failed_trial_is_told_a_penalty_above_every_result():
    opt = cell_search(SPACE, n_initial=2, seed=4)
    run(opt, 3)
    opt.tell({"a": 50.0, "b": 50.0, "n": 40}, None)
    opt.tell({"a": 40.0, "b": 40.0, "n": 39}, float("nan"))
    told = opt.told_values()
    assert told[-2:] == [PENALTY_FLOOR, PENALTY_FLOOR]
    assert opt.best()[0] == min(told[:3])
    proposal = opt.ask("next")
    assert proposal is not None and proposal.params != {"a": 50.0, "b": 50.0, "n": 40}


def test_state_round_trips_through_json_and_resumes_the_same_sequence():
    straight = cell_search(SPACE, n_initial=3, seed=9)
    run(straight, 6)
    state = json.loads(json.dumps(straight.state()))  # what the store keeps: plain numbers
    resumed = cell_search(SPACE, n_initial=3, seed=9)
    for x, y in zip(straight.X, straight.Y, strict=True):
        resumed.tell(dict(zip(straight.names, x, strict=True)), y)
    resumed.restore(state)
    assert run(resumed, 4, start=6) == run(straight, 4, start=6)
    assert np.allclose(resumed.gains, straight.gains)


def test_restore_refuses_damaged_state():
    opt = cell_search(SPACE, n_initial=3, seed=9)
    with pytest.raises(ValueError, match="gains"):
        opt.restore({"n_asked": 2, "gains": [0.0, float("nan"), 1.0], "nominees": None})


def test_an_evaluated_point_is_never_proposed_again_and_a_finite_space_runs_out():
    opt = cell_search({"n_iter": (2, 9, "linear", "int")}, n_initial=2, seed=0)
    seen = []
    while (proposal := opt.ask(len(seen))) is not None:
        seen.append(proposal.params["n_iter"])
        opt.tell(proposal.params, abs(proposal.params["n_iter"] - 6) / 10, key=len(seen) - 1)
    assert sorted(seen) == list(range(2, 10))  # each of the 8 points once, then None
    assert opt.exhausted


def test_points_in_flight_are_not_proposed_twice_in_a_small_space():
    opt = cell_search({"n_iter": (1, 3, "linear", "int")}, n_initial=1, seed=0)
    first = opt.ask(0)
    opt.tell(first.params, 0.5, key=0)
    pending = [opt.ask(k) for k in (1, 2)]
    assert {p.params["n_iter"] for p in pending} | {first.params["n_iter"]} == {1, 2, 3}
    assert opt.ask(3) is None


def test_random_sampler_never_fits_a_model():
    opt = cell_search(SPACE, n_initial=2, seed=1, sampler="random")
    run(opt, 8)
    assert opt.nominees is None and np.all(opt.gains == 0)
    assert {opt.ask(99).by} == {"random"}


def test_warm_start_points_come_first_and_one_random_draw_is_kept():
    warm = [{"a": 2.0, "b": 0.3, "n": 12}, {"a": 1.0, "b": 1.0, "n": 10}, {"a": 3.0, "b": 0.1, "n": 20}]
    opt = cell_search(SPACE, n_initial=3, seed=1, warm_start=warm)
    proposals = [opt.ask(k) for k in range(3)]
    assert [p.by for p in proposals] == ["warm-start", "warm-start", "random"]
    assert [p.params for p in proposals[:2]] == warm[:2]


@pytest.mark.parametrize("acq_optimizer", ["lbfgs", "sampling"])
def test_both_acquisition_optimisers_stay_inside_the_space(acq_optimizer):
    opt = cell_search(SPACE, n_initial=3, seed=2, acq_optimizer=acq_optimizer)
    for p in run(opt, 8):
        assert 0.01 <= p["a"] <= 100 and 0.01 <= p["b"] <= 100 and 2 <= p["n"] <= 40
        assert isinstance(p["n"], int)
