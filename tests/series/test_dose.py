"""Per-tilt dose measured from the HAADF totals (tomosweep.series.dose)."""

from __future__ import annotations

import numpy as np
import pytest

from tomosweep.series.dose import correct_dose, estimate_dose
from tomosweep.solvers import Projector

ANGLES = np.linspace(-70, 70, 29)


def _haadf(volumes: np.ndarray, z, angles: np.ndarray = ANGLES) -> np.ndarray:
    model = np.einsum("e...,e->...", volumes**1.7, np.asarray(z, dtype=float) ** 1.7).astype(np.float32)
    return np.asarray(Projector(volumes.shape[1], angles).forward(model), dtype=float)


def _drift(n: int, seed: int = 3) -> np.ndarray:
    """Uniform ±10 % per tilt."""
    return np.random.default_rng(seed).uniform(0.9, 1.1, n)


@pytest.fixture(scope="module")
def clean(isolated):
    return _haadf(isolated.volumes, isolated.z)


def test_a_drifting_dose_is_measured_to_a_percent(clean):
    """To a percent: the discrete projector itself moves a 28³ specimen's total by up to ±0.6 % with tilt."""
    rng = np.random.default_rng(0)
    drift = _drift(ANGLES.size)
    counts = rng.poisson(2000 * clean / clean.mean() * drift[:, None, None]).astype(float)
    found = estimate_dose(counts, ANGLES, ANGLES[::4])
    assert found.applied and found.columns_used == clean.shape[2] and not found.notes
    truth = drift / np.median(drift)
    np.testing.assert_allclose(found.factors, truth, rtol=1e-2)
    np.testing.assert_allclose(found.chem_factors, found.factors[::4])


def test_slices_reaching_the_detector_edge_are_left_out(isolated):
    """Half the field of view along the axis holds a film across the whole detector: its slices lose
    mass over the edge at high tilt, so only the other half measures the dose."""
    volumes = isolated.volumes.copy()
    n = volumes.shape[1]
    volumes[0, :, n // 2 - 2 : n // 2 + 2, : n // 3] = 0.3  # a film, 4 voxels thick, across y
    counts = _haadf(volumes, isolated.z) * _drift(ANGLES.size)[:, None, None]
    found = estimate_dose(counts, ANGLES)
    assert found.applied and 0 < found.columns_used <= n - n // 3
    assert "reach the detector edge" in found.notes[0]
    drift = _drift(ANGLES.size)
    np.testing.assert_allclose(found.factors, drift / np.median(drift), rtol=1e-2)
    # the same film across the whole field of view: nothing inside, no correction
    volumes[0, :, n // 2 - 2 : n // 2 + 2, :] = 0.3
    off = estimate_dose(_haadf(volumes, isolated.z), ANGLES, ANGLES[::4])
    assert not off.applied and np.all(off.factors == 1) and np.all(off.chem_factors == 1)
    assert "no dose can be measured" in off.notes[0]


def test_chemical_maps_follow_and_constant_turns_it_off(clean):
    from dataclasses import replace

    from tomosweep.series import MeasuredSeries

    drift = _drift(ANGLES.size)
    chem_angles = np.array([-70.0, -2.5, 35.0])  # -2.5°: between two HAADF tilts
    chem = np.ones((2, 3, *clean.shape[1:]))
    series = MeasuredSeries(
        haadf=clean * drift[:, None, None],
        haadf_angles=ANGLES,
        chem=chem,
        chem_angles=chem_angles,
        elements=("Co", "O"),
        chem_background=(0.1, 0.1),
    )
    corrected, dose = correct_dose(series)
    assert dose is not None and dose.applied and "interpolated" in dose.notes[-1]
    truth = drift / np.median(drift)
    totals = corrected.haadf.sum(axis=(1, 2))
    np.testing.assert_allclose(totals, np.median(totals), rtol=1e-9)  # every tilt now carries the median dose
    np.testing.assert_allclose(dose.chem_factors, np.interp(chem_angles, ANGLES, truth), rtol=1e-2)
    np.testing.assert_allclose(corrected.chem[:, :, 0, 0], np.broadcast_to(1 / dose.chem_factors, (2, 3)))
    record = dose.as_dict()
    assert record["mode"] == "auto" and len(record["haadf_dose"]) == ANGLES.size and len(record["chem_dose"]) == 3

    unchanged, constant = correct_dose(replace(series, dose="constant"))
    assert unchanged is not None and unchanged.haadf is series.haadf
    assert constant is not None and not constant.applied and constant.mode == "constant"


def test_the_data_file_switch(tmp_path):
    from tomosweep.errors import InputError
    from tomosweep.series import load_series, write_mrc

    stack = np.random.default_rng(1).uniform(1, 2, (5, 12, 10)).astype(np.float32)
    write_mrc(tmp_path / "h.mrc", stack, [-10, -5, 0, 5, 10])
    (tmp_path / "d.toml").write_text('[haadf]\nfile = "h.mrc"\ndose = "constant"\n')
    assert load_series(tmp_path / "d.toml").dose == "constant"
    (tmp_path / "d.toml").write_text('[haadf]\nfile = "h.mrc"\n')
    assert load_series(tmp_path / "d.toml").dose == "auto"
    (tmp_path / "d.toml").write_text('[haadf]\nfile = "h.mrc"\ndose = "measured"\n')
    with pytest.raises(InputError, match="haadf.dose"):
        load_series(tmp_path / "d.toml")
