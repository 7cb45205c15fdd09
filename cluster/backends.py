"""The one registry of cluster backends: a backend is one module and one ``register`` line here.

Each :class:`Backend` names the function that starts it (``"module:function"``,
imported only when the backend is used, so reading a study file imports no Dask
extension). Every backend's function has the same signature,
``start(settings, *, environ) -> Started``: :mod:`tomosweep.cluster.connect` opens any
of them the same way. Batch systems also carry what differs between schedulers
(:class:`BatchSystem`), which is all :mod:`tomosweep.cluster.jobqueue` needs to drive
them through dask-jobqueue.

The registry is consulted when a name is looked up, never copied: a backend registered
later (by an installed distribution's entry point in group ``tomosweep.backends``, or by
a module a study names in ``[plugins] modules``) is valid in ``[cluster]``, in
``--cluster`` and in ``job-script``. Adding a backend, e.g. dask-jobqueue's HTCondor::

    register(Backend("htcondor", JOBQUEUE_START, 600.0,
                     BatchSystem("HTCondor", "HTCondorCluster", "request_gpus = {n}", ("condor_q",),
                                 directive_map=True)))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tomosweep.plugins import Registry


@dataclass(frozen=True)
class BatchSystem:
    """What differs between the schedulers dask-jobqueue drives."""

    label: str  # the scheduler's name in messages
    cluster_class: str  # the dask_jobqueue class
    gpu_directive: str  # how a job asks for {n} GPUs (sites differ: job_directives can say it instead)
    status_command: tuple[str, ...]  # how to ask about jobs, for the message when none starts
    ids_joined: bool = False  # the status command takes the job ids as one comma-separated argument
    renames: Mapping[str, str] = field(default_factory=dict)  # [cluster] key -> dask-jobqueue keyword
    # the cluster class takes its directives as a mapping (HTCondor): each "key = value" is one entry
    directive_map: bool = False


@dataclass(frozen=True)
class Backend:
    """A place trials can run: its name in ``[cluster] backend`` and how to start it.

    Parameters
    ----------
    name : str
        The name a study file and ``--cluster`` use.
    start : str
        ``"module:function"``; the function is ``start(settings, *, environ) -> Started``,
        ``settings`` the study's :class:`~tomosweep.cluster.settings.ClusterSettings`,
        ``environ`` the worker processes' environment (see
        :func:`tomosweep.cluster.connect.worker_environ`). It raises
        :class:`~tomosweep.errors.ClusterError` with a message that says what to change.
    start_timeout : float
        Default seconds to wait for the first worker (batch jobs may queue).
    batch : BatchSystem, optional
        Set for schedulers dask-jobqueue drives (``start`` is then :data:`JOBQUEUE_START`).
    """

    name: str
    start: str
    start_timeout: float
    batch: BatchSystem | None = None


@dataclass
class Started:
    """What a backend's ``start`` hands back: the cluster and how to reach and describe it.

    Attributes
    ----------
    cluster : object or None
        The Dask cluster started (closed, its jobs cancelled, when the study ends), or None
        when an existing scheduler is reached.
    slots : int or None
        Worker threads the cluster aims for; None: count the live workers.
    description : str
        One line for the terminal and the log.
    address : str, optional
        Where the client connects when there is no ``cluster`` object to connect to.
    security : distributed.Security, optional
        The client's TLS settings (a ``cluster`` object carries its own).
    worker_plugins : tuple
        ``distributed`` worker plugins registered before the first trial.
    warnings : tuple of str
        Shown on the terminal and written to the study's log (e.g. TLS turned off).
    cleanup : callable, optional
        Run after the cluster is closed (e.g. remove the study's certificates).
    no_worker : callable, optional
        ``no_worker(timeout) -> str``: why no worker joined, for the error message.
    """

    cluster: Any
    slots: int | None
    description: str
    address: str | None = None
    security: Any = None
    worker_plugins: tuple[Any, ...] = ()
    warnings: tuple[str, ...] = ()
    cleanup: Callable[[], None] | None = None
    no_worker: Callable[[float], str] | None = None


#: every backend by name: the built-ins, installed plugins (``tomosweep.backends``) and registered ones
BACKENDS: Registry[Backend] = Registry("tomosweep.backends", Backend, name_of=lambda b: b.name)


def register(backend: Backend) -> Backend:
    """Add a cluster backend under its name (``ValueError`` if the name is taken); returns it."""
    return BACKENDS.register(backend)


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
register(Backend("address", "tomosweep.cluster.address:start", 15.0))
BACKENDS.seal_builtins()  # a plugin's backend cannot take one of these names


def batch_backends() -> tuple[str, ...]:
    """The backends that submit batch jobs through dask-jobqueue."""
    return tuple(name for name, b in BACKENDS.items() if b.batch is not None)
