"""The one registry of cluster backends: a backend is one module and one ``register`` line here.

Each :class:`Backend` names the function that starts it (``"module:function"``,
imported only when the backend is used, so reading a study file imports no Dask
extension) returning ``(cluster, slots, description)``; batch systems also carry what
differs between schedulers (:class:`BatchSystem`), which is all
:mod:`tomosweep.cluster.jobqueue` needs to drive them through dask-jobqueue.

Adding a backend, e.g. dask-jobqueue's HTCondor::

    register(Backend("htcondor", JOBQUEUE_START, 600.0,
                     BatchSystem("HTCondor", "HTCondorCluster", "request_gpus = {n}", ("condor_q",))))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BatchSystem:
    """What differs between the schedulers dask-jobqueue drives."""

    label: str  # the scheduler's name in messages
    cluster_class: str  # the dask_jobqueue class
    gpu_directive: str  # how a job asks for {n} GPUs (sites differ: job_directives can say it instead)
    status_command: tuple[str, ...]  # how to ask about jobs, for the message when none starts
    ids_joined: bool = False  # the status command takes the job ids as one comma-separated argument
    renames: Mapping[str, str] = field(default_factory=dict)  # [cluster] key -> dask-jobqueue keyword


@dataclass(frozen=True)
class Backend:
    name: str
    start: str | None  # "module:function"; None: nothing to start (an existing scheduler)
    start_timeout: float  # default seconds to wait for the first worker
    batch: BatchSystem | None = None


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend


JOBQUEUE_START = "tomosweep.cluster.jobqueue:start"
_PROJECT = {"account": "project"}

register(Backend("local", "tomosweep.cluster.local:start", 60.0))
register(Backend("local-cuda", "tomosweep.cluster.local_cuda:start", 120.0))
register(
    Backend(
        "slurm",
        JOBQUEUE_START,
        600.0,
        BatchSystem("SLURM", "SLURMCluster", "--gres=gpu:{n}", ("squeue", "-h", "-o", "%i %T %r", "-j"), True),
    )
)
register(Backend("pbs", JOBQUEUE_START, 600.0, BatchSystem("PBS", "PBSCluster", "-l ngpus={n}", ("qstat",))))
register(
    Backend(
        "lsf", JOBQUEUE_START, 600.0, BatchSystem("LSF", "LSFCluster", '-gpu "num={n}"', ("bjobs",), renames=_PROJECT)
    )
)
register(
    Backend(
        "sge", JOBQUEUE_START, 600.0, BatchSystem("SGE", "SGECluster", "-l gpu={n}", ("qstat", "-j"), renames=_PROJECT)
    )
)
register(Backend("address", None, 15.0))


def batch_backends() -> tuple[str, ...]:
    """The backends that submit batch jobs through dask-jobqueue."""
    return tuple(name for name, b in BACKENDS.items() if b.batch is not None)
