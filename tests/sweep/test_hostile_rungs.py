"""Rungs of a resolution ladder, stored search states and the small messages, tried as a hostile
or unlucky user would: every store inside a store is checked, refused or repaired as the top one.

Each case asserts the exit status, one clear line (no traceback) and that nothing committed was
lost. The stores are written without a cluster (records appended by hand), as in
``test_hostile_store``; the CLI runs in-process through its entry point.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_support import TINY_SIRT_TOML, run_cli, tiny_study

from tomosweep.results import OK, SweepStore, TrialRecord
from tomosweep.sweep import study_from_dict
from tomosweep.sweep.api import create_store
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
    from tomosweep.sweep.cli.study import _summary

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
    from tomosweep.sweep.cli import study as study_commands

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
