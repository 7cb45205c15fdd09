"""Open (and close) the Dask client a study runs on."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from tomosweep.errors import ClusterError


def _local(n_workers: int | None, memory_limit: str | None) -> Any:
    from distributed import LocalCluster

    n = n_workers or max(1, os.cpu_count() or 1)
    try:
        return LocalCluster(
            n_workers=n,
            threads_per_worker=1,  # solvers are NumPy-bound; one trial per process
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # loopback only, a free port: never clashes with another study
            memory_limit=memory_limit or "auto",
            silence_logs=logging.ERROR,
        )
    except Exception as exc:
        raise ClusterError(f"could not start the local Dask cluster ({n} workers): {exc}") from None


@contextlib.contextmanager
def open_client(
    backend: str = "local",
    *,
    n_workers: int | None = None,
    memory_limit: str | None = None,
    address: str | None = None,
    timeout: float = 30.0,
) -> Iterator[Any]:
    """Yield a ``distributed.Client``; close the client and any cluster started here on exit.

    ``backend="local"`` starts an embedded ``LocalCluster`` bound to 127.0.0.1 (one
    single-threaded worker process per core unless ``n_workers`` is given);
    ``backend="address"`` connects to a running scheduler at ``address``.
    """
    from distributed import Client

    cluster = None
    if backend == "local":
        cluster = _local(n_workers, memory_limit)
        target: Any = cluster
    elif backend == "address":
        if not address:
            raise ClusterError('backend "address" needs an address, e.g. address = "tcp://127.0.0.1:8786"')
        target = address
    else:
        raise ClusterError(f"unknown cluster backend {backend!r}; use 'local' or 'address'")
    try:
        client = Client(target, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise ClusterError(f"cannot reach the Dask scheduler at {address or 'the local cluster'}: {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
