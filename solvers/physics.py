r"""Physical factors that turn reconstructed intensities into weight fractions.

Thin-film X-ray emission (Yuan 2021 §2.1, eq. 4–7) and HAADF elastic scattering
(§2.2, eq. 13–14) both make a projection a sum over elements of a per-element factor
times the projected mass :math:`\int C_A \rho\,dt`:

.. math::

    I_A = n\, f_A \int C_A \rho\, dt, \qquad
    f_A = \frac{\sigma^A_{ion}\,\omega_A\, p_A\, \varepsilon_A}{M_A}
    \quad\text{(eq. 5, 7)}

    I^H = D^H_e N_v \sum_A z_A \int C_A \rho\, dt, \qquad
    z_A = \frac{\sigma^A_{ela}}{M_A}
    \quad\text{(eq. 13, 14)}

so the HEBT response ratio of eq. 15 is, by eq. 16,
:math:`r_A = D^H_e N_v z_A / (n f_A)`.

The cross-sections, fluorescence yields and relative intensities of Yuan 2021
Table 2 (computed with MC X-ray) ship as cited data in
``tomosweep/solvers/data/yuan2021_table2.json``; :func:`yuan_table2` loads them. Other
lines or other models are entered with :func:`xray_line`. Factors are in
barn·mol/g; only their ratios matter for the weight fractions of eq. 12 and 18.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tomosweep.errors import InputError
from tomosweep.solvers import validation
from tomosweep.solvers.elements import atomic_number

_TABLE2_RESOURCE = ("data", "yuan2021_table2.json")
_FOUR_PI = 4.0 * math.pi


@dataclass(frozen=True)
class XrayLine:
    r"""Physical parameters of one characteristic X-ray line (Yuan 2021 eq. 4, 13).

    Attributes
    ----------
    element : str
        Chemical symbol, e.g. ``"Ag"``.
    line : str
        Line label, e.g. ``"La"``, ``"Ma"``, ``"Ka"``.
    beam_energy_kev : float
        Incident beam energy the cross-sections were computed for.
    sigma_elastic_barn : float
        Elastic (HAADF) scattering cross-section :math:`\sigma^A_{ela}`, barn.
    sigma_ionisation_barn : float
        Ionisation cross-section :math:`\sigma^A_{ion}`, barn.
    fluorescence_yield : float
        :math:`\omega_A`, in (0, 1].
    relative_intensity : float
        :math:`p_A`, the line's share of its shell's emission, in (0, 1].
    atomic_weight : float
        :math:`M_A`, g/mol.
    detector_efficiency : float
        :math:`\varepsilon_A`, in (0, 1].
    """

    element: str
    line: str
    beam_energy_kev: float
    sigma_elastic_barn: float
    sigma_ionisation_barn: float
    fluorescence_yield: float
    relative_intensity: float
    atomic_weight: float
    detector_efficiency: float = 1.0

    def __post_init__(self) -> None:
        atomic_number(self.element)
        if not isinstance(self.line, str) or not self.line:
            raise InputError(f"line must be a non-empty label such as 'Ka', got {self.line!r}")
        for name in ("beam_energy_kev", "sigma_elastic_barn", "sigma_ionisation_barn", "atomic_weight"):
            _positive(getattr(self, name), f"{self.element} {name}")
        for name in ("fluorescence_yield", "relative_intensity", "detector_efficiency"):
            value = _positive(getattr(self, name), f"{self.element} {name}")
            if value > 1.0:
                raise InputError(f"{self.element} {name} is a probability and must lie in (0, 1], got {value!r}")


def _positive(value: Any, name: str) -> float:
    return validation.positive_float(value, name)


def xray_line(
    element: str,
    line: str,
    *,
    beam_energy_kev: float,
    sigma_elastic_barn: float,
    sigma_ionisation_barn: float,
    fluorescence_yield: float,
    relative_intensity: float,
    atomic_weight: float,
    detector_efficiency: float = 1.0,
) -> XrayLine:
    """Build an :class:`XrayLine` from your own values, checked and converted to float.

    Use this for lines outside Yuan 2021 Table 2 or for cross-sections from another
    model or another beam energy. Every quantity must be finite and positive; the
    yield, relative intensity and efficiency are probabilities in (0, 1].

    Examples
    --------
    >>> pt = xray_line("Pt", "Ma", beam_energy_kev=200, sigma_elastic_barn=1.5e7,
    ...                sigma_ionisation_barn=6.0e3, fluorescence_yield=0.03,
    ...                relative_intensity=0.99, atomic_weight=195.084)
    """
    numbers = {
        "beam_energy_kev": beam_energy_kev,
        "sigma_elastic_barn": sigma_elastic_barn,
        "sigma_ionisation_barn": sigma_ionisation_barn,
        "fluorescence_yield": fluorescence_yield,
        "relative_intensity": relative_intensity,
        "atomic_weight": atomic_weight,
        "detector_efficiency": detector_efficiency,
    }
    checked = {name: _positive(value, f"{element} {name}") for name, value in numbers.items()}
    return XrayLine(element=element, line=line, **checked)


@functools.cache
def _load_table2() -> tuple[XrayLine, ...]:
    text = resources.files("tomosweep.solvers").joinpath(*_TABLE2_RESOURCE).read_text("utf-8")
    return tuple(XrayLine(**entry) for entry in json.loads(text)["lines"])


def yuan_table2() -> dict[str, XrayLine]:
    """Yuan 2021 Table 2: Ag Lα and Au Mα at 100 keV, Co Kα and Zn Kα at 80 keV.

    Returns
    -------
    dict of str to XrayLine
        Keyed by element symbol (a new dict each call; the lines are frozen).
        Atomic weights are IUPAC standard values; the detector efficiency, absent
        from the table, is 1.0 (a common efficiency cancels in eq. 12 and 18).
    """
    return {entry.element: entry for entry in _load_table2()}


def table2_line(element: str) -> XrayLine:
    """The Yuan 2021 Table 2 line of ``element``, or an :class:`InputError` naming the
    elements the table covers."""
    table = yuan_table2()
    try:
        return table[element]
    except (KeyError, TypeError):
        raise InputError(
            f"Yuan 2021 Table 2 has no X-ray line for {element!r}; it covers "
            f"{', '.join(sorted(table))}. Enter other elements with xray_line(...)."
        ) from None


def _as_line(line: XrayLine | str) -> XrayLine:
    if isinstance(line, XrayLine):
        return line
    if isinstance(line, str):
        return table2_line(line)
    raise InputError(f"expected an XrayLine or an element symbol, got {type(line).__name__}")


def f_factor(line: XrayLine | str) -> float:
    r"""EDS quantification factor of Yuan 2021 §2.1, eq. 7, in barn·mol/g.

    .. math:: f_A = \frac{\sigma^A_{ion}\,\omega_A\,p_A\,\varepsilon_A}{M_A}

    ``line`` is an :class:`XrayLine` or an element symbol of Table 2.
    """
    x = _as_line(line)
    return (
        x.sigma_ionisation_barn * x.fluorescence_yield * x.relative_intensity * x.detector_efficiency / x.atomic_weight
    )


def z_factor(line: XrayLine | str) -> float:
    r"""HAADF quantification factor of Yuan 2021 §2.2, eq. 14, in barn·mol/g.

    .. math:: z_A = \frac{\sigma^A_{ela}}{M_A}

    ``line`` is an :class:`XrayLine` or an element symbol of Table 2.
    """
    x = _as_line(line)
    return x.sigma_elastic_barn / x.atomic_weight


def predicted_response_ratio(
    line: XrayLine | str,
    *,
    haadf_dose: float = 1.0,
    eds_dose: float = 1.0,
    solid_angle_sr: float = _FOUR_PI,
) -> float:
    r"""Predicted HEBT response ratio of Yuan 2021 §2.2, eq. 16.

    .. math::

        r_A = \frac{D^H_e N_v z_A}{n f_A}
            = \frac{D^H_e}{D_e\,\Omega/4\pi}\,\frac{z_A}{f_A},
        \qquad n = N_v D_e \frac{\Omega}{4\pi}\ \text{(eq. 6)}

    Avogadro's number cancels. With the defaults (equal doses, full solid angle)
    this is just :math:`z_A/f_A`; the ratios *between* elements, which is what the
    reconstruction depends on up to a global scale, do not depend on the doses or the
    solid angle. Measured data usually fit r_A by regression instead (eq. 15,
    :func:`tomosweep.solvers.hebt.response_ratios`), because the effective dose and
    detector geometry are rarely known.

    Parameters
    ----------
    line : XrayLine or str
        The line, or an element symbol of Table 2.
    haadf_dose, eds_dose : float
        Electron doses :math:`D^H_e` and :math:`D_e` (same units).
    solid_angle_sr : float
        EDS detector solid angle Ω in steradian, in (0, 4π].
    """
    haadf_dose = _positive(haadf_dose, "haadf_dose")
    eds_dose = _positive(eds_dose, "eds_dose")
    omega = _positive(solid_angle_sr, "solid_angle_sr")
    if omega > _FOUR_PI * (1 + 1e-12):
        raise InputError(f"solid_angle_sr cannot exceed 4π ≈ 12.566 sr, got {solid_angle_sr!r}")
    return haadf_dose / (eds_dose * omega / _FOUR_PI) * z_factor(line) / f_factor(line)
