"""The ``[cluster]`` section of a study file: which backend, and its settings.

A setting left out of the study file is looked up in the Dask configuration
(``~/.config/dask/*.yaml``, ``DASK_*`` variables): the ``jobqueue.<backend>.*`` keys
for the batch backends, exactly as dask-jobqueue reads them. Only the settings a
backend uses may be given for it, so a misspelt or misplaced key is an error, not a
silently ignored line.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tomosweep.cluster.backends import BACKENDS as _REGISTRY
from tomosweep.cluster.backends import batch_backends

JOBQUEUE: tuple[str, ...] = batch_backends()
BACKENDS: tuple[str, ...] = tuple(_REGISTRY)
#: what a GPU worker advertises and every trial on a GPU cluster holds, so each GPU runs one trial at a time
GPU_RESOURCE: dict[str, float] = {"GPU": 1}

# which backends each optional setting applies to (backend and start_timeout: all)
_APPLIES: dict[str, tuple[str, ...]] = {
    "n_workers": ("local", "local-cuda"),
    "memory_limit": ("local", "local-cuda"),
    "devices": ("local-cuda",),
    "address": ("address",),
    "tls_ca_file": ("address",),
    "tls_cert": ("address",),
    "tls_key": ("address",),
    "queue": JOBQUEUE,
    "account": JOBQUEUE,
    "walltime": JOBQUEUE,
    "cores": JOBQUEUE,
    "memory": JOBQUEUE,
    "processes": JOBQUEUE,
    "gpus": JOBQUEUE,
    "prologue": JOBQUEUE,
    "job_directives": JOBQUEUE,
    "min_jobs": JOBQUEUE,
    "max_jobs": JOBQUEUE,
    "interface": JOBQUEUE,
    "log_directory": JOBQUEUE,
    "python": JOBQUEUE,
}


class ClusterSettings(BaseModel):
    """Where trials run.

    * ``local`` (default): an embedded ``LocalCluster`` on 127.0.0.1, one single-threaded
      worker process per core (``n_workers``, ``memory_limit``).
    * ``local-cuda``: dask-cuda's ``LocalCUDACluster``, one worker per visible GPU
      (``devices = "0,1"`` narrows ``CUDA_VISIBLE_DEVICES``); each trial holds one GPU.
    * ``slurm``, ``pbs``, ``lsf``, ``sge``: dask-jobqueue. Each batch job runs ``processes``
      workers (default: one per core, or one per GPU) and the cluster adapts between
      ``min_jobs`` and ``max_jobs``, so a job that is killed or runs out of walltime is
      replaced.
    * ``address``: an existing scheduler, ``tcp://host:8786`` or ``tls://host:8786``
      with ``tls_ca_file``, ``tls_cert`` and ``tls_key``.

    ``start_timeout`` (seconds) bounds the wait for the first worker; past it the run
    stops with the jobs' state, before the store is created.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = "local"
    start_timeout: float | None = Field(None, gt=0)
    # local, local-cuda
    n_workers: int | None = Field(None, ge=1)
    memory_limit: str | None = None
    devices: str | None = None
    # address
    address: str | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # slurm, pbs, lsf, sge (None: from the Dask config jobqueue.<backend>.*)
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    cores: int | None = Field(None, ge=1)
    memory: str | None = None
    processes: int | None = Field(None, ge=1)
    gpus: int = Field(0, ge=0)
    prologue: list[str] = Field(default_factory=list)
    job_directives: list[str] = Field(default_factory=list)
    min_jobs: int | None = Field(None, ge=1)
    max_jobs: int | None = Field(None, ge=1)
    interface: str | None = None
    log_directory: str | None = None
    python: str | None = None

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in _REGISTRY:
            raise ValueError(f"must be {', '.join(repr(b) for b in _REGISTRY)} (got {value!r})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        for key, backends in _APPLIES.items():
            # a stored study dumps every key, so "given" means set to something other than empty
            if getattr(self, key) not in (None, [], 0) and self.backend not in backends:
                raise ValueError(f"{key} is only used with backend = {' | '.join(repr(b) for b in backends)}")
        if self.backend == "address":
            if not self.address:
                raise ValueError('backend = "address" needs address = "tcp://host:8786" (or "tls://...")')
            if not self.address.startswith(("tcp://", "tls://")):
                raise ValueError(f"address must start with tcp:// or tls://, got {self.address!r}")
            tls = [self.tls_ca_file, self.tls_cert, self.tls_key]
            if self.address.startswith("tls://") and not all(tls):
                raise ValueError("a tls:// address needs tls_ca_file, tls_cert and tls_key (PEM file paths)")
            if self.address.startswith("tcp://") and any(tls):
                raise ValueError("tls_ca_file, tls_cert and tls_key are for a tls:// address")
        if self.min_jobs is not None and self.max_jobs is not None and self.min_jobs > self.max_jobs:
            raise ValueError(f"min_jobs ({self.min_jobs}) is larger than max_jobs ({self.max_jobs})")
        if self.gpus and self.processes and self.processes != self.gpus:
            raise ValueError(f"with gpus = {self.gpus} per job, processes must be {self.gpus} (one worker per GPU)")
        return self

    @property
    def uses_gpus(self) -> bool:
        """Whether workers advertise :data:`GPU_RESOURCE`, which each trial must then hold."""
        return self.backend == "local-cuda" or (self.backend in JOBQUEUE and self.gpus > 0)

    @property
    def trial_resources(self) -> dict[str, float] | None:
        """The resources each trial is submitted with (None: any worker thread will do)."""
        return dict(GPU_RESOURCE) if self.uses_gpus else None
