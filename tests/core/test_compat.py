"""The workarounds of tomosweep.compat, pinned to the upstream behaviour they rely on."""

from __future__ import annotations

import numpy as np

from tomosweep.compat import submit_first_job, zarr_settle, zarr_write_many


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


def test_zarr_settle_waits_for_the_writes_a_failed_zarr_call_left_running(tmp_path, monkeypatch):
    """zarr raises at a batch's first failed chunk write and leaves the others running in its loop
    (the behaviour ``zarr_settle`` is for: when it is gone, the first assertion below fails);
    once ``zarr_settle`` returns they have all ended."""
    import asyncio

    import pytest
    import zarr
    from zarr.storage import LocalStore

    array = zarr.open_group(tmp_path / "s.zarr", mode="w").create_array("a", shape=(8,), chunks=(1,), dtype="f8")
    real_set = LocalStore._set

    async def slow_or_failing(self, key, value, exclusive=False):
        if key.endswith("/0"):
            raise OSError(28, "No space left on device")
        await asyncio.sleep(2.0)  # long beside any pause of a loaded machine between the raise and the look
        return await real_set(self, key, value, exclusive=exclusive)

    monkeypatch.setattr(LocalStore, "_set", slow_or_failing)
    with pytest.raises(OSError, match="No space left"):
        array[:] = np.arange(1.0, 9.0)  # no chunk equals the fill value (such a chunk is not written)
    chunks = tmp_path / "s.zarr" / "a" / "c"
    assert not any(chunks.glob("*")), "zarr now waits for a failed batch's other writes: zarr_settle can go"
    zarr_settle()
    assert sorted(p.name for p in chunks.iterdir()) == [str(k) for k in range(1, 8)]
