"""Metrics: NRMSE (Schwartz 2024 Methods), SSIM structure and scaled MSE (Yuan 2021)."""

from __future__ import annotations

import numpy as np
import pytest

from tomosweep.errors import InputError
from tomosweep.solvers import mse, nrmse, scaled_mse, ssim_structure


@pytest.fixture
def truth():
    return np.random.default_rng(0).random((8, 9, 10))


def test_nrmse_is_invariant_to_scale_and_offset(truth):
    assert nrmse(truth, truth) == pytest.approx(0.0, abs=1e-12)
    assert nrmse(3.0 * truth + 7.0, truth) == pytest.approx(0.0, abs=1e-12)


def test_nrmse_matches_the_formula(truth):
    recon = truth + np.random.default_rng(1).normal(0, 0.2, truth.shape)
    z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    expected = np.sqrt(((z(truth) - z(recon)) ** 2).sum() / (z(truth) ** 2).sum())
    assert nrmse(recon, truth) == pytest.approx(expected, rel=1e-12)


def test_nrmse_reference_values(truth):
    assert nrmse(np.zeros_like(truth), truth) == pytest.approx(1.0)  # flat: no structure
    assert nrmse(-truth, truth) == pytest.approx(2.0)  # inverted contrast


def test_nrmse_per_element(truth):
    stack = np.stack([truth, truth**2])
    recon = np.stack([truth, np.zeros_like(truth)])
    scores = nrmse(recon, stack, channel_axis=0)
    np.testing.assert_allclose(scores, [0.0, 1.0], atol=1e-12)
    assert scores.mean() == pytest.approx(0.5)


def test_ssim_structure_equations_19_to_22(truth):
    recon = truth + np.random.default_rng(2).normal(0, 0.1, truth.shape)
    assert ssim_structure(recon, truth) == pytest.approx(np.corrcoef(recon.ravel(), truth.ravel())[0, 1])
    assert ssim_structure(5 * truth + 1, truth) == pytest.approx(1.0)


def test_scaled_mse_finds_the_optimal_scale(truth):
    value, scale = scaled_mse(truth / 4.0, truth)
    assert scale == pytest.approx(4.0)
    assert value == pytest.approx(0.0, abs=1e-20)
    assert mse(truth / 4.0, truth) > 0.1


def test_metric_errors(truth):
    with pytest.raises(InputError, match="shape"):
        nrmse(truth[:-1], truth)
    with pytest.raises(InputError, match="constant"):
        nrmse(truth, np.ones_like(truth))
    with pytest.raises(InputError, match="NaN"):
        nrmse(np.full_like(truth, np.nan), truth)
