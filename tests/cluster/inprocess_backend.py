"""A backend module as a user would write one: start an in-process cluster (for the registry test)."""

from __future__ import annotations

from typing import Any


def start(settings: Any, *, environ: dict[str, Any]) -> Any:
    from distributed import LocalCluster

    from tomosweep.cluster.backends import Started

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    return Started(cluster, 1, "an in-process cluster")
