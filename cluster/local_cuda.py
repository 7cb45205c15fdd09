"""``backend = "local-cuda"``: dask-cuda's ``LocalCUDACluster``, one worker per GPU of this node."""

from __future__ import annotations

import os
from typing import Any

from tomosweep.cluster.backends import Started
from tomosweep.cluster.local import worker_log_level
from tomosweep.cluster.settings import GPU_RESOURCE, ClusterSettings
from tomosweep.errors import ClusterError


def visible_devices(settings: ClusterSettings) -> list[str]:
    """The GPUs to use: ``devices`` from the study, else ``CUDA_VISIBLE_DEVICES``, else all."""
    spec = settings.devices if settings.devices is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is not None:
        devices = [d.strip() for d in spec.split(",") if d.strip()]
        if not devices:
            raise ClusterError(f"no GPU is visible: CUDA_VISIBLE_DEVICES / devices is {spec!r}")
        return devices[: settings.n_workers] if settings.n_workers else devices
    try:
        import cupy  # pyright: ignore[reportMissingImports]  (optional: the gpu extra)

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no CuPy, no driver, or no device
        raise ClusterError(
            f'backend = "local-cuda" needs a CUDA GPU and CuPy, and found none ({type(exc).__name__}: {exc}). '
            'Install the GPU extra (pip install "tomosweep[gpu]") on a GPU node, or use backend = "local".'
        ) from None
    if count < 1:
        raise ClusterError('backend = "local-cuda" found no CUDA device; use backend = "local"')
    devices = [str(i) for i in range(count)]
    return devices[: settings.n_workers] if settings.n_workers else devices


def start(settings: ClusterSettings, *, environ: dict[str, Any]) -> Started:
    """Start one worker process per GPU; each advertises one ``GPU`` resource.

    dask-cuda gives worker *i* a ``CUDA_VISIBLE_DEVICES`` list rotated to start at the
    *i*-th device, so each trial, which uses CuPy's current (first visible) device,
    runs on its own GPU.
    """
    try:
        from dask_cuda import LocalCUDACluster  # pyright: ignore[reportMissingImports]  (optional: the gpu extra)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "dask_cuda":
            raise ClusterError(
                'backend = "local-cuda" needs dask-cuda: pip install "tomosweep[gpu]" (on a machine with CUDA)'
            ) from None
        # dask-cuda is there, but one of its own imports failed (pynvml, a CUDA library, a
        # version clash): reinstalling the extra would not help, the original error does
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ClusterError(
            f'backend = "local-cuda": dask-cuda is installed but cannot be imported ({reason}); '
            'fix that import, or use backend = "local"'
        ) from None
    devices = visible_devices(settings)
    try:
        cluster = LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=",".join(devices),
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=settings.memory_limit or "auto",
            resources=dict(GPU_RESOURCE),
            silence_logs=worker_log_level(),
        )
    except Exception as exc:
        raise ClusterError(f"could not start the local CUDA cluster on GPUs {','.join(devices)}: {exc}") from None
    return Started(cluster, len(devices), f"local CUDA cluster: one worker on each of GPUs {','.join(devices)}")
