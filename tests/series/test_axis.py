"""The tilt-axis turn estimated from a series: a clean simulated series turned by a known angle."""

from __future__ import annotations

import numpy as np
import pytest

from tomosweep.errors import InputError
from tomosweep.series.axis import estimate_tilt_axis_angle


@pytest.fixture(scope="module")
def projections(isolated):
    from tomosweep.solvers import Projector

    angles = np.linspace(-70.0, 70.0, 29)
    volume = isolated.volumes.sum(axis=0).astype(np.float32)
    return np.asarray(Projector(volume.shape[0], angles).forward(volume), dtype=float), angles


@pytest.mark.parametrize("turn", [-3.0, 2.0])
def test_a_turn_of_a_clean_series_is_found(projections, turn):
    from scipy.ndimage import rotate

    clean, angles = projections
    turned = np.stack([rotate(p, -turn, reshape=False, order=1, mode="constant") for p in clean])
    assert estimate_tilt_axis_angle(turned, angles).angle == pytest.approx(turn, abs=0.2)
    assert abs(estimate_tilt_axis_angle(clean, angles).angle) < 0.2


def test_a_series_without_specimen_in_every_column_is_refused(projections):
    clean, angles = projections
    with pytest.raises(InputError, match='tilt_axis_angle = "auto": only 0 columns'):
        estimate_tilt_axis_angle(np.zeros_like(clean), angles)
