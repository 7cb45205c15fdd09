"""The one validation module: every check of a number or an array, with one plain message each.

Used by the solvers, the phantoms, the measured series and the sweep alike, so a
"positive number" or "γ in [1, 3]" is checked — and worded — the same everywhere. Each
check raises :class:`~tomosweep.errors.InputError` before any work is done and returns
the value converted (``float``, ``int`` or the array).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.solvers import backend


def finite_array(arr: Any, name: str, *, nonneg: bool = False) -> Any:
    """Return ``arr`` (NumPy or CuPy) after checking it is finite (and ≥ 0 if asked)."""
    xp = backend.get_array_module(arr)
    arr = arr if xp is not np else np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if not bool(xp.all(xp.isfinite(arr))):
        raise InputError(f"{name} contains NaN or infinite values")
    if nonneg and bool((arr < 0).any()):
        raise InputError(
            f"{name} must be non-negative (they are counts or intensities); its minimum is {float(arr.min()):g}"
        )
    return arr


def tilt_series_shape(arr: Any, projector: Any, name: str, *, lead: tuple[int, ...] = ()) -> int:
    """Check ``arr`` is ``lead + (n_angles, n_det, n_x)`` for ``projector``; return n_x."""
    want = lead + (projector.n_angles, projector.n_det)
    if arr.ndim != len(want) + 1 or tuple(arr.shape[: len(want)]) != want:
        dims = ", ".join(str(d) for d in want)
        raise InputError(f"{name} must have shape ({dims}, n_x) to match {projector!r}; got {tuple(arr.shape)}")
    return int(arr.shape[-1])


def positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum`` (any integer-like but bool), or a plain InputError."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}") from None
    if number < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {number}")
    return number


def positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (≥ 0 with ``allow_zero``), or a plain InputError.

    Parameters
    ----------
    value : object
        What the caller was given.
    name : str
        Its name in the error message.
    allow_zero : bool
        Accept 0.

    Returns
    -------
    float
        The value.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def same_projector_size(*projectors: Any) -> None:
    """Refuse projectors of different slice sizes or detector widths with a plain InputError.

    Parameters
    ----------
    *projectors : Projector
        The projectors of one reconstruction.
    """
    sizes = {(p.n, p.n_det) for p in projectors}
    if len(sizes) > 1:
        raise InputError(f"all projectors must share slice size and detector width; got (n, n_det) = {sorted(sizes)}")


def number_in(
    value: Any,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = True,
    high_open: bool = False,
    why: str = "",
) -> float:
    """``value`` as a float inside the interval, e.g. ``(0, 1]``; ``why`` is added to the message."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if not np.isfinite(v) or below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise InputError(f"{name} must lie in {interval}{f' ({why})' if why else ''}, got {value!r}")
    return v


def gamma_exponent(value: Any) -> float:
    """The HAADF Z-contrast exponent γ of Schwartz 2024 eq. 1: 1 (mass-thickness) to 3."""
    return number_in(value, "gamma", 1.0, 3.0, low_open=False, why="Schwartz 2024: γ ≈ 1.4–2")


def relaxation(value: Any) -> float:
    """SIRT's relaxation factor, in (0, 2) for convergence (Yuan 2021 eq. 11)."""
    return number_in(value, "relaxation", 0.0, 2.0, high_open=True)
