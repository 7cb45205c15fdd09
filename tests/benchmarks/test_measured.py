"""benchmarks/measured.py --quick: the whole path from a measured series runs and reports what issue 21 asks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure(tmp_path, monkeypatch):
    pytest.importorskip("astra", reason="the benchmark projects with ASTRA (a test-only dependency)")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import measured

    out = tmp_path / "measured.json"
    measured.main(["--quick", "--n", "16", "--specimens", "core_shell_cube", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["n"] == 16
    rows = report["specimens"]["core_shell_cube"]
    for key in ("study", "ideal"):
        assert 0 < rows[key] < 1
    for key in ("reconstruct-data/projmatch", "reconstruct-data/projmatch+k"):
        row = rows[key]
        assert 0 < row["nrmse"] < 1 and len(row["centre_of_mass_error_voxels"]) == 3
        assert len(row["shift_error_max_px"]) == 2  # across, along the tilt axis
        assert row["haadf_background_true"] == 0.0 and row["haadf_background"] is not None
        assert rows["ratio_to_ideal"][key] == pytest.approx(row["nrmse"] / rows["ideal"], abs=1e-3)
    k_row = rows["reconstruct-data/projmatch+k"]
    assert k_row["haadf_scale_true"] == pytest.approx(rows["true_haadf_scale"])
    assert k_row["haadf_scale_ratio"] == pytest.approx(k_row["haadf_scale_fitted"] / rows["true_haadf_scale"], abs=1e-3)
