"""Make a Dask cluster for a study: local, local-cuda, slurm, pbs, lsf, sge, or an address.

Depends on no other tomosweep package. One small module per kind of backend
(:mod:`.local`, :mod:`.local_cuda`, :mod:`.jobqueue` for the four batch schedulers,
:mod:`.address`); :func:`open_cluster` picks one from :class:`ClusterSettings` and is
a context manager that closes what it started (and only that).
"""

from tomosweep.cluster.connect import Connection, open_client, open_cluster, worker_environ
from tomosweep.cluster.settings import BACKENDS, JOBQUEUE, ClusterSettings

__all__ = ["BACKENDS", "JOBQUEUE", "ClusterSettings", "Connection", "open_client", "open_cluster", "worker_environ"]
