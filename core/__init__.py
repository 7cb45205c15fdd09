"""tomosweep — hyperparameter sweeps for fused chemical electron tomography.

The package namespace: ``tomosweep.solvers`` (reconstruction core), and the error
family in :mod:`tomosweep.errors`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tomosweep.errors import BackendError, DivergenceError, InputError, TomosweepError

try:
    __version__ = version("tomosweep")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["BackendError", "DivergenceError", "InputError", "TomosweepError", "__version__"]
