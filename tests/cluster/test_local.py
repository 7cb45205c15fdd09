"""The local backend keeps its workers: one the cluster closed while its nanny restarted it is
opened again."""

from __future__ import annotations

import time

from tomosweep.cluster import open_client
from tomosweep.cluster.local import revive_lost_workers


def test_a_worker_the_local_cluster_closed_is_opened_again():
    with open_client("local", n_workers=2) as client:
        cluster = client.cluster
        assert revive_lost_workers(client) == []  # nothing lost: nothing done
        # what distributed's lost-worker check does when a worker restarted twice within 15 s is
        # still down at the check: its nanny closed for good and dropped from the cluster
        name = sorted(cluster.workers, key=str)[0]
        nanny = cluster.workers.pop(name)
        cluster.sync(nanny.close)
        deadline = time.monotonic() + 60
        while len(client.nthreads()) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(client.nthreads()) == 1
        assert revive_lost_workers(client) == [str(name)]
        assert revive_lost_workers(client) == []  # being opened (or back): not opened twice
        client.wait_for_workers(2, timeout=60)
        # the cluster lists a nanny once it has started, a moment after its worker reached the scheduler
        deadline = time.monotonic() + 30
        while len(cluster.workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(str(n) for n in cluster.workers) == sorted(str(n) for n in cluster.worker_spec)
        assert revive_lost_workers(client) == []


def test_a_client_without_a_local_cluster_is_left_alone():
    class Elsewhere:  # a client of a cluster given by address has no cluster object
        cluster = None

    assert revive_lost_workers(Elsewhere()) == []
