"""The one exception family of tomosweep.

Every failure a user can cause (a bad study or phantom file, a store from another
spec, a GPU asked for but absent, inconsistent solver inputs) raises a subclass of
:class:`TomosweepError` whose message says what was wrong and how to fix it.
"""

from __future__ import annotations


class TomosweepError(Exception):
    """Base class of every error tomosweep raises on purpose."""


class InputError(TomosweepError, ValueError):
    """Arrays or parameters handed to a solver, projector or metric are inconsistent."""


class BackendError(TomosweepError, RuntimeError):
    """The requested compute device (GPU/CuPy) is not available."""


class DivergenceError(TomosweepError, FloatingPointError):
    """A solver produced non-finite values (NaN or inf) and stopped."""


class SpecError(InputError):
    """A study file is malformed: the message names the key and what is allowed."""


class StoreError(TomosweepError):
    """A sweep store is missing, not a tomosweep store, or from another study."""


class StoreLockedError(StoreError):
    """Another driver holds the store's lock; only one driver may write a store."""


class ClusterError(TomosweepError):
    """A Dask cluster could not be created or reached."""
