"""Rungs of a resolution ladder, stored search states and the small messages, tried as a hostile
or unlucky user would: every store inside a store is checked, refused or repaired as the top one.

Each case asserts the exit status, one clear line (no traceback) and that nothing committed was
lost. The stores are written without a cluster (records appended by hand), as in
``test_hostile_store``; the CLI runs in-process through its entry point.
"""

from __future__ import annotations

from sweep_support import run_cli

from tomosweep.sweep.runner import EXHAUSTED, RunSummary


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
