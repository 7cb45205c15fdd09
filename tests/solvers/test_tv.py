"""TV norm and the FGP proximal operator (Beck & Teboulle 2009)."""

from __future__ import annotations

import numpy as np
import pytest

from tomosweep.errors import InputError
from tomosweep.solvers.tv import tv_norm, tv_prox


def test_tv_norm_of_a_step_edge():
    x = np.zeros((6, 5, 4))
    x[3:] = 2.0  # a plane jump of height 2 across 5·4 voxels
    assert tv_norm(x) == pytest.approx(2.0 * 5 * 4)


def test_tv_norm_is_channel_wise():
    x = np.random.default_rng(0).random((5, 5, 3, 5))
    per_channel = sum(tv_norm(x[:, :, c, :]) for c in range(3))
    assert tv_norm(x, axes=(0, 1, 3)) == pytest.approx(per_channel)


def _objective(x, b, tau):
    return 0.5 * ((x - b) ** 2).sum() + tau * tv_norm(x)


def test_prox_converges_to_a_minimiser():
    rng = np.random.default_rng(1)
    b = rng.random((10, 9, 8))
    tau = 0.3
    values = [_objective(tv_prox(b, tau, n_iter=k), b, tau) for k in (5, 20, 100, 400)]
    assert values == sorted(values, reverse=True)
    best = tv_prox(b, tau, n_iter=400)
    assert np.all(best >= 0)
    for _ in range(5):  # no feasible perturbation does better
        trial = np.maximum(best + 1e-3 * rng.standard_normal(b.shape), 0)
        assert _objective(trial, b, tau) > _objective(best, b, tau)


def test_prox_denoises_a_piecewise_constant_volume():
    rng = np.random.default_rng(2)
    clean = np.zeros((24, 24, 8))
    clean[6:18, 6:18] = 1.0
    noisy = clean + 0.3 * rng.standard_normal(clean.shape)
    denoised = tv_prox(noisy, 0.3, n_iter=50)
    assert np.sqrt(((denoised - clean) ** 2).mean()) < 0.5 * np.sqrt(((noisy - clean) ** 2).mean())


def test_zero_weight_is_the_non_negative_projection():
    b = np.array([[-1.0, 2.0], [3.0, -4.0]])
    np.testing.assert_array_equal(tv_prox(b, 0.0), np.maximum(b, 0))


def test_negative_weight_is_rejected():
    with pytest.raises(InputError, match="TV weight"):
        tv_prox(np.ones((3, 3)), -1.0)
