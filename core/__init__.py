"""tomosweep — hyperparameter sweeps for fused chemical electron tomography.

The package namespace: ``tomosweep.solvers`` (reconstruction core), ``tomosweep.phantoms``
(ground truth and simulated acquisition), ``tomosweep.sweep`` (studies, optimisation, CLI),
``tomosweep.results`` (the zarr store and exports), ``tomosweep.cluster`` (Dask clusters),
and the error family in :mod:`tomosweep.errors`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tomosweep.errors import (
    BackendError,
    ClusterError,
    DivergenceError,
    InputError,
    SpecError,
    StoreError,
    StoreLockedError,
    TomosweepError,
)

try:
    __version__ = version("tomosweep")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BackendError",
    "ClusterError",
    "DivergenceError",
    "InputError",
    "SpecError",
    "StoreError",
    "StoreLockedError",
    "TomosweepError",
    "__version__",
]
