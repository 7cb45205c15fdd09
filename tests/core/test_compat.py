"""The workarounds of tomosweep.compat, pinned to the upstream behaviour they rely on."""

from __future__ import annotations

import numpy as np

from tomosweep.compat import submit_first_job, zarr_write_many


def test_zarr_write_many_writes_every_array_in_one_pass():
    import zarr

    group = zarr.open_group(store={}, mode="w")
    a = group.create_array("a", shape=(4,), dtype="f8", fill_value=0.0)
    b = group.create_array("b", shape=(2, 3), dtype="i4", fill_value=0)
    zarr_write_many([(a, slice(1, 3), np.array([1.5, 2.5])), (b, (1, slice(None)), np.array([7, 8, 9]))])
    np.testing.assert_array_equal(a[:], [0, 1.5, 2.5, 0])
    np.testing.assert_array_equal(b[:], [[0, 0, 0], [7, 8, 9]])


def test_submit_first_job_starts_a_worker_before_returning():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, threads_per_worker=1) as cluster:
        assert not cluster.workers
        submit_first_job(cluster)
        assert len(cluster.workers) == 1  # awaited: the worker exists on return, not "soon"
