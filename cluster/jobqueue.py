"""``backend = "slurm" | "pbs" | "lsf" | "sge"``: batch jobs of Dask workers through dask-jobqueue.

The driver (``tomosweep run``) runs the Dask scheduler in its own process, on a login
node or inside a batch job of its own; each worker job connects back to it. The
cluster *adapts* between ``min_jobs`` and ``max_jobs``: a job that is killed
(``scancel``), pre-empted or out of walltime is replaced, and its trials are run again
elsewhere.

Settings resolve in order: the study's ``[cluster]`` section, then the Dask
configuration ``jobqueue.<backend>.*`` (what dask-jobqueue itself reads), then an
error that shows a working section.

Nobody else gets in: the scheduler listens on the interface the workers reach it by
(``interface``, else the interface of this host's default route) and speaks TLS with
a certificate made for the study (``distributed.Security.temporary()``, written as
files 0600 in a directory 0700 that the compute nodes see, removed when the study
ends). Without it anyone who can reach the port could connect a client and run code
on the workers as the study's owner. The dashboard listens on 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from tomosweep.cluster import tls
from tomosweep.cluster.backends import BACKENDS, BatchSystem, Started
from tomosweep.cluster.scripts import path_problem, python_problem
from tomosweep.cluster.settings import GPU_RESOURCE, ClusterSettings
from tomosweep.compat import submit_first_job
from tomosweep.errors import ClusterError

log = logging.getLogger(__name__)


def _system(backend: str) -> BatchSystem:
    system = BACKENDS[backend].batch
    if system is None:
        raise ClusterError(f"{backend!r} is not a batch backend")
    return system


EXAMPLE = """[cluster]
backend = "{backend}"
queue = "batch"             # partition / queue (optional: the scheduler's default)
account = "my-project"      # optional
walltime = "02:00:00"
cores = 8                   # per job: 8 single-threaded workers
memory = "32GB"             # per job
min_jobs = 1
max_jobs = 4
prologue = ["module load python", "source ~/venvs/tomosweep/bin/activate"]"""


def _config(backend: str) -> dict[str, Any]:
    import dask.config
    import dask_jobqueue  # noqa: F401  (registers the jobqueue.* defaults)

    return dict(dask.config.get(f"jobqueue.{backend}", default={}) or {})


def _first(value: Any, conf: dict[str, Any], key: str) -> Any:
    return value if value is not None else conf.get(key)


def _env_prologue(environ: dict[str, Any]) -> list[str]:
    """Job-script lines that give the nanny the same worker environment as a local cluster.

    Dask parses a ``DASK_*`` variable with ``ast.literal_eval`` and merges the dict into
    its defaults, so the value is a Python literal and None unsets a default.
    """
    literal = "{" + ", ".join(f"{json.dumps(str(k))}: {v!r}" for k, v in environ.items()) + "}"
    return [f"export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON={shlex.quote(literal)}"]


def resolve(settings: ClusterSettings, environ: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments for the dask-jobqueue cluster class, study first, then Dask config.

    Raises ``ClusterError`` showing a working ``[cluster]`` section when cores or
    memory per job are set nowhere.
    """
    backend = settings.backend
    conf = _config(backend)
    cores = _first(settings.cores, conf, "cores")
    memory = _first(settings.memory, conf, "memory")
    missing = [name for name, value in (("cores", cores), ("memory", memory)) if value is None]
    if missing:
        raise ClusterError(
            f'backend = "{backend}" needs {" and ".join(missing)} per job, set in the study\'s [cluster] '
            f"section or in the Dask config (jobqueue.{backend}.{missing[0]}). A working section:\n\n"
            + EXAMPLE.format(backend=backend)
        )
    cores = int(cores)
    processes = settings.processes or settings.gpus or conf.get("processes") or cores
    if cores % processes:
        raise ClusterError(f"[cluster] cores = {cores} is not a multiple of processes = {processes}")
    kwargs: dict[str, Any] = {"cores": cores, "memory": memory, "processes": processes}
    interface = _first(settings.interface, conf, "interface") or default_route_interface()
    if interface is not None:
        kwargs["interface"] = interface  # the workers' and, through dask-jobqueue, the scheduler's
    for key in ("queue", "account", "walltime", "log_directory"):
        value = getattr(settings, key)
        if value is not None:
            kwargs[_system(backend).renames.get(key, key)] = value
    python = worker_python(settings)
    if python is not None:
        kwargs["python"] = python
    directives = list(conf.get("job-extra-directives") or []) + list(settings.job_directives)
    if settings.gpus:
        directives.append(_system(backend).gpu_directive.format(n=settings.gpus))
    if _system(backend).directive_map:
        pairs = (d.partition("=") for d in directives)
        kwargs["job_extra_directives"] = {k.strip(): v.strip() for k, _, v in pairs}
    else:
        kwargs["job_extra_directives"] = directives
    prologue = list(conf.get("job-script-prologue") or []) + list(settings.prologue)
    kwargs["job_script_prologue"] = prologue + _env_prologue(environ or {})
    extra_args = list(conf.get("worker-extra-args") or [])
    if settings.gpus:
        # every worker of the job advertises one GPU
        extra_args += ["--resources", ",".join(f"{k}={v:g}" for k, v in GPU_RESOURCE.items())]
    kwargs["worker_extra_args"] = extra_args
    options = dict(conf.get("scheduler-options") or {})
    options.setdefault("dashboard_address", "127.0.0.1:0")  # reach it through an ssh tunnel
    kwargs["scheduler_options"] = options
    return kwargs


def worker_python(settings: ClusterSettings) -> str | None:
    """The workers' interpreter as the job script's command line must hold it: shell-quoted.

    dask-jobqueue writes it unquoted at the head of the worker command. The study's
    ``python`` must be an executable file here (``ClusterError`` otherwise); without one,
    this interpreter, unless the Dask config names one (the user's own setting, kept as
    written). None: leave it to the Dask config."""
    if settings.python is not None:
        problem = python_problem(settings.python)
        if problem:
            raise ClusterError(f"[cluster] {problem}")
        return shlex.quote(os.path.expanduser(settings.python))
    if _config(settings.backend).get("python") is None:
        return shlex.quote(sys.executable)
    return None


def make_cluster(backend: str, kwargs: dict[str, Any]) -> Any:
    """Create the dask-jobqueue cluster object from :func:`resolve`'s keywords (no job is submitted yet)."""
    import dask_jobqueue

    try:
        return getattr(dask_jobqueue, _system(backend).cluster_class)(**kwargs)
    except Exception as exc:
        raise ClusterError(f"could not set up the {_system(backend).label} cluster: {exc}") from None


def job_script(settings: ClusterSettings, environ: dict[str, Any] | None = None) -> str:
    """The batch script each worker job would run (nothing is submitted, no scheduler is started).

    The scheduler's port is chosen when a study starts, and with TLS (the default) its
    certificates are made then, in a directory of their own under the shared one: the
    script shows both as placeholders.
    """
    import dask_jobqueue

    backend = settings.backend
    kwargs = resolve(settings, environ)
    kwargs.pop("scheduler_options")
    interface = kwargs.get("interface")
    host = next(iter(interface_addresses().get(interface, [])), None) if interface else None
    secure = settings.tls is not False
    address = f"{'tls' if secure else 'tcp'}://{host or '<scheduler-host>'}:<port>"
    if secure:
        base = tls_base(settings)
        problem = tls.folder_problem(base) if base.exists() else None
        if problem:
            raise ClusterError(
                f"the TLS folder {base} {problem}: set [cluster] shared_temp_directory to a folder of your own"
            )
        folder = base / f"{tls.PREFIX}XXXXXXXX"
        kwargs["security"] = _security(folder)
        kwargs["protocol"] = "tls://"
    job_cls = getattr(dask_jobqueue, _system(backend).cluster_class).job_cls
    try:
        return job_cls(address, name="dummy-name", config_name=backend, **kwargs).job_script()
    except Exception as exc:
        raise ClusterError(f"could not write the {_system(backend).label} job script: {exc}") from None


def default_route_interface(route_table: str | None = None) -> str | None:
    """The network interface of this host's default route (IPv4), read from ``/proc/net/route``.

    The interface a batch job reaches the driver by is, on most sites, the one its
    traffic leaves by. None where there is no default route or no such table (not
    Linux): dask-jobqueue's own choice then applies. Nothing is sent anywhere.
    """
    if route_table is None:
        try:
            route_table = Path("/proc/net/route").read_text()
        except OSError:
            return None
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        # Iface Destination Gateway Flags ... Mask: destination 0 with mask 0 is the default route
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


def interface_addresses() -> dict[str, list[str]]:
    """Each network interface of this host and its IPv4 addresses (for messages and job scripts)."""
    import socket

    import psutil

    return {
        name: [a.address for a in addrs if a.family == socket.AF_INET] for name, addrs in psutil.net_if_addrs().items()
    }


def tls_base(settings: ClusterSettings) -> Path:
    """Where a study's certificate directory is made: on a file system the compute nodes see.

    Its path goes unquoted into the worker's command line (``--tls-ca-file <path>``), so
    it is refused (``ClusterError``) unless the shell reads it as one word once its
    variables are expanded."""
    configured = settings.shared_temp_directory or _config(settings.backend).get("shared-temp-directory")
    base = Path(os.path.expandvars(configured)).expanduser() if configured else tls.default_base()
    problem = path_problem(str(base))
    if problem:
        source = "[cluster] shared_temp_directory" if configured else "the TLS folder in your home"
        raise ClusterError(f"{source} expands to {problem}")
    return base


_PEM_FILES = {"ca": "ca.pem", "cert": "cert.pem", "key": "key.pem"}


def _security(folder: Path) -> Any:
    """A ``Security`` reading the study's certificate files in ``folder``, for every role, TLS required."""
    from distributed.security import Security

    ca, cert, key = (str(folder / _PEM_FILES[k]) for k in ("ca", "cert", "key"))
    roles = {
        f"tls_{role}_{part}": path
        for role in ("client", "scheduler", "worker")
        for part, path in (("cert", cert), ("key", key))
    }
    return Security(tls_ca_file=ca, require_encryption=True, **roles)


def make_certificates(settings: ClusterSettings) -> tuple[Any, Path]:
    """A self-signed certificate for one study, written in a new 0700 directory (files 0600).

    Returns the ``Security`` that the scheduler, the client and the workers use (the
    workers read the same files, so the directory must be on a shared file system) and
    the directory, which the caller removes when the study ends.
    """
    from distributed.security import Security

    base = tls.private_base(tls_base(settings))
    for gone in tls.remove_leftovers(base):
        log.warning("removed %s: certificates left by a driver that is gone", gone)
    try:
        folder = Path(tempfile.mkdtemp(prefix=tls.PREFIX, dir=base))  # mode 0700, a name nobody else has
        tls.write_note(folder)
    except OSError as exc:
        raise ClusterError(
            f"cannot make the study's TLS directory under {base}: {exc}. Set [cluster] shared_temp_directory "
            "to a folder on a file system the compute nodes see"
        ) from None
    temporary = Security.temporary()  # one key and self-signed certificate, in memory
    pem = {"ca": temporary.tls_ca_file, "cert": temporary.tls_worker_cert, "key": temporary.tls_worker_key}
    for part, text in pem.items():
        fd = os.open(folder / _PEM_FILES[part], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    log.info("TLS certificates for this study in %s", folder)
    return _security(folder), folder


def _refusal(exc: BaseException) -> str:
    """The scheduler's own words from dask-jobqueue's 'Command exited with non-zero exit code' error."""
    text = str(exc)
    if "stderr:" in text:
        text = text.split("stderr:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[-3:]) or type(exc).__name__


def jobs_state(cluster: Any, backend: str) -> str:
    """What the scheduler says about the cluster's jobs (best effort, for error messages)."""
    ids = [str(job.job_id) for job in getattr(cluster, "workers", {}).values() if getattr(job, "job_id", None)]
    if not ids:
        return "no job was submitted"
    system = _system(backend)
    command = list(system.status_command) + ([",".join(ids)] if system.ids_joined else ids)
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    shown = "; ".join(out.splitlines()[:5]) if out else "no answer"
    return f"job(s) {', '.join(ids)} — `{' '.join(command)}` says: {shown}"


def _close_after_refusal(cluster: Any) -> None:
    """Close a cluster whose job submission failed: forget the never-started job first.

    SpecCluster's close asserts every job it created has run; a refused job never did.
    """
    from distributed.core import Status

    for name, job in list(cluster.workers.items()):
        if getattr(job, "job_id", None) is None:
            job.status = Status.failed
            del cluster.workers[name]
    cluster.worker_spec.clear()
    cluster.close()


def pinned_devices(visible: str | None, worker_name: str) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for worker *i* of a multi-GPU job: the job's GPUs rotated to start at the *i*-th.

    A job with ``gpus = g`` runs ``g`` worker processes named ``<job>-0`` … ``<job>-<g-1>``;
    each sees all of the job's GPUs and would use the first. Rotating the list (as
    dask-cuda does for a node) gives each its own. Returns None for an unnumbered name.
    """
    match = re.search(r"-(\d+)$", str(worker_name))
    if match is None:
        return None
    index = int(match.group(1))
    devices = [d for d in (visible or "").split(",") if d.strip()]
    if not devices:
        return str(index)
    index %= len(devices)
    return ",".join(devices[index:] + devices[:index])


class PinGPU(WorkerPlugin):
    """Pins each worker of a multi-GPU job to its own device, before any trial runs there."""

    name = "tomosweep-pin-gpu"

    def setup(self, worker: Any) -> None:
        """Narrow ``CUDA_VISIBLE_DEVICES`` to this worker's own GPU (Dask calls it on the worker).

        Parameters
        ----------
        worker : distributed.Worker
            The worker starting up; its name picks the device.
        """
        pinned = pinned_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), worker.name)
        if pinned is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = pinned  # CuPy has not touched CUDA in this process yet


def start(settings: ClusterSettings, *, environ: dict[str, Any]) -> Started:
    """Create the cluster, submit its first job now, then adapt between min_jobs and max_jobs.

    The first job is submitted here, not by the adaptive loop, so that a refusal
    (unknown partition, account, too many cores or too much memory) stops the run with
    the scheduler's own message instead of a log line in the background. The study's
    certificates are made first (unless ``tls = false``) and removed by ``cleanup``
    once the cluster has closed, or here when starting fails.
    """
    backend = settings.backend
    kwargs = resolve(settings, environ)
    warnings: tuple[str, ...] = ()
    cleanup = None
    if settings.tls is False:
        warnings = (
            f"[cluster] tls = false: the {_system(backend).label} workers reach the scheduler over plain tcp://, "
            "and anyone who can reach its port can run code on them as you",
        )
    else:
        kwargs["security"], folder = make_certificates(settings)
        cleanup = functools.partial(shutil.rmtree, folder, ignore_errors=True)
    try:
        return _start_cluster(settings, kwargs, warnings, cleanup)
    except BaseException:
        if cleanup is not None:
            cleanup()
        raise


def _start_cluster(
    settings: ClusterSettings, kwargs: dict[str, Any], warnings: tuple[str, ...], cleanup: Any
) -> Started:
    backend = settings.backend
    cluster = make_cluster(backend, kwargs)
    min_jobs = settings.min_jobs or 1
    max_jobs = max(settings.max_jobs or min_jobs, min_jobs)
    try:
        submit_first_job(cluster)  # what cluster.scale(jobs=1) does, but the submit command's error is raised
    except Exception as exc:
        _close_after_refusal(cluster)
        raise ClusterError(
            f"{_system(backend).label} refused the worker job: {_refusal(exc)}. "
            "Check queue, account, cores, memory and walltime in [cluster]."
        ) from None
    # minimum >= 1 (settings check it): with 0, the adaptive loop could cancel the first job while it waits
    cluster.adapt(minimum_jobs=min_jobs, maximum_jobs=max_jobs, interval="1s")
    conf = _config(backend)
    cores, processes = kwargs["cores"], kwargs["processes"]
    per_job = settings.gpus or processes * (cores // processes)
    queue = _first(settings.queue, conf, "queue")
    gpus = f", {settings.gpus} GPU(s)" if settings.gpus else ""
    text = (
        f"{_system(backend).label}: {min_jobs}–{max_jobs} job(s) of {cores} cores, {kwargs['memory']}{gpus}, "
        f"{f'queue {queue}' if queue else 'default queue'}, walltime {_first(settings.walltime, conf, 'walltime')}; "
        f"scheduler {cluster.scheduler_address}"
    )
    return Started(
        cluster,
        max_jobs * per_job,
        text,
        worker_plugins=(PinGPU(),) if settings.gpus > 1 else (),
        warnings=warnings,
        cleanup=cleanup,
        no_worker=functools.partial(_no_worker, cluster, backend, kwargs.get("interface")),
    )


def _no_worker(cluster: Any, backend: str, interface: str | None, timeout: float) -> str:
    """Why no worker joined: the jobs' state, and the address the workers were told to connect to."""
    here = ", ".join(f"{name} {' '.join(addrs)}" for name, addrs in interface_addresses().items() if addrs)
    told = f"{cluster.scheduler_address} (interface {interface or 'chosen by Dask'})"
    return (
        f": {jobs_state(cluster, backend)}. The jobs were cancelled and nothing was written. "
        f"The workers were told to connect to {told}; if the compute nodes cannot reach it, set [cluster] "
        f'interface = "<name>" to an interface of this host they can reach ({here}). '
        "Raise [cluster] start_timeout if the queue is just slow, or check queue, account and walltime."
    )
