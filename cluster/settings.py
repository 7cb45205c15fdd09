"""The ``[cluster]`` section of a study file: which backend, and its settings.

A setting left out of the study file is looked up in the Dask configuration
(``~/.config/dask/*.yaml``, ``DASK_*`` variables): the ``jobqueue.<backend>.*`` keys
for the batch backends, exactly as dask-jobqueue reads them. Only the settings a
backend uses may be given for it, so a misspelt or misplaced key is an error, not a
silently ignored line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tomosweep.cluster.backends import BACKENDS as _REGISTRY
from tomosweep.cluster.backends import batch_backends
from tomosweep.cluster.scripts import (
    ACCOUNT,
    INTERFACE,
    MEMORY,
    QUEUE,
    control_problem,
    path_problem,
    python_problem,
    walltime_problem,
)


class _Names(Set[str]):
    """The names of the registered backends (all, or only the batch ones), read at each use."""

    def __init__(self, *, batch: bool) -> None:
        self._batch = batch

    def _names(self) -> tuple[str, ...]:
        return batch_backends() if self._batch else tuple(_REGISTRY)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"({', '.join(map(repr, self))})"


#: the batch backends (dask-jobqueue), as registered when asked
JOBQUEUE: Set[str] = _Names(batch=True)
#: every backend's name, as registered when asked
BACKENDS: Set[str] = _Names(batch=False)
#: what a GPU worker advertises and every trial on a GPU cluster holds, so each GPU runs one trial at a time
GPU_RESOURCE: dict[str, float] = {"GPU": 1}

_BATCH = "batch"  # in _APPLIES: every batch backend registered at the time of the check
# which backends each optional setting applies to (backend and start_timeout: all)
_APPLIES: dict[str, tuple[str, ...] | str] = {
    "n_workers": ("local", "local-cuda"),
    "memory_limit": ("local", "local-cuda"),
    "devices": ("local-cuda",),
    "address": ("address",),
    "tls_ca_file": ("address",),
    "tls_cert": ("address",),
    "tls_key": ("address",),
    **dict.fromkeys(
        (
            "queue",
            "account",
            "walltime",
            "cores",
            "memory",
            "processes",
            "gpus",
            "prologue",
            "job_directives",
            "min_jobs",
            "max_jobs",
            "interface",
            "log_directory",
            "python",
            "tls",
            "shared_temp_directory",
        ),
        _BATCH,
    ),
}


def _applies(key: str) -> tuple[str, ...]:
    backends = _APPLIES[key]
    return batch_backends() if backends == _BATCH else tuple(backends)


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

    Every string lands in a batch job script or a worker's environment, so each is
    checked for its role (:mod:`tomosweep.cluster.scripts`): one line each, ``queue`` and
    ``account`` names, ``walltime`` in the scheduler's own format, ``interface`` an
    interface name, ``log_directory`` and ``shared_temp_directory`` paths a shell reads as
    one word, ``python`` an absolute path (an executable file when jobs are made).

    The batch backends run the scheduler in the driver and the workers in jobs on other
    nodes, so the scheduler listens on ``interface`` (default: the interface of this
    host's default route) and speaks TLS with certificates made for the study
    (``tls = false`` turns that off, with a warning). The certificates live in a
    directory of their own (0700, keys 0600) under ``shared_temp_directory`` (default:
    the Dask config's ``jobqueue.<backend>.shared-temp-directory``, else
    ``~/.tomosweep/tls``), which the compute nodes must see, and are removed when the
    study ends.
    """

    # use_attribute_docstrings: the docstring under a field is its description, which the
    # documentation's study-file reference shows (docs/_ext/tomosweep_reference.py)
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    backend: str = "local"
    """Where the trials run: ``local``, ``local-cuda``, ``slurm``, ``pbs``, ``lsf``, ``sge``, ``address``, or a
    backend a plugin registers."""
    start_timeout: float | None = Field(default=None, gt=0)
    """Seconds to wait for the first worker; not set: the backend's own (60 local, 120 local-cuda, 15 for an
    address, 600 for batch jobs)."""
    # local, local-cuda
    n_workers: int | None = Field(default=None, ge=1)
    """``local``: worker processes (not set: one per core); ``local-cuda``: at most this many GPUs."""
    memory_limit: str | None = None
    """``local``, ``local-cuda``: Dask's memory limit per worker, e.g. ``"4GB"``."""
    devices: str | None = None
    """``local-cuda``: the GPUs to use, ``"0,1"`` (not set: ``CUDA_VISIBLE_DEVICES``, else all)."""
    # address
    address: str | None = None
    """``address``: the running scheduler, ``tcp://host:8786`` or ``tls://host:8786``."""
    tls_ca_file: str | None = None
    """``address`` with ``tls://``: the certificate authority's PEM file."""
    tls_cert: str | None = None
    """``address`` with ``tls://``: this client's certificate (PEM)."""
    tls_key: str | None = None
    """``address`` with ``tls://``: this client's private key (PEM)."""
    # slurm, pbs, lsf, sge (None: from the Dask config jobqueue.<backend>.*)
    queue: str | None = None
    """Batch backends: the queue or partition (not set: the Dask config's, else the scheduler's default)."""
    account: str | None = None
    """Batch backends: the account or project charged."""
    walltime: str | None = None
    """Batch backends: each worker job's walltime, in the scheduler's format (``"04:00:00"``)."""
    cores: int | None = Field(default=None, ge=1)
    """Batch backends: cores per job (one single-threaded worker each unless ``processes`` says otherwise)."""
    memory: str | None = None
    """Batch backends: memory per job, e.g. ``"64GB"``."""
    processes: int | None = Field(default=None, ge=1)
    """Batch backends: worker processes per job (not set: one per core, or one per GPU)."""
    gpus: int = Field(default=0, ge=0)
    """Batch backends: GPUs per job; each job then runs one worker per GPU, pinned to its device."""
    prologue: list[str] = Field(default_factory=list)
    """Batch backends: shell lines each job runs first (module loads, a venv's activation)."""
    job_directives: list[str] = Field(default_factory=list)
    """Batch backends: extra scheduler directives, one line each, without the ``#SBATCH``/``#PBS``/``#BSUB``/``#$``
    prefix."""
    min_jobs: int | None = Field(default=None, ge=1)
    """Batch backends: the fewest worker jobs the cluster adapts down to (a lost job is replaced)."""
    max_jobs: int | None = Field(default=None, ge=1)
    """Batch backends: the most worker jobs the cluster adapts up to."""
    interface: str | None = None
    """Batch backends: the network interface the scheduler listens on, which the compute nodes must reach
    (not set: the interface of this host's default route)."""
    log_directory: str | None = None
    """Batch backends: where the worker jobs write their output."""
    python: str | None = None
    """Batch backends: the Python the worker jobs run (not set: the driver's own interpreter path)."""
    tls: bool | None = None  # None: on (batch backends)
    """Batch backends: TLS with the study's own certificates (not set: on; ``false`` warns that anyone who can
    reach the port can run code on the workers)."""
    shared_temp_directory: str | None = None
    """Batch backends: where the study's certificates are written, on a file system the compute nodes
    see (not set: the Dask config's ``jobqueue.<backend>.shared-temp-directory``, else ``~/.tomosweep/tls``)."""

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in _REGISTRY:
            raise ValueError(
                f"must be {', '.join(repr(b) for b in _REGISTRY)} (got {value!r}){_REGISTRY.unknown(value)}"
            )
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _one_line_each(cls, value: object) -> object:
        for text in value if isinstance(value, list) else [value]:
            problem = control_problem(text) if isinstance(text, str) else None
            if problem:
                raise ValueError(f"{text!r} {problem}")
        return value

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        if value is not None and not QUEUE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a queue or partition name: letters, digits and _ . @ + - "
                '(several partitions comma-separated), e.g. queue = "batch"'
            )
        return value

    @field_validator("account")
    @classmethod
    def _account_name(cls, value: str | None) -> str | None:
        if value is not None and not ACCOUNT.fullmatch(value):
            raise ValueError(
                f'{value!r} is not an account name: letters, digits and _ . @ + -, e.g. account = "my-project"'
            )
        return value

    @field_validator("interface")
    @classmethod
    def _interface_name(cls, value: str | None) -> str | None:
        if value is not None and not INTERFACE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a network interface name (at most 15 letters, digits and _ . : -), "
                'e.g. interface = "ib0"; `ip -brief address` lists this host\'s'
            )
        return value

    @field_validator("memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is not None and not MEMORY.fullmatch(value):
            raise ValueError(f'{value!r} is not an amount of memory, e.g. memory = "32GB"')
        return value

    @field_validator("log_directory", "shared_temp_directory")
    @classmethod
    def _script_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = None if value is None else path_problem(value, variables=info.field_name == "shared_temp_directory")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("python")
    @classmethod
    def _python_path(cls, value: str | None) -> str | None:
        problem = None if value is None else python_problem(value, here=False)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("walltime")
    @classmethod
    def _walltime_format(cls, value: str | None, info: ValidationInfo) -> str | None:
        backend = info.data.get("backend")  # declared first, so checked already (absent if it failed)
        problem = None if value is None or backend not in JOBQUEUE else walltime_problem(str(backend), value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterSettings:
        for key in _APPLIES:
            backends = _applies(key)
            value = getattr(self, key)
            # a stored study dumps every key, so "given" means set to something other than empty
            if (value is False or value not in (None, [], 0)) and self.backend not in backends:
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


def stored_settings_problem(raw: Mapping[str, Any]) -> str | None:
    """Why a stored ``[cluster]`` section (a received store's) cannot be used as it is, or None.

    Checked before the user is asked to consent to it: the values a batch job would run
    are refused for their role, and ``python`` must be an executable file on this host."""
    try:
        settings = ClusterSettings.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    if settings.python is not None and settings.backend in JOBQUEUE:
        return python_problem(settings.python)
    return None
