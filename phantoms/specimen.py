"""The ground-truth record every specimen generator returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.solvers.elements import atomic_numbers, check_symbols


@dataclass(frozen=True, eq=False)
class Specimen:
    """A multi-element ground truth.

    Attributes
    ----------
    name : str
        Generator name (``"nanocubes"``, ``"file:<path>"`` …).
    elements : tuple of str
        Chemical symbols, one per channel.
    volumes : ndarray, shape (n_elements, n, n, n_x)
        Per-element concentration maps in the solver layout ``(n_y, n_z, n_x)``;
        a 2D specimen has ``n_x = 1``. Float64, ≥ 0, NumPy.
    z : tuple of float
        Atomic number per channel (the fused HAADF model's Z_i).
    units : str
        What ``volumes`` holds: ``"atomic fraction"`` (stoichiometry, as in
        Schwartz 2024) or ``"g/cm^3"`` (partial density C_A·ρ, Yuan 2021 eq. 9).
    weight_fractions : ndarray or None
        C_A maps (same shape as ``volumes``) where the generator defines them.
    density : ndarray or None
        ρ map ``(n, n, n_x)`` in g/cm³ where defined.
    info : dict
        Generator parameters (seed, sizes, compositions) for provenance.
    """

    name: str
    elements: tuple[str, ...]
    volumes: np.ndarray
    z: tuple[float, ...]
    units: str = "atomic fraction"
    weight_fractions: np.ndarray | None = None
    density: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        elements = check_symbols(self.elements)
        volumes = np.asarray(self.volumes, dtype=np.float64)
        if volumes.ndim != 4 or volumes.shape[1] != volumes.shape[2]:
            raise InputError(
                f"specimen {self.name!r}: volumes must be (n_elements, n, n, n_x) with square slices, "
                f"got {volumes.shape}"
            )
        if volumes.shape[0] != len(elements) or len(self.z) != len(elements):
            raise InputError(
                f"specimen {self.name!r}: {len(elements)} elements but {volumes.shape[0]} volumes "
                f"and {len(self.z)} atomic numbers"
            )
        if not np.all(np.isfinite(volumes)) or volumes.min() < 0:
            raise InputError(f"specimen {self.name!r}: volumes must be finite and non-negative")
        volumes.setflags(write=False)
        object.__setattr__(self, "elements", elements)
        object.__setattr__(self, "volumes", volumes)
        object.__setattr__(self, "z", tuple(float(v) for v in self.z))

    @classmethod
    def from_symbols(cls, name: str, elements: tuple[str, ...], volumes: np.ndarray, **kwargs: Any) -> Specimen:
        """Build with Z looked up from the element symbols."""
        return cls(name=name, elements=tuple(elements), volumes=volumes, z=atomic_numbers(elements), **kwargs)

    @property
    def n(self) -> int:
        """Slice size: the volumes' ``n_y`` (= ``n_z``)."""
        return int(self.volumes.shape[1])

    @property
    def n_x(self) -> int:
        """Length along the tilt axis x."""
        return int(self.volumes.shape[3])

    @property
    def n_elements(self) -> int:
        """Number of element volumes."""
        return int(self.volumes.shape[0])

    def channel(self, element: str) -> np.ndarray:
        """The volume of one element by symbol."""
        try:
            return self.volumes[self.elements.index(element)]
        except ValueError:
            raise InputError(f"specimen {self.name!r} has no element {element!r}; it has {self.elements}") from None
