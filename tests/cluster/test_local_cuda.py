"""``backend = "local-cuda"`` on a real GPU: two dask-cuda workers sharing one device.

Skipped, with the reason, without CuPy and a CUDA device or without dask-cuda.
"""

from __future__ import annotations

import pytest
from cluster_support import small_study

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


def test_two_local_cuda_workers_share_one_gpu(tmp_path):
    """``devices = "0,0"`` starts two workers on GPU 0; both run trials, each holding its ``GPU`` resource."""
    pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (pip install 'tomosweep[gpu-cuda13]')")
    raw = small_study(backend="local-cuda", devices="0,0", n_workers=2)
    raw["device"] = "gpu"
    seen = {}
    summary = run_study(study_from_dict(raw), tmp_path / "s.zarr", on_client=lambda conn: seen.update(conn=conn))
    assert summary.complete and summary.n_failed == 0, summary
    conn = seen["conn"]
    assert conn.slots == 2 and conn.resources == {"GPU": 1}
    assert conn.description == "local CUDA cluster: one worker on each of GPUs 0,0"
    with SweepStore.open(tmp_path / "s.zarr") as store:
        records = store.records()
    assert len(records) == 16  # 2 methods × 2 cells × 4 trials
    assert {r.device for r in records} == {backend.device_name(backend.array_module("gpu"))}
    assert len({r.worker for r in records}) == 2, {r.worker for r in records}
    assert all(0 < r.nrmse < 2 for r in records)
