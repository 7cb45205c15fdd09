"""A one-cell study on the GPU stores the CPU run's NRMSE (skipped, with the reason, without a GPU).

A trial depends only on (study, cell, params, seeds), never on the device: the same
study run with ``device = "cpu"`` and ``device = "gpu"`` proposes the same points and
stores the same NRMSE within float32 rounding.
"""

from __future__ import annotations

import math

import pytest

from tomosweep.results import SweepStore
from tomosweep.solvers import backend
from tomosweep.sweep.api import run_study
from tomosweep.sweep.spec import study_from_dict

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,  # a Dask cluster and whole studies: seconds, not milliseconds
    pytest.mark.skipif(
        not backend.gpu_available(), reason=f"needs CuPy and a CUDA device: {backend.gpu_unavailable_reason()}"
    ),
]


def one_cell_study(device: str) -> dict:
    """24³ nanocubes, one (15 HAADF, 5 chemical) cell, 3 fused trials from the initial design."""
    return {
        "name": "one-cell",
        "seed": 11,
        "device": device,
        "phantom": {"name": "nanocubes", "size": 24},
        "acquisition": {"n_haadf": [15], "n_chem": [5]},
        "methods": {
            "fused": {"lambda_haadf": {"low": 0.1, "high": 10.0, "prior": "log"}, "lambda_tv": 1.0, "n_iter": 20}
        },
        # every point from the seeded initial design, so the proposals cannot depend on the results
        "budget": {"trials_per_cell": 3, "initial_points": 3},
        "cluster": {"n_workers": 1},
    }


def test_one_cell_study_on_gpu_stores_the_cpu_nrmse(tmp_path):
    from tomosweep.cluster import open_client

    stored = {}
    with open_client("local", n_workers=1) as client:
        for device in ("cpu", "gpu"):
            path = tmp_path / f"{device}.zarr"
            summary = run_study(study_from_dict(one_cell_study(device)), path, client=client)
            assert summary.complete and summary.n_failed == 0, (device, summary)
            with SweepStore.open(path) as store:
                stored[device] = (sorted(store.records(), key=lambda r: r.trial_id), store.maps("fused"))
    (cpu, cpu_maps), (gpu, gpu_maps) = stored["cpu"], stored["gpu"]
    assert [r.device for r in cpu] == ["cpu"] * 3
    assert all(r.device.startswith("gpu:") for r in gpu), [r.device for r in gpu]
    assert sorted(tuple(sorted(r.params.items())) for r in gpu) == sorted(tuple(sorted(r.params.items())) for r in cpu)
    by_params = {tuple(sorted(r.params.items())): r for r in cpu}
    for g in gpu:
        c = by_params[tuple(sorted(g.params.items()))]
        assert g.iterations == c.iterations
        assert g.nrmse == pytest.approx(c.nrmse, rel=1e-3), (g.params, g.nrmse, c.nrmse)
        assert g.nrmse_elements == pytest.approx(c.nrmse_elements, rel=1e-3)
    best_cpu, best_gpu = float(cpu_maps["best_nrmse"][0, 0]), float(gpu_maps["best_nrmse"][0, 0])
    assert math.isfinite(best_cpu) and best_gpu == pytest.approx(best_cpu, rel=1e-3)
