"""Non-negative SIRT (Yuan 2021 §2.1)."""

from __future__ import annotations

import numpy as np
import pytest
from phantom_fixtures import specimen

from tomosweep.errors import InputError
from tomosweep.solvers import Projector, nrmse, sirt


@pytest.fixture(scope="module")
def setup():
    truth = specimen(40, 3)[0]
    proj = Projector(40, np.linspace(-90, 90, 60, endpoint=False))
    return proj, truth, proj.forward(truth)


def test_residual_decreases_and_volume_is_non_negative(setup):
    proj, truth, data = setup
    result = sirt(proj, data, n_iter=60)
    assert result.iterations == 60
    assert result.costs["data"].shape == (61,)
    assert result.costs["data"][-1] < 1e-2 * result.costs["data"][0]
    assert np.all(result.volume >= 0)
    assert nrmse(result.volume, truth) < 0.2


def test_x0_and_callback(setup):
    proj, truth, data = setup
    warm = sirt(proj, data, n_iter=1, x0=truth)
    assert nrmse(warm.volume, truth) < 0.05
    stopped = sirt(proj, data, n_iter=100, callback=lambda k, costs, v: k >= 4)
    assert stopped.iterations == 4


def test_errors(setup):
    proj, _, data = setup
    with pytest.raises(InputError, match="tilt_series must have shape"):
        sirt(proj, data[:-1])
    with pytest.raises(InputError, match="relaxation"):
        sirt(proj, data, relaxation=2.5)
    with pytest.raises(InputError, match="NaN"):
        sirt(proj, np.where(data > 1, np.inf, data))
