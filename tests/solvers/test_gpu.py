"""The CuPy path gives the CPU's numbers, for every solver (skipped, with the reason, without a GPU).

Each test runs one solver on NumPy and on CuPy from the same float32 data and compares
results within float32 tolerance; the GPU run's output must stay on the device. HEBT's
GPU test lives beside its other tests (tests/solvers/test_hebt.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from phantom_fixtures import ELEMENTS, acquisition

from tomosweep.solvers import (
    Projector,
    backend,
    fused,
    fused_start,
    nrmse,
    poisson_ml,
    poisson_ml_tv,
    quantify,
    scaled_mse,
    sirt,
    sirt_per_element,
    ssim_structure,
)
from tomosweep.solvers.tv import tv_norm, tv_prox

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not backend.gpu_available(), reason=f"needs CuPy and a CUDA device: {backend.gpu_unavailable_reason()}"
    ),
]


@pytest.fixture(scope="module")
def data():
    """A 32² × 2-slice, 4-element acquisition in float32 (45 HAADF, 9 chemical tilts)."""
    truth, haadf_op, haadf, chem_op, chem = acquisition(n=32, n_x=2)
    return truth, haadf_op, haadf.astype(np.float32), chem_op, chem.astype(np.float32)


def _on_gpu(array) -> np.ndarray:
    import cupy

    assert isinstance(array, cupy.ndarray), type(array)
    return cupy.asnumpy(array)


def test_projector_on_gpu_matches_cpu():
    import cupy

    rng = np.random.default_rng(0)
    proj = Projector(64, np.linspace(-70, 70, 31))
    volume = rng.random((64, 64, 8)).astype(np.float32)
    cpu = proj.forward(volume)
    gpu = proj.forward(cupy.asarray(volume))
    assert isinstance(gpu, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(gpu), cpu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cupy.asnumpy(proj.back(cupy.asarray(cpu))), proj.back(cpu), rtol=1e-3, atol=1e-2)


def test_projector_adjoint_and_sums_on_gpu():
    """⟨A x, y⟩ = ⟨x, Aᵀ y⟩ on the device, and the SIRT/curvature sums equal the CPU's."""
    import cupy

    rng = np.random.default_rng(1)
    proj = Projector(48, np.linspace(-70, 70, 19))
    x = cupy.asarray(rng.random((48 * 48, 5)), dtype=cupy.float64)
    y = cupy.asarray(rng.random((proj.shape[0], 5)), dtype=cupy.float64)
    lhs = float(cupy.vdot(proj.forward_matrix(x), y))
    rhs = float(cupy.vdot(x, proj.back_matrix(y)))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    for name in ("row_sums", "col_sums", "row_sq_sums", "col_sq_sums"):
        gpu = getattr(proj, name)(cupy, np.float32)
        np.testing.assert_allclose(_on_gpu(gpu), getattr(proj, name)(np, np.float32), rtol=1e-6, err_msg=name)


def test_sirt_and_fused_on_gpu_match_cpu(data):
    truth, haadf_op, haadf, chem_op, chem = data
    cpu = sirt(chem_op, chem[0], n_iter=20)
    gpu = sirt(chem_op, chem[0], n_iter=20, device="gpu")
    assert gpu.device.startswith("gpu")
    np.testing.assert_allclose(_on_gpu(gpu.volume), cpu.volume, rtol=1e-3, atol=1e-4)
    kw = dict(lambda_haadf=1e-3, lambda_tv=30.0, n_iter=30)
    f_cpu = fused(haadf_op, haadf, chem_op, chem, ELEMENTS, **kw)
    f_gpu = fused(haadf_op, haadf, chem_op, chem, ELEMENTS, device="gpu", **kw)
    gpu_nrmse = nrmse(_on_gpu(f_gpu.volume), truth, channel_axis=0).mean()
    assert abs(gpu_nrmse - nrmse(f_cpu.volume, truth, channel_axis=0).mean()) < 1e-2


def test_sirt_per_element_on_gpu_matches_cpu(data):
    _, _, _, chem_op, chem = data
    cpu = sirt_per_element(chem_op, chem, n_iter=15)
    gpu = sirt_per_element(chem_op, chem, n_iter=15, device="gpu")
    assert gpu.device.startswith("gpu") and gpu.volume.shape == cpu.volume.shape
    np.testing.assert_allclose(_on_gpu(gpu.volume), cpu.volume, rtol=1e-3, atol=1e-4 * float(cpu.volume.max()))
    np.testing.assert_allclose(gpu.costs["data"], cpu.costs["data"], rtol=1e-4)


def test_poisson_ml_on_gpu_matches_cpu(data):
    _, _, _, chem_op, chem = data
    cpu = poisson_ml(chem_op, chem, n_iter=20)
    gpu = poisson_ml(chem_op, chem, n_iter=20, device="gpu")
    assert gpu.device.startswith("gpu")
    np.testing.assert_allclose(_on_gpu(gpu.volume), cpu.volume, rtol=1e-3, atol=1e-4 * float(cpu.volume.max()))
    np.testing.assert_allclose(gpu.costs["chem"], cpu.costs["chem"], rtol=1e-5)


def test_fused_start_on_gpu_matches_cpu(data):
    """The shared start and balance point: ML-EM, HAADF scale, curvatures and traces."""
    _, haadf_op, haadf, chem_op, chem = data
    kw = dict(n_init=20, power_iter=10)
    cpu = fused_start(haadf_op, haadf, chem_op, chem, ELEMENTS, **kw)
    gpu = fused_start(haadf_op, haadf, chem_op, chem, ELEMENTS, device="gpu", **kw)
    assert gpu.iterations == cpu.iterations
    vmax = float(np.max(cpu.volume))
    np.testing.assert_allclose(_on_gpu(gpu.volume), cpu.volume, rtol=1e-3, atol=1e-4 * vmax)
    for name in ("haadf_scale", "chem_trace", "haadf_trace", "balance"):
        assert getattr(gpu, name) == pytest.approx(getattr(cpu, name), rel=1e-3), name
    # power-method estimates from the same seed: equal to the float32 rounding of 10 products
    for name in ("chem_curvature", "haadf_curvature"):
        assert getattr(gpu, name) == pytest.approx(getattr(cpu, name), rel=1e-2), name


def test_fused_on_gpu_follows_the_cpu_iterates(data):
    """From one shared start, every iterate's cost terms agree: the same path, not just a similar end."""
    truth, haadf_op, haadf, chem_op, chem = data
    start = fused_start(haadf_op, haadf, chem_op, chem, ELEMENTS, n_init=20)
    kw = dict(lambda_haadf=1.0, lambda_tv=1.0, n_iter=15, tol=0.0, start=start)
    cpu = fused(haadf_op, haadf, chem_op, chem, ELEMENTS, **kw)
    gpu = fused(haadf_op, haadf, chem_op, chem, ELEMENTS, device="gpu", **kw)
    assert gpu.iterations == cpu.iterations == 15
    for term in ("haadf", "chem", "tv"):
        np.testing.assert_allclose(gpu.costs[term], cpu.costs[term], rtol=2e-3, err_msg=term)
    np.testing.assert_allclose(
        nrmse(_on_gpu(gpu.volume), truth, channel_axis=0), nrmse(cpu.volume, truth, channel_axis=0), atol=2e-3
    )


def test_fused_on_gpu_data_runs_on_the_gpu_without_a_device_argument(data):
    """The device travels with the data (no ``device=``): CuPy series give a CuPy result."""
    import cupy

    _, haadf_op, haadf, chem_op, chem = data
    result = fused(
        haadf_op, cupy.asarray(haadf), chem_op, cupy.asarray(chem), ELEMENTS, lambda_tv=1.0, n_iter=3, n_init=3
    )
    assert result.device.startswith("gpu") and isinstance(result.volume, cupy.ndarray)
    assert result.volume.shape == (4, 32, 32, 2)


def test_poisson_ml_tv_on_gpu_matches_cpu(data):
    _, _, _, chem_op, chem = data
    kw = dict(lambda_tv=1.0, n_iter=15, tol=0.0, n_init=20)
    cpu = poisson_ml_tv(chem_op, chem, **kw)
    gpu = poisson_ml_tv(chem_op, chem, device="gpu", **kw)
    assert gpu.device.startswith("gpu") and gpu.iterations == cpu.iterations
    for term in ("chem", "tv"):
        np.testing.assert_allclose(gpu.costs[term], cpu.costs[term], rtol=2e-3, err_msg=term)
    np.testing.assert_allclose(_on_gpu(gpu.volume), cpu.volume, rtol=1e-2, atol=1e-3 * float(cpu.volume.max()))


def test_tv_prox_and_norm_on_gpu_match_cpu():
    import cupy

    rng = np.random.default_rng(2)
    noisy = (rng.random((3, 24, 24, 5)) + (np.indices((24, 24, 5)).sum(0) > 24)).astype(np.float32)
    axes = (1, 2, 3)
    cpu = tv_prox(noisy, 0.2, n_iter=20, axes=axes)
    gpu = tv_prox(cupy.asarray(noisy), 0.2, n_iter=20, axes=axes)
    np.testing.assert_allclose(_on_gpu(gpu), cpu, rtol=1e-4, atol=1e-5)
    per_channel = np.array([0.1, 0.0, 0.4])[:, None, None, None]
    np.testing.assert_allclose(
        _on_gpu(tv_prox(cupy.asarray(noisy), per_channel, n_iter=20, axes=axes)),
        tv_prox(noisy, per_channel, n_iter=20, axes=axes),
        rtol=1e-4,
        atol=1e-5,
    )
    assert float(tv_norm(cupy.asarray(noisy), axes=axes)) == pytest.approx(float(tv_norm(noisy, axes=axes)), rel=1e-5)


def test_metrics_and_quantification_accept_gpu_arrays(data):
    import cupy

    truth = data[0]
    rng = np.random.default_rng(3)
    recon = truth + 0.1 * rng.standard_normal(truth.shape)
    g_recon, g_truth = cupy.asarray(recon), cupy.asarray(truth)
    np.testing.assert_allclose(nrmse(g_recon, g_truth, channel_axis=0), nrmse(recon, truth, channel_axis=0), rtol=1e-10)
    assert nrmse(g_recon[0], g_truth[0]) == pytest.approx(nrmse(recon[0], truth[0]), rel=1e-10)
    assert ssim_structure(g_recon[0, ..., 0], g_truth[0, ..., 0]) == pytest.approx(
        ssim_structure(recon[0, ..., 0], truth[0, ..., 0]), rel=1e-10
    )
    assert scaled_mse(g_recon[0], g_truth[0]) == pytest.approx(scaled_mse(recon[0], truth[0]), rel=1e-10)
    maps = np.abs(recon[:2]).astype(np.float32)
    cpu = quantify(maps, [1.0, 2.0], threshold=0.5)
    gpu = quantify(cupy.asarray(maps), [1.0, 2.0], threshold=0.5)
    np.testing.assert_allclose(backend.to_numpy(gpu.weight_fractions), cpu.weight_fractions, rtol=1e-5, atol=1e-6)
