"""The CuPy path gives the CPU's numbers (skipped, with the reason, without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from phantom_fixtures import ELEMENTS, acquisition

from tomosweep.solvers import Projector, backend, fused, nrmse, sirt

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not backend.gpu_available(), reason=f"needs CuPy and a CUDA device: {backend.gpu_unavailable_reason()}"
    ),
]


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


def test_sirt_and_fused_on_gpu_match_cpu():
    truth, haadf_op, haadf, chem_op, chem = acquisition(n=32, n_x=2)
    cpu = sirt(chem_op, chem[0].astype(np.float32), n_iter=20)
    gpu = sirt(chem_op, chem[0].astype(np.float32), n_iter=20, device="gpu")
    assert gpu.device.startswith("gpu")
    np.testing.assert_allclose(backend.to_numpy(gpu.volume), cpu.volume, rtol=1e-3, atol=1e-4)
    kw = dict(lambda_haadf=1e-3, lambda_tv=30.0, n_iter=30)
    f_cpu = fused(haadf_op, haadf.astype(np.float32), chem_op, chem.astype(np.float32), ELEMENTS, **kw)
    f_gpu = fused(haadf_op, haadf.astype(np.float32), chem_op, chem.astype(np.float32), ELEMENTS, device="gpu", **kw)
    assert (
        abs(
            nrmse(backend.to_numpy(f_gpu.volume), truth, channel_axis=0).mean()
            - nrmse(f_cpu.volume, truth, channel_axis=0).mean()
        )
        < 1e-2
    )
