"""The HAADF vacuum level comes only from border rows shown to be vacuum."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tomosweep.series.calibrate import vacuum_level


def _series(offset: float, *, reach: tuple[int, ...] = (), n: int = 9, rng: int = 0) -> np.ndarray:
    """A blob of signal in the middle rows of a 40 × 32 detector plus a vacuum level, Poisson counts;
    at the tilts in ``reach`` the blob's tail runs into the first rows (a specimen at the edge)."""
    gen = np.random.default_rng(rng)
    rows = np.arange(40)[:, None]
    stack = []
    for i in range(n):
        signal = 5000 * np.exp(-0.5 * ((rows - 20) / 3.0) ** 2) * np.ones((1, 32))
        if i in reach:
            signal = signal + 800 * np.exp(-rows / 2.0)
        stack.append(gen.poisson(signal + offset))
    return np.asarray(stack, dtype=float)


@pytest.mark.parametrize("offset", [0.0, 40.0])
def test_level_is_the_vacuum_even_where_the_specimen_reaches_the_border(offset, caplog):
    angles = np.linspace(-60, 60, 9)
    with caplog.at_level(logging.WARNING, logger="tomosweep.series.calibrate"):
        found = vacuum_level(_series(offset, reach=(0, 8)), angles)
    assert found.level == pytest.approx(offset, abs=1.0)
    assert found.tilts_with_signal == ()  # the far side of those tilts is vacuum
    assert found.strips_used == 2 * 9 - 2


def test_tilts_whose_border_holds_signal_on_both_sides_are_named():
    angles = np.linspace(-60, 60, 9)
    stack = _series(10.0, reach=(0, 8))
    stack[[0, 8]] += stack[[0, 8]][:, ::-1]  # the tail on both sides at ±60°
    found = vacuum_level(stack, angles)
    assert found.tilts_with_signal == (-60.0, 60.0)
    assert found.level == pytest.approx(10.0, abs=1.0)
    note = found.notes()[0]
    assert "holds specimen signal at 2 of 9 tilts (-60.0°, +60.0°)" in note
    assert found.as_dict()["from"].startswith(f"{found.pixels} border pixels")


def test_no_provable_vacuum_gives_level_zero_and_a_note():
    rows = np.arange(40)[:, None]
    ramp = np.broadcast_to(100.0 + 50 * np.abs(rows - 20), (5, 40, 32)).copy()  # rises towards both edges
    found = vacuum_level(ramp, np.linspace(-40, 40, 5))
    assert found.level == 0.0 and not found.proven
    assert "no vacuum: no detector border strip is flat" in found.notes()[0]
