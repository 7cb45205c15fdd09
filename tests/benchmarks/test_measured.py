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


def test_factor_rows_give_each_truth_to_the_data_file(tmp_path, monkeypatch):
    """--factors: each calibration a data file can give is written with its true value, and read back so."""
    import numpy as np

    from tomosweep.series import load_series

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import measured

    sets = measured.factor_sets()
    assert sets["all"] == frozenset(measured.TRUTHS) and sets["+k+scale"] == {"k", "scale"}
    assert "scale" not in sets["all-k"]  # the scale is only true in the k-factors' units
    rng = np.random.default_rng(0)
    angles = np.linspace(-60, 60, 6)
    series = {
        "angles": angles,
        "chem_angles": angles[::2],
        "elements": ("Co", "O"),
        "haadf_scale": 123.5,
        "k": np.array([3.0, 0.5]),
        "chem_background": [2.0, 1.5],
    }
    for key, shape in (("haadf", (6, 16, 16)), ("chem", (2, 3, 16, 16))):
        series[key] = rng.poisson(20.0, size=shape).astype(float)
        series[f"{key}_ideal"] = rng.poisson(20.0, size=shape).astype(float)
    path = measured.write_data(tmp_path / "all", series, align="projmatch", truths=sets["all"])
    got = load_series(path)
    assert got.sensitivity == (3.0, 0.5) and got.chem_background == (2.0, 1.5)
    assert got.haadf_scale == 123.5 and got.haadf_background == 0.0 and got.align.method == "none"
    np.testing.assert_array_equal(got.chem, series["chem_ideal"])  # the undrifted series
    got = load_series(measured.write_data(tmp_path / "auto", series, align="projmatch"))
    assert got.sensitivity is None and got.haadf_scale == "auto" and got.align.method == "projmatch"
    np.testing.assert_array_equal(got.chem, series["chem"])
