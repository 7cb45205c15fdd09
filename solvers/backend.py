"""Array backend: the only module that imports CuPy or chooses scipy vs cupyx sparse.

The device travels with the data (as in sigpy's ``backend``): a solver picks ``xp``
once per call, from its inputs or from an explicit ``device`` argument, and
allocates every array through it. CuPy is optional; asking for a GPU without it, or
without a visible CUDA device, raises :class:`~tomosweep.errors.BackendError` with a
message that says how to fix it.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Literal

import numpy as np
import scipy.sparse

from tomosweep.errors import BackendError, InputError

Device = Literal["cpu", "gpu", "auto"]
_DEVICES = ("cpu", "gpu", "auto")

_GPU_HELP = (
    "Install the GPU extra (`pip install 'tomosweep[gpu]'`, CUDA 12) on a machine with an "
    "NVIDIA GPU, or run with device='cpu'."
)


@functools.cache
def _cupy() -> ModuleType | None:
    try:
        import cupy  # pyright: ignore[reportMissingImports]  (optional: the gpu extra)
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None
    return cupy


@functools.cache
def gpu_unavailable_reason() -> str | None:
    """Why no GPU can be used here, or ``None`` when CuPy sees a CUDA device."""
    cupy = _cupy()
    if cupy is None:
        return "CuPy is not installed"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy cannot reach a CUDA device ({exc})"
    if count < 1:
        return "no CUDA device is visible (check CUDA_VISIBLE_DEVICES)"
    return None


def gpu_available() -> bool:
    """True when CuPy is importable and sees at least one CUDA device."""
    return gpu_unavailable_reason() is None


def resolve_device(device: str) -> Literal["cpu", "gpu"]:
    """Turn ``"cpu" | "gpu" | "auto"`` into a concrete device, or raise a clear error."""
    if device not in _DEVICES:
        raise InputError(f"device must be one of {_DEVICES}, got {device!r}")
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu":
        reason = gpu_unavailable_reason()
        if reason is not None:
            raise BackendError(f"A GPU was requested but {reason}. {_GPU_HELP}")
    return device  # type: ignore[return-value]


def array_module(device: str) -> ModuleType:
    """The array module (numpy or cupy) for ``device``."""
    if resolve_device(device) == "gpu":
        return _cupy()  # type: ignore[return-value]
    return np


def get_array_module(*arrays: Any) -> ModuleType:
    """numpy, or cupy when any of ``arrays`` is a CuPy array."""
    cupy = _cupy()
    if cupy is not None:
        for arr in arrays:
            if isinstance(arr, cupy.ndarray):
                return cupy
    return np


def choose_xp(*arrays: Any, device: str | None = None) -> ModuleType:
    """Pick ``xp`` once per call: from ``device`` when given, else from the data."""
    if device is None:
        return get_array_module(*arrays)
    return array_module(device)


def is_gpu(xp: ModuleType) -> bool:
    """Whether ``xp`` is CuPy rather than NumPy.

    Parameters
    ----------
    xp : module
        The array module a call chose (see :func:`array_module`).

    Returns
    -------
    bool
        True for CuPy.
    """
    return xp is not np


def sparse_module(xp: ModuleType) -> ModuleType:
    """``scipy.sparse`` for NumPy, ``cupyx.scipy.sparse`` for CuPy."""
    if xp is np:
        return scipy.sparse
    import cupyx.scipy.sparse  # pyright: ignore[reportMissingImports]  (optional: the gpu extra)

    return cupyx.scipy.sparse


def asarray(array: Any, xp: ModuleType, dtype: Any = None) -> Any:
    """Move ``array`` onto ``xp``'s device (a no-op when it is already there)."""
    if xp is np:
        return np.asarray(to_numpy(array), dtype=dtype)
    return xp.asarray(array, dtype=dtype)


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy (or view) of ``array``, wherever it lives."""
    cupy = _cupy()
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return np.asarray(array)


def device_name(xp: ModuleType) -> str:
    """Human-readable device description for trial records."""
    if xp is np:
        return "cpu"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"]
    return f"gpu:{name.decode() if isinstance(name, bytes) else name}"
