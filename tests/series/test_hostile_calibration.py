"""Measured HAADF series that would be reconstructed wrongly without a word: a border with no
vacuum (a ramp, a tail) and a tilt whose total intensity is an outlier. Each says what it is."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tomosweep.series import load_series
from tomosweep.series.calibrate import intensity_outliers, vacuum_level

N, N_DET, N_X = 5, 64, 64
ANGLES = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])
ROWS = np.arange(N_DET)[:, None]


def _stack(image: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([image + rng.normal(0.0, noise, (N_DET, N_X)) for _ in range(N)])


NO_VACUUM = {
    "ramp across the detector": (1e8 * (0.5 + ROWS / N_DET) * np.ones((1, N_X)), 1e3),
    "ramp along the tilt axis": (1e8 * (0.5 + np.arange(N_X)[None, :] / N_X) * np.ones((N_DET, 1)), 1e3),
    "a specimen's tail on both borders": (10 + 1000 * np.exp(-((ROWS - 32) ** 2) / (2 * 12**2)) * np.ones((1, N_X)), 1),
}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("case", NO_VACUUM)
def test_a_border_with_no_vacuum_is_said_to_have_none(case):
    image, noise = NO_VACUUM[case]
    # a handler on the module's own logger: the CLI tests earlier in a run reconfigure "tomosweep"'s
    # level and propagation, which pytest's caplog (on the root logger) depends on
    logger, collect = logging.getLogger("tomosweep.series.calibrate"), _Collect()
    level = logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.WARNING)
    try:
        found = vacuum_level(_stack(image, noise), ANGLES)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    assert found.level == 0.0 and not found.proven
    assert found.as_dict()["from"] == "no vacuum: no border strip is flat at any tilt; level 0"
    assert "no vacuum: no detector border strip is flat" in found.notes()[0]
    assert collect.messages == found.notes()


def test_an_isolated_specimen_still_gives_its_vacuum_level():
    image = 10 + 1000 * np.exp(-((ROWS - 32) ** 2) / (2 * 6**2)) * np.ones((1, N_X))
    found = vacuum_level(_stack(image, 1.0), ANGLES)
    assert found.proven and found.strips_used == 2 * N and found.level == pytest.approx(10.0, abs=0.05)


def _specimen_series() -> np.ndarray:
    image = 1000 * np.exp(-((ROWS - 32) ** 2) / (2 * 6**2)) * np.ones((1, N_X))
    return np.clip(_stack(image, 1.0), 0, None)


@pytest.mark.parametrize(("factor", "said"), [(1000.0, "1e+03×"), (0.0, "0×")])
def test_a_tilt_whose_total_intensity_is_an_outlier_is_named(factor, said):
    stack = _specimen_series()
    stack[3] *= factor
    notes = intensity_outliers(stack, ANGLES)
    assert len(notes) == 1
    assert notes[0].startswith(f"HAADF tilt +30.0°: its total intensity is {said} the series' median")
    assert "check it, or leave it out" in notes[0]


def test_totals_that_drift_a_little_are_no_outliers():
    stack = _specimen_series() * np.array([1.0, 1.05, 0.97, 1.1, 0.92])[:, None, None]
    assert intensity_outliers(stack, ANGLES) == []


def test_load_series_notes_an_outlying_haadf_tilt(tmp_path):
    stack = _specimen_series() + 5.0
    stack[1] *= 1000
    np.savez(tmp_path / "haadf.npz", haadf=stack, angles=ANGLES)
    body = '[haadf]\nfile = "haadf.npz"\ndataset = "haadf"\nangles = [-60, -30, 0, 30, 60]\n'
    (tmp_path / "data.toml").write_text(body)
    series = load_series(tmp_path / "data.toml")
    outliers = [n for n in series.notes if n.startswith("HAADF tilt")]
    assert len(outliers) == 1 and outliers[0].startswith("HAADF tilt -30.0°: its total intensity is")
