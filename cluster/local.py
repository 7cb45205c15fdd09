"""``backend = "local"``: distributed's ``LocalCluster`` on this machine, loopback only."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from tomosweep.cluster.backends import Started
from tomosweep.cluster.settings import ClusterSettings
from tomosweep.errors import ClusterError


def worker_log_level() -> int:
    """The level below which Dask's own log lines are dropped in a local cluster's processes.

    ``ERROR`` by default; ``tomosweep run``/``resume`` raise it to ``CRITICAL`` unless
    ``--verbose`` (through ``TOMOSWEEP_DASK_LOG_LEVEL``), so a worker's transient
    connection messages — e.g. a heartbeat racing the cluster's shutdown — do not reach
    the terminal; the driver's own Dask messages go to the study's log file then.
    """
    name = os.environ.get("TOMOSWEEP_DASK_LOG_LEVEL", "ERROR").upper()
    return int(getattr(logging, name, logging.ERROR))


def start(settings: ClusterSettings, *, environ: dict[str, Any]) -> Started:
    """Start the cluster: its worker threads are the slots.

    ``environ`` reaches the worker processes through the Dask config that
    :func:`tomosweep.cluster.connect.open_cluster` sets for the cluster's life.

    One single-threaded worker process per core (or ``n_workers``): the solvers are
    NumPy-bound, so processes, not threads, run trials side by side. The scheduler and
    the dashboard bind to 127.0.0.1, the dashboard on a free port so two studies on
    one machine never clash.
    """
    from dask.system import CPU_COUNT  # respects cgroup and affinity limits, unlike os.cpu_count()
    from distributed import LocalCluster

    n = settings.n_workers or max(1, CPU_COUNT)
    with _workers_ignore_ctrl_c():
        return _start(LocalCluster, settings, n)


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (an ignored signal stays ignored across
    exec, and Python then installs no KeyboardInterrupt handler): Ctrl-C in a terminal
    reaches the whole process group, and only the driver should act on it — it stops the
    study cleanly and closes the cluster — instead of every worker printing a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start(LocalCluster: Any, settings: ClusterSettings, n: int) -> Started:  # noqa: N803
    try:
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=settings.memory_limit or "auto",
            silence_logs=worker_log_level(),
        )
    except Exception as exc:
        raise ClusterError(f"could not start the local Dask cluster ({n} workers): {exc}") from None
    return Started(cluster, n, f"local cluster: {n} worker process{'es' if n > 1 else ''} on 127.0.0.1")


def revive_lost_workers(client: Any) -> list[str]:
    """Open again the workers a local cluster closed for good while their nanny restarted them;
    the names of those opened.

    distributed's ``SpecCluster`` closes a worker's nanny when no worker of that name is
    connected ``distributed.deploy.lost-worker-timeout`` (15 s) after one of its workers left,
    checked by name only: a worker restarted (a timed-out trial, a crash) and restarted again
    within those 15 s, still down at the check, loses its nanny, and the cluster a slot for
    the rest of the study. Its spec stays, so ``scale`` to the same size opens it again.

    Only for a local cluster, whose nannies are processes of this one; a batch cluster's jobs
    are its adaptive scaler's, and a cluster given by address is not this process's to grow.
    """
    from distributed import LocalCluster
    from distributed.core import Status

    cluster = getattr(client, "cluster", None)
    if not isinstance(cluster, LocalCluster) or cluster.status != Status.running:
        return []
    now = time.monotonic()
    opening = _OPENING.setdefault(cluster, {})
    for name in [name for name in opening if name in cluster.workers]:  # back: lost again, opened again
        del opening[name]
    # a nanny opened joins the cluster's list only once started (seconds): not opened twice meanwhile
    lost = sorted(
        (name for name in set(cluster.worker_spec) - set(cluster.workers) if now - opening.get(name, -math.inf) > 60),
        key=str,
    )
    if lost:
        opening.update(dict.fromkeys(lost, now))
        cluster.scale(len(cluster.worker_spec))  # the same size: opens the spec's missing workers
    return [str(name) for name in lost]


_OPENING: weakref.WeakKeyDictionary[Any, dict[Any, float]] = weakref.WeakKeyDictionary()
