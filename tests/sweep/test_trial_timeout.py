"""No hang: a trial past [budget] trial_timeout_s becomes a failed trial, its worker is restarted and
the study finishes; a plugin whose import hangs on the workers fails the same way, by name."""

from __future__ import annotations

import collections
import time

import pytest
import trial_hooks
from sweep_support import tiny_study

from tomosweep.cluster.local import revive_lost_workers
from tomosweep.errors import SpecError
from tomosweep.results import FAILED, OK, SweepStore
from tomosweep.sweep import run_study, study_from_dict
from tomosweep.sweep.runner import stuck_at
from tomosweep.sweep.spec import check_extension, default_trial_timeout, trial_timeout

SIRT = {"sirt": {"n_iter": {"low": 2, "high": 60, "prior": "log"}}}

# hangs on import in every process but the one that set the variable (the driver): a worker-only hang
HANGING_PLUGIN = """
import os
import time

if os.environ.get("TOMOSWEEP_TEST_DRIVER_PID") != str(os.getpid()):
    time.sleep(3600)
"""


@pytest.fixture
def own_client():
    """A cluster of its own: its workers are restarted under the test."""
    import cloudpickle

    from tomosweep.cluster import open_client

    cloudpickle.register_pickle_by_value(trial_hooks)
    with open_client("local", n_workers=2) as c:
        yield c


def test_a_hung_trial_is_a_failed_record_and_the_study_finishes(tmp_path, own_client):
    budget = {"trials_per_cell": 6, "initial_points": 3, "trial_timeout_s": 2}
    study = study_from_dict(tiny_study(methods=SIRT, budget=budget))
    summary = run_study(study, tmp_path / "s.zarr", client=own_client, trial_fn=trial_hooks.hanging_trial)
    records = SweepStore.open(tmp_path / "s.zarr").records()
    assert summary.complete and summary.n_trials == len(records) == 12
    hung = [r for r in records if r.params["n_iter"] > 20]
    assert hung and all(r.status == FAILED for r in hung) and summary.n_failed == len(hung)
    for r in hung:
        assert r.error.startswith("timed out after ") and "([budget] trial_timeout_s = 2)" in r.error
        assert "trial_hooks.py" in r.error and "in hanging_trial" in r.error and r.error.endswith("restarted")
    assert all(r.status == OK for r in records if r.params["n_iter"] <= 20)
    # the restarted workers come back. A restart still under way as the study ends is given a
    # minute (on a loaded machine the second one reconnected after the last commit), and a worker
    # the cluster closed for good after the study (restarted twice within distributed's 15 s
    # lost-worker check) is opened again, as the next study's runner does
    deadline = time.monotonic() + 60
    while len(own_client.nthreads()) < 2 and time.monotonic() < deadline:
        revive_lost_workers(own_client)
        time.sleep(0.5)
    assert len(own_client.nthreads()) == 2


def test_a_plugin_whose_import_hangs_on_the_workers_fails_by_name(tmp_path, monkeypatch):
    from tomosweep.cluster import open_client

    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "hanging_plugin_module.py").write_text(HANGING_PLUGIN)
    monkeypatch.setenv("TOMOSWEEP_TEST_DRIVER_PID", str(__import__("os").getpid()))
    monkeypatch.setenv("PYTHONPATH", str(mods))
    monkeypatch.syspath_prepend(str(mods))
    raw = tiny_study(
        acquisition={"n_haadf": [5], "n_chem": [3]},
        methods={"sirt": {"n_iter": {"low": 2, "high": 5}}},
        budget={"trials_per_cell": 2, "initial_points": 1, "trial_timeout_s": 2},
        plugins={"modules": ["hanging_plugin_module"]},
    )
    study = study_from_dict(raw)  # the driver imports it at once
    with open_client("local", n_workers=1) as client:
        summary = run_study(study, tmp_path / "s.zarr", client=client)
    records = SweepStore.open(tmp_path / "s.zarr").records()
    assert summary.n_trials == 2 and summary.n_failed == 2
    for r in records:
        assert r.status == FAILED and "timed out after" in r.error
        assert "while importing" in r.error and "hanging_plugin_module.py" in r.error


def test_the_default_limit_follows_size_and_iterations():
    tiny = study_from_dict(tiny_study())
    assert default_trial_timeout(tiny) == 600.0  # the floor: small trials still get ten minutes
    at64 = study_from_dict(tiny_study(phantom={"name": "nanocubes", "size": 64}, methods={"fused": {}}))
    assert default_trial_timeout(at64) == pytest.approx(20 * 71.0)
    at128 = study_from_dict(tiny_study(phantom={"name": "nanocubes", "size": 128}, methods={"fused": {}}))
    assert default_trial_timeout(at128) == pytest.approx(8 * 20 * 71.0)
    longer = study_from_dict(
        tiny_study(
            phantom={"name": "nanocubes", "size": 64},
            methods={"fused": {"n_iter": 300, "lambda_tv": {"low": 0.1, "high": 1.0}}},
        )
    )
    assert default_trial_timeout(longer) == pytest.approx(2 * 20 * 71.0)  # twice the default iterations
    assert trial_timeout(at64) == default_trial_timeout(at64)
    assert default_trial_timeout(tiny, n=128) == pytest.approx(8 * 20 * 71.0 * 1.5)  # a tune's width; SIRT ≤ 30/20


def test_the_limit_is_a_budget_key_outside_the_content_hash():
    plain = study_from_dict(tiny_study())
    limited = study_from_dict(tiny_study(budget={"trials_per_cell": 4, "initial_points": 2, "trial_timeout_s": 90}))
    assert trial_timeout(limited) == 90.0
    assert "trial_timeout_s" not in plain.to_json()["budget"]  # a store written before the key reads the same
    assert limited.content_hash() == plain.content_hash()  # changing it does not make another study
    assert check_extension(plain, limited) == []  # nor is it refused by resume --extend
    for bad in (0, -5, "soon"):
        with pytest.raises(SpecError, match=r"budget\.trial_timeout_s"):
            study_from_dict(tiny_study(budget={"trials_per_cell": 4, "initial_points": 2, "trial_timeout_s": bad}))


def test_where_a_trial_hangs_is_named_from_its_call_stack():
    frames = [
        '  File "/x/distributed/worker.py", line 10, in execute\n\tresult = fn()',
        '  File "/x/importlib/__init__.py", line 126, in import_module\n\treturn _bootstrap._gcd_import()',
        '  File "/site/plugin.py", line 4, in <module>\n\ttime.sleep(3600)',
        '  File "/site/plugin.py", line 9, in wait\n\tevent.wait()',
    ]
    assert stuck_at(frames) == ', while importing "/site/plugin.py", line 4, in <module>'
    assert stuck_at(frames[:2]) == ', at "/x/importlib/__init__.py", line 126, in import_module'
    assert stuck_at([]) == "" and stuck_at(None) == ""
    counts = collections.Counter(stuck_at(frames).split(","))
    assert max(counts.values()) == 1
