"""Make a Dask client for a study: an embedded local cluster, or an existing scheduler.

Depends on no other tomosweep package. :func:`open_client` takes the study's
``[cluster]`` settings as plain keywords and is a context manager that closes what it
started (and only that).
"""

from tomosweep.cluster.connect import open_client

__all__ = ["open_client"]
