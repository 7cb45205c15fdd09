"""Workarounds where a dependency offers no public way yet, each pinned by ``tests/core/test_compat.py``.

Everything else in tomosweep uses its dependencies' public APIs only. When upstream
grows the public way named below, the workaround here is replaced by it and its test
tells whether the old behaviour is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


def zarr_write_many(writes: Iterable[tuple[Any, Any, Any]]) -> None:
    """``array[index] = value`` for many zarr arrays in one pass of zarr's event loop.

    zarr's synchronous ``Array.__setitem__`` runs one coroutine per call (about 1 ms each);
    a store row touches ten arrays, so the writes are gathered. ``Array.async_array`` is
    public (zarr-python PR #3556), but running a gathered coroutine on zarr's own loop has
    no public entry point: ``zarr.core.sync.sync`` was left private (zarr-python issue #2909).
    """
    from zarr.core.sync import sync

    async def run() -> None:
        # every write finishes before this returns, the failed ones too: a plain gather raises at the
        # first failure and leaves the others writing in zarr's loop, behind the caller's back (a
        # grid change killed mid-way had its leftover folder written into while it was removed)
        outcomes = await asyncio.gather(
            *(arr.async_array.setitem(index, value) for arr, index, value in writes), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    sync(run())


def zarr_settle(timeout: float = 5.0) -> None:
    """Wait (up to ``timeout`` seconds) until nothing runs in zarr's event loop any more.

    A zarr call whose batch has one write refused (a full disk, a crash of the write) raises
    at once, while the batch's other writes go on in zarr's loop: zarr gathers a batch's chunk
    and metadata writes without waiting for the rest once one fails. The store calls this when
    a write fails, so a failed call has ended every write it began, as a process that dies
    has. zarr keeps its loop private (``zarr.core.sync.loop``, zarr-python issue #2909).
    """
    from zarr.core.sync import loop, sync

    if loop[0] is None:  # zarr has not started its loop: nothing can be running in it
        return

    async def settle() -> None:
        me = asyncio.current_task()
        running = [task for task in asyncio.all_tasks() if task is not me]
        if running:
            await asyncio.wait(running, timeout=timeout)

    try:
        sync(settle())
    except Exception:  # noqa: S110 - zarr's loop gone (the interpreter ending): nothing runs in it any more
        pass


def submit_first_job(cluster: Any) -> None:
    """Submit one job of a dask-jobqueue cluster now and raise if the submit command fails.

    ``cluster.scale(jobs=1)`` only schedules ``SpecCluster._correct_state`` on the cluster's
    loop; a refused ``sbatch``/``qsub`` then surfaces as "Task exception was never retrieved"
    in a log (dask-jobqueue issue #619), never to the caller. Awaiting the private coroutine
    is the only way to get the scheduler's own refusal message.
    """
    cluster.worker_spec.update(cluster.new_worker_spec())
    cluster.sync(cluster._correct_state)
