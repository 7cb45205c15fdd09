r"""Simulated acquisition: the HAADF and chemical tilt series a microscope would record.

Tilt schemes
------------
A :class:`TiltScheme` spreads ``n_haadf`` HAADF tilts evenly over ``tilt_range``
(default ±70°, Schwartz 2024 Fig. 4). Chemical maps are taken either

* **every k-th HAADF tilt** (``chem_every=k``, the usual practice: an EDS/EELS map is
  recorded alongside the HAADF image at every k-th stop, so the chemical tilts are
  ``haadf_angles[::k]`` — ``ceil(n_haadf / k)`` of them), or
* **freely** (``n_chem=m``): ``m`` tilts evenly over the same range, not necessarily a
  subset of the HAADF tilts (the Schwartz 2024 Fig. 4a grid varies both counts freely).

Signals (Schwartz 2024 Methods, "Multi-modal simulations")
-----------------------------------------------------------
* HAADF: the projection of :math:`\sum_i (Z_i x_i)^\gamma` (γ = 1.7 by default).
* Chemical map of element *i*: the projection of :math:`x_i` plus a flat background of
  ``background`` × the map's maximum (15 %, "we set the background (vacuum) to roughly
  15 % of the max intensity").
* Each is then scaled by a dose *d* and drawn as Poisson counts:
  ``counts ~ Poisson(d · clean)``.

SNR, exactly as computed here
-----------------------------
For an image with noise-free expectation :math:`\mu = d\cdot\mathrm{clean}` (counts)
and a noisy realisation *c*,

.. math:: \mathrm{SNR} = \frac{\overline{\mu}}{\sigma_N},\qquad
          \sigma_N = \sqrt{\overline{(c - \mu)^2}},

the mean signal over all pixels of the tilt series over the RMS noise (the Rose
convention). For Poisson counts :math:`\sigma_N^2 = \overline{\mu}`, so
:math:`\mathrm{SNR} = \sqrt{\overline{\mu}}` and the dose that hits a target is
:math:`d = \mathrm{SNR}^2 / \overline{\mathrm{clean}}`. ``Acquisition.snr`` reports the
value measured on the realisation. (Schwartz 2024 prints the Poisson SNR as
:math:`(\mu_s + \mu_n^2)/\sigma_N^2`; its reported values, 1.9–2.9 for chemistry and
≈ 2200 for HAADF, fit :math:`\sqrt{\overline{\mu}}` in counts, which is what we use.)

Yuan mode
---------
:func:`simulate_yuan` instead computes absolute counts from physics (Yuan 2021
eq. 4–9, 13): for partial densities :math:`C_A\rho` in g/cm³,

.. math::
    I_A = N_V f_A\, D_e \frac{\Omega}{4\pi}\,\Delta\sum_j w_{ij} (C_A\rho)_j ,\qquad
    I^H = D^H_e N_V \sum_A z_A\, \Delta\sum_j w_{ij} (C_A\rho)_j ,

with :math:`f_A = \sigma^A_{ion}\omega_A p_A\varepsilon_A / M_A` (eq. 7),
:math:`z_A = \sigma^A_{ela}/M_A` (eq. 14), Δ the pixel size (the projector's weights
are in pixels), then Poisson noise on both — so quantification can be checked end to end.

Determinism: the result depends only on (specimen, scheme, noise settings, seed); the
seed feeds independent streams for the HAADF and for each element, so adding an
element does not change the others' noise.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.phantoms.specimen import Specimen
from tomosweep.phantoms.specimens import make_specimen
from tomosweep.solvers import Projector, validation
from tomosweep.solvers.physics import XrayLine, f_factor, yuan_table2, z_factor

AVOGADRO = 6.02214076e23  # 1/mol (SI 2019 exact)
BARN_CM2 = 1e-24


@dataclass(frozen=True)
class TiltScheme:
    """Which tilts the HAADF and chemical series are recorded at (see module docstring).

    Parameters
    ----------
    n_haadf : int
        HAADF tilts (0 for a chemical-only acquisition).
    n_chem : int, optional
        Chemical tilts spread freely over the range. Give this or ``chem_every``.
    chem_every : int, optional
        Record a chemical map at every k-th HAADF tilt.
    tilt_range : (float, float)
        First and last tilt in degrees, within ±90°.
    """

    n_haadf: int
    n_chem: int | None = None
    chem_every: int | None = None
    tilt_range: tuple[float, float] = (-70.0, 70.0)

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.tilt_range)
        if not (-90.0 <= lo < hi <= 90.0):
            raise InputError(f"tilt_range must satisfy -90 ≤ first < last ≤ 90 degrees, got {self.tilt_range}")
        object.__setattr__(self, "tilt_range", (lo, hi))
        object.__setattr__(self, "n_haadf", validation.positive_int(self.n_haadf, "n_haadf", minimum=0))
        if (self.n_chem is None) == (self.chem_every is None):
            raise InputError("give exactly one of n_chem (free chemical tilts) or chem_every (every k-th HAADF tilt)")
        if self.chem_every is not None:
            object.__setattr__(self, "chem_every", validation.positive_int(self.chem_every, "chem_every"))
            if self.n_haadf < 1:
                raise InputError("chem_every needs HAADF tilts to pick from (n_haadf ≥ 1); use n_chem instead")
        else:
            object.__setattr__(self, "n_chem", validation.positive_int(self.n_chem, "n_chem"))

    @property
    def haadf_angles(self) -> np.ndarray:
        """The HAADF tilts in degrees, evenly over ``tilt_range`` (empty without HAADF)."""
        return np.linspace(*self.tilt_range, self.n_haadf) if self.n_haadf else np.zeros(0)

    @property
    def chem_angles(self) -> np.ndarray:
        """The chemical tilts in degrees: every ``chem_every``-th HAADF tilt, or ``n_chem``
        evenly over ``tilt_range`` (one tilt: its middle)."""
        if self.chem_every is not None:
            return self.haadf_angles[:: self.chem_every]
        assert self.n_chem is not None  # __post_init__ demands n_chem where chem_every is not given
        if self.n_chem == 1:
            return np.array([0.5 * (self.tilt_range[0] + self.tilt_range[1])])
        return np.linspace(*self.tilt_range, self.n_chem)


@dataclass(frozen=True, eq=False)
class Acquisition:
    """Simulated tilt series of one specimen (NumPy, float64 counts).

    Attributes
    ----------
    haadf : ndarray (n_haadf, n, n_x) or None
    chem : ndarray (n_elements, n_chem, n, n_x)
    haadf_angles, chem_angles : ndarray
        Tilts in degrees.
    elements, z : tuple
        Channel order of ``chem`` and the atomic numbers.
    dose : dict
        Counts per unit of noise-free signal: ``{"haadf": d, element: d_i, …}``.
    background : dict
        Chemical background level in counts per element (before noise).
    snr : dict
        SNR measured on this realisation, per modality (see module docstring).
    info : dict
        The settings used (gamma, targets, seed, mode).
    haadf_at_chem : ndarray (n_chem, n, n_x) or None
        The HAADF signal recorded alongside each chemical map (an EDS/EELS scan
        records the HAADF detector at the same time), at the HAADF series' dose with
        its own noise. HEBT (Yuan 2021 eq. 15–17) pairs every chemical projection with
        a HAADF one at the same tilt; this is that HAADF when a chemical tilt is not
        one of the HAADF series' tilts. ``None`` without a HAADF series.
    """

    haadf: np.ndarray | None
    chem: np.ndarray
    haadf_angles: np.ndarray
    chem_angles: np.ndarray
    elements: tuple[str, ...]
    z: tuple[float, ...]
    dose: dict[str, float]
    background: dict[str, float]
    snr: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    haadf_at_chem: np.ndarray | None = None

    def projectors(self, n: int) -> tuple[Projector | None, Projector]:
        """``(haadf_projector, chem_projector)`` for slices of size ``n`` (cached by geometry)."""
        haadf = Projector(n, self.haadf_angles) if self.haadf_angles.size else None
        return haadf, Projector(n, self.chem_angles)


def measured_snr(expected: np.ndarray, counts: np.ndarray) -> float:
    """Mean expected signal over RMS noise of one realisation (module docstring)."""
    noise = np.sqrt(np.mean((counts - expected) ** 2))
    return float(np.mean(expected) / noise) if noise > 0 else math.inf


def _per_element(
    value: float | Sequence[float] | Mapping[str, float], elements: tuple[str, ...], name: str
) -> list[float]:
    if isinstance(value, Mapping):
        missing = [e for e in elements if e not in value]
        if missing:
            raise InputError(f"{name} has no value for element(s) {missing}; give one per element {elements}")
        values = [value[e] for e in elements]
    elif isinstance(value, int | float | np.number):
        values = [float(value)] * len(elements)
    else:
        values = list(value)
        if len(values) != len(elements):
            raise InputError(f"{name} needs one value per element {elements}, got {len(values)}")
    out = []
    for v in values:
        v = float(v)
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"{name} must be positive and finite, got {v!r}")
        out.append(v)
    return out


def _poisson_at_snr(clean: np.ndarray, snr: float, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    mean = float(clean.mean())
    if mean <= 0:
        raise InputError("the noise-free signal is zero everywhere, so no dose can reach an SNR")
    dose = snr**2 / mean
    expected = dose * clean
    counts = rng.poisson(expected).astype(np.float64)
    return counts, dose, measured_snr(expected, counts)


def simulate(
    specimen: Specimen,
    scheme: TiltScheme,
    *,
    haadf_snr: float = 2000.0,
    chem_snr: float | Sequence[float] | Mapping[str, float] = 2.5,
    background: float = 0.15,
    gamma: float = 1.7,
    rng: int | np.random.Generator | None = 0,
) -> Acquisition:
    """Simulate HAADF and chemical tilt series at target SNRs (Schwartz 2024 Methods).

    Parameters
    ----------
    specimen : Specimen
        Ground truth; its ``volumes`` are the per-element maps :math:`x_i`.
    scheme : TiltScheme
        HAADF and chemical tilts.
    haadf_snr : float
        Target SNR of the HAADF series (Schwartz 2024 Fig. 4: ≈ 2200).
    chem_snr : float, sequence or mapping
        Target SNR per element (one value for all, one per element, or by symbol);
        Fig. 4 uses 1.9–2.9.
    background : float
        Chemical background as a fraction of each map's maximum (default 0.15).
    gamma : float
        HAADF Z-contrast exponent.
    rng : int or Generator
        Seed: the same seed gives bit-identical data.
    """
    haadf_snr = _per_element(haadf_snr, ("HAADF",), "haadf_snr")[0]
    chem_snrs = _per_element(chem_snr, specimen.elements, "chem_snr")
    if not (0.0 <= float(background) < 10.0):
        raise InputError(f"background must be a fraction ≥ 0 of the map maximum, got {background!r}")
    validation.gamma_exponent(gamma)
    seed = _seed(rng)
    haadf_op, chem_op = _projectors(specimen.n, scheme)

    dose: dict[str, float] = {}
    snr: dict[str, float] = {}
    bg: dict[str, float] = {}
    haadf = haadf_at_chem = None
    if haadf_op is not None:
        z = np.asarray(specimen.z)[:, None, None, None]
        signal = ((z * specimen.volumes) ** gamma).sum(axis=0)
        clean = haadf_op.forward(signal)
        haadf, dose["haadf"], snr["haadf"] = _poisson_at_snr(clean, haadf_snr, _stream(seed, 0))
        haadf_at_chem = (
            _stream(seed, _HAADF_AT_CHEM_STREAM).poisson(chem_op.forward(signal) * dose["haadf"]).astype(np.float64)
        )
    chem = np.empty((specimen.n_elements, chem_op.n_angles, specimen.n, specimen.n_x))
    for i, element in enumerate(specimen.elements):
        projection = chem_op.forward(specimen.volumes[i])
        level = float(background) * float(projection.max())
        chem[i], dose[element], snr[element] = _poisson_at_snr(projection + level, chem_snrs[i], _stream(seed, i + 1))
        bg[element] = level * dose[element]
    return Acquisition(
        haadf=haadf,
        chem=chem,
        haadf_angles=scheme.haadf_angles,
        chem_angles=chem_op.angles_deg.copy(),
        elements=specimen.elements,
        z=specimen.z,
        dose=dose,
        background=bg,
        snr=snr,
        haadf_at_chem=haadf_at_chem,
        info={
            "mode": "snr",
            "gamma": float(gamma),
            "haadf_snr_target": haadf_snr,
            "chem_snr_target": dict(zip(specimen.elements, chem_snrs, strict=True)),
            "background_fraction": float(background),
            "seed": seed,
            "specimen": specimen.name,
        },
    )


def simulate_yuan(
    specimen: Specimen,
    scheme: TiltScheme,
    *,
    lines: Mapping[str, XrayLine] | None = None,
    pixel_size_nm: float = 1.5,
    eds_electrons_per_pixel: float = 3.121e8,
    haadf_electrons_per_pixel: float = 1.0e5,
    solid_angle_sr: float = 0.7,
    rng: int | np.random.Generator | None = 0,
) -> Acquisition:
    """Simulate EDS and HAADF counts from physical parameters (Yuan 2021 eq. 4–9, 13).

    Defaults follow Yuan 2021 §3.1.1: 1.5 nm pixels, 3.121×10⁸ electrons per EDS pixel
    (0.5 s at 100 pA), 10⁵ per HAADF pixel; the X-ray lines of Table 2. The EDS solid
    angle is not given in the paper: 0.7 sr, a four-quadrant detector's nominal value,
    is assumed (it scales all EDS counts alike and cancels in eq. 12).

    Parameters
    ----------
    specimen : Specimen
        Must hold partial densities :math:`C_A\\rho` in g/cm³ (``units == "g/cm^3"``).
    scheme : TiltScheme
        Yuan: ``TiltScheme(31, chem_every=1, tilt_range=(-75, 75))``.
    lines : mapping of element → XrayLine, optional
        Physical factors; default Yuan 2021 Table 2.
    """
    if specimen.units != "g/cm^3":
        raise InputError(
            f"Yuan-mode simulation needs partial densities C·ρ in g/cm^3; specimen {specimen.name!r} "
            f"holds {specimen.units!r} (use core_shell_2d/core_shell_sphere or a file with densities)"
        )
    table = dict(yuan_table2()) if lines is None else dict(lines)
    missing = [e for e in specimen.elements if e not in table]
    if missing:
        raise InputError(f"no X-ray line parameters for element(s) {missing}; pass lines={{symbol: XrayLine}}")
    for name, value in (
        ("pixel_size_nm", pixel_size_nm),
        ("eds_electrons_per_pixel", eds_electrons_per_pixel),
        ("haadf_electrons_per_pixel", haadf_electrons_per_pixel),
        ("solid_angle_sr", solid_angle_sr),
    ):
        if not (math.isfinite(float(value)) and float(value) > 0):
            raise InputError(f"{name} must be positive, got {value!r}")
    seed = _seed(rng)
    haadf_op, chem_op = _projectors(specimen.n, scheme)
    pixel_cm = float(pixel_size_nm) * 1e-7
    collection = float(solid_angle_sr) / (4 * math.pi)

    dose: dict[str, float] = {}
    snr: dict[str, float] = {}
    chem = np.empty((specimen.n_elements, chem_op.n_angles, specimen.n, specimen.n_x))
    for i, element in enumerate(specimen.elements):
        line = table[element]
        # eq. 4/9: N_V f_A D_e Ω/4π Σ_j w_ij C_A,j ρ_j, f_A in barn·mol/g → cm²·mol/g
        per_mass_thickness = AVOGADRO * f_factor(line) * BARN_CM2 * eds_electrons_per_pixel * collection
        expected = per_mass_thickness * pixel_cm * chem_op.forward(specimen.volumes[i])
        chem[i] = _stream(seed, i + 1).poisson(expected).astype(np.float64)
        dose[element] = per_mass_thickness * pixel_cm
        snr[element] = measured_snr(expected, chem[i])
    haadf = None
    if haadf_op is not None:
        # eq. 13: D^H N_V Σ_A (σ_ela/M_A) ∫ C_A ρ dt
        # np.asarray only tells the type: a sum of arrays is an array already
        mass_thickness = np.asarray(
            sum(
                z_factor(table[e]) * BARN_CM2 * haadf_op.forward(specimen.volumes[i])
                for i, e in enumerate(specimen.elements)
            )
        )
        expected = haadf_electrons_per_pixel * AVOGADRO * pixel_cm * mass_thickness
        haadf = _stream(seed, 0).poisson(expected).astype(np.float64)
        dose["haadf"] = haadf_electrons_per_pixel * AVOGADRO * pixel_cm * BARN_CM2
        snr["haadf"] = measured_snr(expected, haadf)
    return Acquisition(
        haadf=haadf,
        chem=chem,
        haadf_angles=scheme.haadf_angles,
        chem_angles=chem_op.angles_deg.copy(),
        elements=specimen.elements,
        z=specimen.z,
        dose=dose,
        background={e: 0.0 for e in specimen.elements},
        snr=snr,
        info={
            "mode": "yuan",
            "pixel_size_nm": float(pixel_size_nm),
            "solid_angle_sr": float(solid_angle_sr),
            "eds_electrons_per_pixel": float(eds_electrons_per_pixel),
            "haadf_electrons_per_pixel": float(haadf_electrons_per_pixel),
            "seed": seed,
            "specimen": specimen.name,
        },
    )


def _projectors(n: int, scheme: TiltScheme) -> tuple[Projector | None, Projector]:
    haadf = Projector(n, scheme.haadf_angles) if scheme.n_haadf else None
    return haadf, Projector(n, scheme.chem_angles)


def _seed(rng: int | np.random.Generator | None) -> int:
    """An integer seed: kept when given, drawn from a Generator, fresh entropy for None."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**63))
    if rng is None:
        return secrets.randbits(63)  # what SeedSequence() draws its entropy from
    if isinstance(rng, bool) or not isinstance(rng, int | np.integer) or rng < 0:
        raise InputError(f"rng must be a non-negative integer seed, a numpy Generator or None, got {rng!r}")
    return int(rng)


# the stream of the HAADF recorded alongside the chemical maps, far from the element streams
_HAADF_AT_CHEM_STREAM = 10_000


def _stream(seed: int, index: int) -> np.random.Generator:
    """Independent stream ``index`` of ``seed`` (0 = HAADF, i + 1 = element i, 10000 = HAADF at chemical tilts)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def acquisition_key(specimen: str, n: int, scheme: TiltScheme, **settings: Any) -> str:
    """A stable key for (specimen recipe, size, scheme, noise settings, seed).

    Equal keys mean bit-identical data, so a worker can cache by it (as
    :func:`simulate_cached` does) and a sweep can record which data a trial saw.
    """
    payload = {
        "specimen": specimen,
        "n": int(n),
        "scheme": [scheme.n_haadf, scheme.n_chem, scheme.chem_every, list(scheme.tilt_range)],
        "settings": settings,
    }
    text = json.dumps(payload, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | list):
        return list(value)
    raise TypeError(f"cannot key {type(value).__name__}")


def simulate_cached(
    specimen: str,
    n: int,
    scheme: TiltScheme,
    *,
    specimen_options: Mapping[str, Any] | None = None,
    **settings: Any,
) -> tuple[Specimen, Acquisition]:
    """Build a named specimen and simulate it once per process, then reuse (LRU of 8).

    ``settings`` are :func:`simulate`'s keywords (``haadf_snr``, ``chem_snr``,
    ``background``, ``gamma``, ``rng`` as an int seed). The key is
    :func:`acquisition_key`; everything is deterministic, so a cache hit returns exactly
    what a rebuild would.
    """
    options = dict(specimen_options or {})
    if isinstance(settings.get("rng"), np.random.Generator) or settings.get("rng", 0) is None:
        raise InputError("simulate_cached needs an integer seed (rng=<int>) so the data can be keyed")
    key = acquisition_key(specimen, n, scheme, options=options, **settings)
    arguments = json.dumps({"options": options, "settings": settings}, sort_keys=True, default=_jsonable)
    return _simulate_keyed(key, specimen, int(n), scheme, arguments)


@functools.lru_cache(maxsize=8)
def _simulate_keyed(
    key: str, specimen: str, n: int, scheme: TiltScheme, arguments: str
) -> tuple[Specimen, Acquisition]:
    """The cache behind :func:`simulate_cached`: ``key`` decides, the rest rebuilds on a miss."""
    given = json.loads(arguments)
    built = make_specimen(specimen, n, **given["options"])
    return built, simulate(built, scheme, **given["settings"])
