r"""Built-in ground-truth specimens of the two papers tomosweep reproduces.

Every generator is a pure function of its size ``n`` and keyword options and returns
a :class:`~tomosweep.phantoms.specimen.Specimen` in the solver layout
``(n_elements, n_y, n_z, n_x)`` with the tilt axis along x: a 2D specimen is one
``n × n`` slice (``n_x = 1``), a 3D one is ``n × n × n``. Lengths are given as
fractions of ``n`` so the features scale with the grid; any ``n ≥ 16`` works (the
smallest particles are kept at least one voxel wide). All matter lies inside the
cylinder inscribed in the field around the tilt axis, so no tilt truncates it.

=====================  ==============================================  ===============
name                   reproduces                                      values
=====================  ==============================================  ===============
``core_shell_2d``      Yuan 2021 §3.1.1, Fig. 1 (Ag-Au slice)          C_A·ρ, g/cm³
``core_shell_sphere``  the same particle as a 3D sphere                C_A·ρ, g/cm³
``nanocubes``          Schwartz 2024 Fig. 4c (Au on CoO/CuO cubes)     atomic fraction
``conio_composite``    Schwartz 2024 Supp. Fig. 10 (CoO in NiO tube)   atomic fraction
``core_shell_cube``    Schwartz 2024 Fig. 2 (Co3O4 core, Mn3O4 shell)  atomic fraction
=====================  ==============================================  ===============

Schwartz 2024 (Methods, "Multi-modal simulations") gives each voxel the element's
stoichiometry, "x_i reflects the element's stoichiometry": CoO is Co 0.5 / O 0.5,
Co3O4 is Co 3/7 / O 4/7, a gold particle is Au 1.0 and vacuum is 0. Yuan 2021
reconstructs partial densities (eq. 9–10, :math:`X_A \propto C_A\rho`), so its
Ag-Au particle holds :math:`C_A\rho` and also carries the weight fractions and ρ.

Randomised generators take ``rng`` (a ``numpy.random.Generator``, an int seed, or
``None`` for fresh entropy); a given seed gives bit-identical volumes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from tomosweep.errors import InputError
from tomosweep.phantoms.specimen import Specimen
from tomosweep.solvers import validation

#: Bulk densities (g/cm³) of the pure metals of Yuan's Ag-Au particle (CRC Handbook).
DENSITY_G_CM3: dict[str, float] = {"Ag": 10.49, "Au": 19.30}

#: Atomic fractions per phase (Schwartz 2024 Methods: x_i is the element's stoichiometry).
STOICHIOMETRY: dict[str, dict[str, float]] = {
    "CoO": {"Co": 0.5, "O": 0.5},
    "CuO": {"Cu": 0.5, "O": 0.5},
    "NiO": {"Ni": 0.5, "O": 0.5},
    "Co3O4": {"Co": 3 / 7, "O": 4 / 7},
    "Mn3O4": {"Mn": 3 / 7, "O": 4 / 7},
    "Au": {"Au": 1.0},
}

_MIN_N = 16
_MAX_PLACEMENT_TRIES = 5000


# ---------------------------------------------------------------- shared helpers


def _check_fraction(name: str, value: Any, *, low: float, high: float, low_open: bool = True) -> float:
    return validation.number_in(value, name, low, high, low_open=low_open)


def _check_range(name: str, value: Any, *, high: float) -> tuple[float, float]:
    """A ``(smallest, largest)`` pair of fractions of n, or one number for a fixed size."""
    pair = np.atleast_1d(np.asarray(value, dtype=object))
    if pair.size == 1:
        pair = np.array([pair[0], pair[0]], dtype=object)
    if pair.size != 2:
        raise InputError(f"{name} must be one number or a (smallest, largest) pair, got {value!r}")
    lo = _check_fraction(f"{name}[0]", pair[0], low=0.0, high=high)
    hi = _check_fraction(f"{name}[1]", pair[1], low=0.0, high=high)
    if lo > hi:
        raise InputError(f"{name} must be (smallest, largest), got {value!r}")
    return lo, hi


def _seed_info(rng: Any) -> int | None:
    """The seed to record for provenance (``None`` when a Generator or entropy was used)."""
    return int(rng) if isinstance(rng, int | np.integer) and not isinstance(rng, bool) else None


def _centred_axis(n: int) -> np.ndarray:
    """Voxel-centre coordinates in voxel units, 0 on the tilt axis."""
    return np.arange(n, dtype=np.float64) - (n - 1) / 2


def _grid_3d(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open (broadcastable) y, z, x coordinate grids of an n³ volume."""
    c = _centred_axis(n)
    return c[:, None, None], c[None, :, None], c[None, None, :]


def _box(n: int, centre: np.ndarray, half: float) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """Index slices of the cube of half-size ``half`` around ``centre`` (clipped to the
    volume) and the open grids of voxel-centre offsets from ``centre`` inside it."""
    slices, offsets = [], []
    for axis, c in enumerate(centre):
        pos = c + (n - 1) / 2
        lo = max(0, int(np.floor(pos - half)))
        hi = min(n, int(np.ceil(pos + half)) + 1)
        slices.append(slice(lo, hi))
        shape = [1, 1, 1]
        shape[axis] = hi - lo
        offsets.append((np.arange(lo, hi, dtype=np.float64) - (n - 1) / 2 - c).reshape(shape))
    return tuple(slices), offsets


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3×3 rotation matrix (Shoemake's unit-quaternion method)."""
    u1, u2, u3 = rng.random(3)
    a, b = np.sqrt(1 - u1), np.sqrt(u1)
    x, y, z, w = (
        a * np.sin(2 * np.pi * u2),
        a * np.cos(2 * np.pi * u2),
        b * np.sin(2 * np.pi * u3),
        b * np.cos(2 * np.pi * u3),
    )
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _uniform_in_cylinder(rng: np.random.Generator, radius: float, half_length: float) -> np.ndarray:
    """A point (y, z, x) uniform in the cylinder of given radius around the x axis."""
    r = radius * np.sqrt(rng.random())
    phi = 2 * np.pi * rng.random()
    return np.array([r * np.cos(phi), r * np.sin(phi), rng.uniform(-half_length, half_length)])


def _phase_volumes(labels: np.ndarray, phases: tuple[str, ...], elements: tuple[str, ...]) -> np.ndarray:
    """Atomic-fraction volumes from a phase-label volume (0 = vacuum, k = ``phases[k-1]``)."""
    volumes = np.zeros((len(elements),) + labels.shape, dtype=np.float64)
    for k, phase in enumerate(phases, start=1):
        inside = labels == k
        for element, fraction in STOICHIOMETRY[phase].items():
            volumes[elements.index(element)][inside] = fraction
    return volumes


def _place_objects(
    n: int,
    labels: np.ndarray,
    rasterise: Callable[[np.random.Generator], tuple[np.ndarray, float, Callable[..., np.ndarray], dict]],
    count: int,
    rng: np.random.Generator,
    *,
    what: str,
    hint: str,
) -> list[dict]:
    """Random sequential placement of ``count`` objects into ``labels`` without contact.

    ``rasterise(rng)`` draws one candidate and returns its centre, a bounding radius
    (voxels), a function painting its phase labels on box offsets, and its record.
    A candidate is kept when it lies in the inscribed cylinder and a one-voxel
    dilation of it touches nothing already placed (so objects never touch).
    """
    field = n / 2 - 1.0
    records = []
    for index in range(count):
        for _ in range(_MAX_PLACEMENT_TRIES):
            centre, bound, paint, record = rasterise(rng)
            if np.hypot(centre[0], centre[1]) + bound > field or abs(centre[2]) + bound > n / 2:
                continue
            box, offsets = _box(n, centre, bound + 2)
            patch = paint(*offsets)
            grown = ndimage.binary_dilation(patch > 0)
            if not np.any(np.logical_and(grown, labels[box] > 0)):
                labels[box] = np.where(patch > 0, patch, labels[box])
                records.append(record)
                break
        else:
            raise InputError(
                f"could not place {what} {index + 1} of {count} without overlap at n={n} after "
                f"{_MAX_PLACEMENT_TRIES} tries; {hint}"
            )
    return records


# ---------------------------------------------------------------- Yuan 2021: Ag-Au core-shell


def _alloy_density(au_weight_fraction: float) -> float:
    """ρ of an Ag-Au alloy from the mass-weighted inverse rule 1/ρ = Σ C_A/ρ_A."""
    return 1.0 / (au_weight_fraction / DENSITY_G_CM3["Au"] + (1 - au_weight_fraction) / DENSITY_G_CM3["Ag"])


_AG_AU_ELEMENTS = ("Ag", "Au")


def _ag_au_options(
    n: int, *, core_radius: Any, shell_radius: Any, core_au: Any, shell_au: Any
) -> tuple[float, float, float, float]:
    """The Ag-Au particle's options, checked: ``(core_radius, shell_radius, core_au, shell_au)``."""
    core_radius = _check_fraction("core_radius", core_radius, low=0.0, high=0.5)
    shell_radius = _check_fraction("shell_radius", shell_radius, low=0.0, high=0.5)
    if core_radius >= shell_radius:
        raise InputError(f"core_radius ({core_radius}) must be smaller than shell_radius ({shell_radius})")
    core_au = _check_fraction("core_au", core_au, low=0.0, high=1.0, low_open=False)
    shell_au = _check_fraction("shell_au", shell_au, low=0.0, high=1.0, low_open=False)
    return core_radius, shell_radius, core_au, shell_au


def _ag_au_core_shell(
    name: str,
    radius: np.ndarray,
    n: int,
    *,
    core_radius: float,
    shell_radius: float,
    core_au: float,
    shell_au: float,
) -> Specimen:
    core_radius, shell_radius, core_au, shell_au = _ag_au_options(
        n, core_radius=core_radius, shell_radius=shell_radius, core_au=core_au, shell_au=shell_au
    )

    core = radius <= core_radius * n
    shell = (radius <= shell_radius * n) & ~core
    au = np.where(core, core_au, np.where(shell, shell_au, 0.0))
    ag = np.where(core, 1 - core_au, np.where(shell, 1 - shell_au, 0.0))
    density = np.where(core, _alloy_density(core_au), np.where(shell, _alloy_density(shell_au), 0.0))
    weight_fractions = np.stack([ag, au])
    return Specimen.from_symbols(
        name,
        _AG_AU_ELEMENTS,
        weight_fractions * density,
        units="g/cm^3",
        weight_fractions=weight_fractions,
        density=density,
        info={
            "n": n,
            "core_radius": core_radius,
            "shell_radius": shell_radius,
            "core_au_weight_fraction": core_au,
            "shell_au_weight_fraction": shell_au,
            "density_g_cm3": dict(DENSITY_G_CM3),
            "source": "Yuan 2021 §3.1.1, Fig. 1",
        },
    )


def core_shell_2d(
    n: int,
    *,
    core_radius: float = 1 / 6,
    shell_radius: float = 1 / 3,
    core_au: float = 0.8,
    shell_au: float = 0.2,
) -> Specimen:
    r"""Ag-Au core-shell particle slice of Yuan 2021 §3.1.1, Fig. 1.

    A disc-shaped alloy particle: the core is 80 wt% Au / 20 wt% Ag, the shell
    20 wt% Au / 80 wt% Ag, vacuum around. Volumes hold the partial densities
    :math:`C_A\rho` (g/cm³) that Yuan's reconstruction estimates (eq. 9–10); the
    alloy density follows the mass-weighted inverse rule
    :math:`1/\rho = \sum_A C_A/\rho_A` with :math:`\rho_{Ag} = 10.49` and
    :math:`\rho_{Au} = 19.30` g/cm³ (core ≈ 16.5, shell ≈ 11.5 g/cm³).

    Parameters
    ----------
    n : int
        Slice size in pixels (≥ 16).
    core_radius, shell_radius : float, optional
        Radii as fractions of ``n``; the defaults make the particle two thirds of the
        field and the core half of the particle radius, as in Fig. 1.
    core_au, shell_au : float, optional
        Au weight fraction of core and shell (Ag is the rest).

    Returns
    -------
    Specimen
        Elements ``("Ag", "Au")``, volumes ``(2, n, n, 1)``, ``units="g/cm^3"``, with
        ``weight_fractions`` (C_A) and ``density`` (ρ) filled.
    """
    n = validation.positive_int(n, "n", minimum=_MIN_N)
    y, z, _ = _grid_3d(n)
    radius = np.sqrt(y[..., :1] ** 2 + z[..., :1] ** 2)
    return _ag_au_core_shell(
        "core_shell_2d",
        radius,
        n,
        core_radius=core_radius,
        shell_radius=shell_radius,
        core_au=core_au,
        shell_au=shell_au,
    )


def core_shell_sphere(
    n: int,
    *,
    core_radius: float = 1 / 6,
    shell_radius: float = 1 / 3,
    core_au: float = 0.8,
    shell_au: float = 0.2,
) -> Specimen:
    r"""The Ag-Au core-shell particle of Yuan 2021 Fig. 1 as a 3D sphere.

    Same compositions, densities and parameters as :func:`core_shell_2d`
    (:math:`C_A\rho` in g/cm³, :math:`1/\rho = \sum_A C_A/\rho_A` with
    :math:`\rho_{Ag} = 10.49`, :math:`\rho_{Au} = 19.30` g/cm³), on an n³ grid.

    Returns
    -------
    Specimen
        Elements ``("Ag", "Au")``, volumes ``(2, n, n, n)``, ``units="g/cm^3"``.
    """
    n = validation.positive_int(n, "n", minimum=_MIN_N)
    y, z, x = _grid_3d(n)
    radius = np.sqrt(y**2 + z**2 + x**2)
    return _ag_au_core_shell(
        "core_shell_sphere",
        radius,
        n,
        core_radius=core_radius,
        shell_radius=shell_radius,
        core_au=core_au,
        shell_au=shell_au,
    )


# ---------------------------------------------------------------- Schwartz 2024 Fig. 4c: nanocubes

_NANOCUBE_PHASES = ("CoO", "CuO", "Au")
_NANOCUBE_ELEMENTS = ("Co", "Cu", "O", "Au")


def _nanocube_options(
    *, n_coo: Any, n_cuo: Any, cube_edge: Any, gold_radius: Any, gold_per_cube: Any
) -> tuple[int, int, tuple[float, float], tuple[float, float], int]:
    """The nanocubes' options, checked: ``(n_coo, n_cuo, cube_edge, gold_radius, gold_per_cube)``."""
    n_coo = validation.positive_int(n_coo, "n_coo", minimum=0)
    n_cuo = validation.positive_int(n_cuo, "n_cuo", minimum=0)
    if n_coo + n_cuo == 0:
        raise InputError("nanocubes needs at least one cube: n_coo + n_cuo must be ≥ 1")
    edge_range = _check_range("cube_edge", cube_edge, high=0.5)
    gold_range = _check_range("gold_radius", gold_radius, high=0.1)
    gold_per_cube = validation.positive_int(gold_per_cube, "gold_per_cube", minimum=0)
    return n_coo, n_cuo, edge_range, gold_range, gold_per_cube


def _decorated_cube(
    n: int,
    material: int,
    edge_range: tuple[float, float],
    gold_range: tuple[float, float],
    n_gold: int,
    random_orientation: bool,
) -> Callable[[np.random.Generator], tuple[np.ndarray, float, Callable[..., np.ndarray], dict]]:
    """A candidate drawer for one oxide cube (phase label ``material``) with Au on its faces."""
    gold_max = max(gold_range[1] * n, 1.0)

    def draw(rng: np.random.Generator):
        edge = max(rng.uniform(*edge_range) * n, 2.0)
        rotation = _random_rotation(rng) if random_orientation else np.eye(3)
        # Au centres sit half a radius outside a face, so each particle rests on it.
        faces = rng.integers(0, 6, size=n_gold)
        gold_radii = np.maximum(rng.uniform(*gold_range, size=n_gold) * n, 1.0)
        local = rng.uniform(-0.4 * edge, 0.4 * edge, size=(n_gold, 3))
        normal_axis, sign = faces // 2, np.where(faces % 2 == 0, -1.0, 1.0)
        local[np.arange(n_gold), normal_axis] = sign * (edge / 2 + gold_radii / 2)
        bound = edge * np.sqrt(3) / 2 + 1.5 * gold_max
        centre = _uniform_in_cylinder(rng, n / 2 - 1 - bound, n / 2 - bound)
        gold_offsets = local @ rotation.T

        def paint(dy: np.ndarray, dz: np.ndarray, dx: np.ndarray) -> np.ndarray:
            inside = np.ones(np.broadcast_shapes(dy.shape, dz.shape, dx.shape), dtype=bool)
            for k in range(3):
                # rotation columns are the cube's own axes in (y, z, x)
                u = rotation[0, k] * dy + rotation[1, k] * dz + rotation[2, k] * dx
                inside &= np.abs(u) <= edge / 2
            patch = np.where(inside, material, 0).astype(np.int8)
            for offset, radius in zip(gold_offsets, gold_radii, strict=True):
                ball = (dy - offset[0]) ** 2 + (dz - offset[1]) ** 2 + (dx - offset[2]) ** 2 <= radius**2
                patch[ball] = _NANOCUBE_PHASES.index("Au") + 1
            return patch

        record = {
            "phase": _NANOCUBE_PHASES[material - 1],
            "centre_voxels": centre.tolist(),
            "edge_voxels": float(edge),
            "n_gold": int(n_gold),
        }
        return centre, bound, paint, record

    return draw


def nanocubes(
    n: int,
    *,
    rng: np.random.Generator | int | None = 0,
    n_coo: int = 3,
    n_cuo: int = 3,
    cube_edge: tuple[float, float] = (0.12, 0.18),
    gold_per_cube: int = 5,
    gold_radius: tuple[float, float] = (0.012, 0.022),
    random_orientation: bool = True,
) -> Specimen:
    """Gold-decorated CoO/CuO nanocubes of Schwartz 2024 Fig. 4c (and Supp. Figs. 2, 9, 11, 22).

    ``n_coo`` CoO and ``n_cuo`` CuO cubes of random edge and orientation are placed at
    random, never touching, inside the cylinder inscribed around the tilt axis; each
    carries ``gold_per_cube`` small Au spheres resting on random faces. Values are
    atomic fractions (Schwartz 2024 Methods): Co 0.5 / O 0.5 in CoO, Cu 0.5 / O 0.5
    in CuO, Au 1.0 in gold (which replaces the oxide where it overlaps), 0 in vacuum.

    Parameters
    ----------
    n : int
        Volume size (n³ voxels, ≥ 16). The paper used 256.
    rng : numpy.random.Generator, int or None, optional
        Randomness of sizes, orientations and positions; a given seed gives
        bit-identical volumes.
    n_coo, n_cuo : int, optional
        Number of CoO and CuO cubes.
    cube_edge : (float, float), optional
        Smallest and largest cube edge as fractions of ``n`` (at least 2 voxels).
    gold_per_cube : int, optional
        Au particles on each cube.
    gold_radius : (float, float), optional
        Smallest and largest Au radius as fractions of ``n`` (at least 1 voxel).
    random_orientation : bool, optional
        Rotate each cube at random; ``False`` aligns all faces with the axes.

    Returns
    -------
    Specimen
        Elements ``("Co", "Cu", "O", "Au")``, volumes ``(4, n, n, n)``,
        ``units="atomic fraction"``; ``info["cubes"]`` records each cube.
    """
    n = validation.positive_int(n, "n", minimum=_MIN_N)
    n_coo, n_cuo, edge_range, gold_range, gold_per_cube = _nanocube_options(
        n_coo=n_coo, n_cuo=n_cuo, cube_edge=cube_edge, gold_radius=gold_radius, gold_per_cube=gold_per_cube
    )
    seed = _seed_info(rng)
    generator = np.random.default_rng(rng)

    labels = np.zeros((n, n, n), dtype=np.int8)
    cubes: list[dict] = []
    for material, count in ((1, n_coo), (2, n_cuo)):
        draw = _decorated_cube(n, material, edge_range, gold_range, gold_per_cube, bool(random_orientation))
        cubes += _place_objects(
            n,
            labels,
            draw,
            count,
            generator,
            what=f"{_NANOCUBE_PHASES[material - 1]} cube",
            hint="use fewer or smaller cubes (n_coo, n_cuo, cube_edge) or a larger n",
        )
    elements = _NANOCUBE_ELEMENTS
    return Specimen.from_symbols(
        "nanocubes",
        elements,
        _phase_volumes(labels, _NANOCUBE_PHASES, elements),
        units="atomic fraction",
        info={
            "n": n,
            "seed": seed,
            "n_coo": n_coo,
            "n_cuo": n_cuo,
            "cube_edge": list(edge_range),
            "gold_per_cube": gold_per_cube,
            "gold_radius": list(gold_range),
            "random_orientation": bool(random_orientation),
            "cubes": cubes,
            "source": "Schwartz 2024 Fig. 4c",
        },
    )


# ---------------------------------------------------------------- Schwartz 2024 Supp. Fig. 10: CoNiO

_CONIO_PHASES = ("NiO", "CoO")
_CONIO_ELEMENTS = ("Co", "Ni", "O")


def _conio_options(
    n: int, *, outer_radius: Any, inner_radius: Any, length: Any, particle_radius: Any, n_particles: Any
) -> tuple[float, float, float, tuple[float, float], int]:
    """The composite's options at size ``n``, checked: ``(outer, inner, length, particle_radius, n_particles)``."""
    outer = _check_fraction("outer_radius", outer_radius, low=0.0, high=0.5 - 1 / n)
    inner = _check_fraction("inner_radius", inner_radius, low=0.0, high=0.5, low_open=False)
    if inner >= outer:
        raise InputError(f"inner_radius ({inner}) must be smaller than outer_radius ({outer})")
    tube_length = _check_fraction("length", length, low=0.0, high=1.0)
    radius_range = _check_range("particle_radius", particle_radius, high=0.25)
    n_particles = validation.positive_int(n_particles, "n_particles", minimum=0)
    wall = (outer - inner) * n
    if max(radius_range[0] * n, 1.0) > wall / 2:
        raise InputError(
            f"particle_radius {radius_range} does not fit in a tube wall {wall:.1f} voxels thick at n={n}; "
            "use smaller particles or a thicker wall (outer_radius − inner_radius)"
        )
    return outer, inner, tube_length, radius_range, n_particles


def conio_composite(
    n: int,
    *,
    rng: np.random.Generator | int | None = 0,
    n_particles: int = 10,
    particle_radius: tuple[float, float] = (0.03, 0.055),
    outer_radius: float = 0.32,
    inner_radius: float = 0.16,
    length: float = 0.9,
) -> Specimen:
    """CoO nanoparticles embedded in a NiO nanotube, Schwartz 2024 Supp. Fig. 10 (and 3, 23).

    The NiO support is a tube along the tilt axis (x) — ``inner_radius=0`` makes it a
    solid rod — with ``n_particles`` CoO spheres of random radius placed at random,
    never touching each other, wholly inside the tube wall; a particle replaces the
    support where it sits. Values are atomic fractions (Schwartz 2024 Methods):
    Ni 0.5 / O 0.5 in NiO, Co 0.5 / O 0.5 in CoO, 0 in vacuum.

    Parameters
    ----------
    n : int
        Volume size (n³ voxels, ≥ 16).
    rng : numpy.random.Generator, int or None, optional
        Randomness of particle sizes and positions; a given seed gives bit-identical
        volumes.
    n_particles : int, optional
        Number of embedded CoO particles.
    particle_radius : (float, float), optional
        Smallest and largest particle radius as fractions of ``n`` (at least 1 voxel,
        at most half the wall thickness).
    outer_radius, inner_radius : float, optional
        Tube radii as fractions of ``n``.
    length : float, optional
        Tube length along x as a fraction of ``n``.

    Returns
    -------
    Specimen
        Elements ``("Co", "Ni", "O")``, volumes ``(3, n, n, n)``,
        ``units="atomic fraction"``; ``info["particles"]`` records each particle.
    """
    n = validation.positive_int(n, "n", minimum=_MIN_N)
    outer, inner, tube_length, radius_range, n_particles = _conio_options(
        n,
        outer_radius=outer_radius,
        inner_radius=inner_radius,
        length=length,
        particle_radius=particle_radius,
        n_particles=n_particles,
    )
    wall = (outer - inner) * n
    seed = _seed_info(rng)
    generator = np.random.default_rng(rng)

    y, z, x = _grid_3d(n)
    axial = np.hypot(y, z)
    support = (axial <= outer * n) & (axial >= inner * n) & (np.abs(x) <= tube_length * n / 2)
    labels = np.where(support, np.int8(1), np.int8(0))

    # Particles are placed on a blank label volume (so only particle–particle
    # contact is refused), then replace the support where they sit.
    particles_labels = np.zeros_like(labels)
    coo = _CONIO_PHASES.index("CoO") + 1

    def draw(rng: np.random.Generator):
        radius = min(max(rng.uniform(*radius_range) * n, 1.0), wall / 2)
        r_axial = rng.uniform(inner * n + radius, outer * n - radius)
        phi = 2 * np.pi * rng.random()
        half = tube_length * n / 2 - radius
        centre = np.array([r_axial * np.cos(phi), r_axial * np.sin(phi), rng.uniform(-half, half)])

        def paint(dy: np.ndarray, dz: np.ndarray, dx: np.ndarray) -> np.ndarray:
            return np.where(dy**2 + dz**2 + dx**2 <= radius**2, coo, 0).astype(np.int8)

        return centre, radius, paint, {"centre_voxels": centre.tolist(), "radius_voxels": float(radius)}

    particles = _place_objects(
        n,
        particles_labels,
        draw,
        n_particles,
        generator,
        what="CoO particle",
        hint="use fewer or smaller particles (n_particles, particle_radius) or a longer tube",
    )
    labels = np.where(particles_labels > 0, particles_labels, labels)
    elements = _CONIO_ELEMENTS
    return Specimen.from_symbols(
        "conio_composite",
        elements,
        _phase_volumes(labels, _CONIO_PHASES, elements),
        units="atomic fraction",
        info={
            "n": n,
            "seed": seed,
            "n_particles": n_particles,
            "particle_radius": list(radius_range),
            "outer_radius": outer,
            "inner_radius": inner,
            "length": tube_length,
            "particles": particles,
            "source": "Schwartz 2024 Supp. Fig. 10",
        },
    )


# ---------------------------------------------------------------- Schwartz 2024 Fig. 2: Co3O4/Mn3O4

_CORE_SHELL_CUBE_PHASES = ("Co3O4", "Mn3O4")
_CORE_SHELL_CUBE_ELEMENTS = ("Co", "Mn", "O")


def _face_thicknesses(value: Any) -> tuple[float, ...]:
    values = np.atleast_1d(np.asarray(value, dtype=object))
    if values.size == 1:
        values = np.repeat(values, 6)
    if values.size != 6:
        raise InputError(f"shell_thickness must be one number or six (−y, +y, −z, +z, −x, +x), got {value!r}")
    return tuple(
        _check_fraction(f"shell_thickness[{k}]", v, low=0.0, high=0.5, low_open=False) for k, v in enumerate(values)
    )


def _core_shell_cube_options(n: int, *, core_edge: Any, shell_thickness: Any) -> tuple[float, tuple[float, ...]]:
    """The cube's options at size ``n``, checked: ``(core_edge, shell_thickness per face)``."""
    edge = _check_fraction("core_edge", core_edge, low=1 / n, high=1.0)
    thickness = _face_thicknesses(shell_thickness)
    lower = [-edge / 2 - t for t in thickness[0::2]]
    upper = [edge / 2 + t for t in thickness[1::2]]
    reach_yz = np.hypot(max(-lower[0], upper[0]), max(-lower[1], upper[1]))
    if reach_yz > 0.5 - 1 / n or max(-lower[2], upper[2]) > 0.5:
        raise InputError(
            f"core_edge {edge} with shell_thickness {thickness} does not fit the field at n={n}: "
            "the particle must lie inside the cylinder inscribed around the tilt axis; use a smaller core or shell"
        )
    return edge, thickness


def core_shell_cube(
    n: int,
    *,
    core_edge: float = 0.36,
    shell_thickness: float | tuple[float, ...] = 0.07,
) -> Specimen:
    """Co3O4 nanocube core in a Mn3O4 shell, Schwartz 2024 Fig. 2 (and Supp. Fig. 19).

    A Co3O4 cube, faces aligned with the axes and centred on the tilt axis, covered
    by Mn3O4 grains grown on each face. The shell is the box around the core; its
    thickness may differ per face, as the paper notes the interface "can vary per
    plane". Values are atomic fractions (Schwartz 2024 Methods): Co 3/7 / O 4/7 in
    the core, Mn 3/7 / O 4/7 in the shell, 0 in vacuum.

    Parameters
    ----------
    n : int
        Volume size (n³ voxels, ≥ 16).
    core_edge : float, optional
        Core edge as a fraction of ``n``.
    shell_thickness : float or six floats, optional
        Shell thickness as a fraction of ``n``: one value for all faces or one per
        face in the order (−y, +y, −z, +z, −x, +x).

    Returns
    -------
    Specimen
        Elements ``("Co", "Mn", "O")``, volumes ``(3, n, n, n)``,
        ``units="atomic fraction"``.
    """
    n = validation.positive_int(n, "n", minimum=_MIN_N)
    edge, thickness = _core_shell_cube_options(n, core_edge=core_edge, shell_thickness=shell_thickness)
    lower = [-edge / 2 - t for t in thickness[0::2]]
    upper = [edge / 2 + t for t in thickness[1::2]]
    coords = _grid_3d(n)
    core = np.ones((n, n, n), dtype=bool)
    particle = np.ones((n, n, n), dtype=bool)
    for axis, c in enumerate(coords):
        core &= np.abs(c) <= edge * n / 2
        particle &= (c >= lower[axis] * n) & (c <= upper[axis] * n)
    labels = np.where(core, np.int8(1), np.where(particle, np.int8(2), np.int8(0)))
    elements = _CORE_SHELL_CUBE_ELEMENTS
    return Specimen.from_symbols(
        "core_shell_cube",
        elements,
        _phase_volumes(labels, _CORE_SHELL_CUBE_PHASES, elements),
        units="atomic fraction",
        info={
            "n": n,
            "core_edge": edge,
            "shell_thickness": list(thickness),
            "source": "Schwartz 2024 Fig. 2",
        },
    )


# ---------------------------------------------------------------- registry

SPECIMENS: dict[str, Callable[..., Specimen]] = {
    "core_shell_2d": core_shell_2d,
    "core_shell_sphere": core_shell_sphere,
    "nanocubes": nanocubes,
    "conio_composite": conio_composite,
    "core_shell_cube": core_shell_cube,
}


@dataclass(frozen=True)
class Declaration:
    """What a study needs to know of a built-in specimen before building one.

    ``elements`` are the element symbols in the order of the specimen's volumes;
    ``check`` checks options as the generator does, without building anything: it is
    called with the keywords it names, of ``n`` and the options (defaults filled in),
    and raises :class:`~tomosweep.errors.InputError` as the generator would.
    """

    elements: tuple[str, ...]
    check: Callable[..., object]


#: Declarations of the built-in specimens. A specimen registered in :data:`SPECIMENS` without one
#: (a plugin's) is built to learn its elements.
DECLARATIONS: dict[str, Declaration] = {
    "core_shell_2d": Declaration(_AG_AU_ELEMENTS, _ag_au_options),
    "core_shell_sphere": Declaration(_AG_AU_ELEMENTS, _ag_au_options),
    "nanocubes": Declaration(_NANOCUBE_ELEMENTS, _nanocube_options),
    "conio_composite": Declaration(_CONIO_ELEMENTS, _conio_options),
    "core_shell_cube": Declaration(_CORE_SHELL_CUBE_ELEMENTS, _core_shell_cube_options),
}


def specimen_options(name: str) -> dict[str, Any]:
    """The keyword options of a built-in specimen and their defaults."""
    generator = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(generator).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _lookup(name: Any) -> Callable[..., Specimen]:
    try:
        return SPECIMENS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown specimen {name!r}; known specimens: {', '.join(SPECIMENS)}") from None


def make_specimen(name: str, n: int, **options: Any) -> Specimen:
    """Build a built-in specimen by name (what study files call).

    Parameters
    ----------
    name : str
        One of :data:`SPECIMENS`.
    n : int
        Grid size (≥ 16).
    **options
        The generator's keyword options (see :func:`specimen_options`).

    Raises
    ------
    InputError
        For an unknown name or option, naming the known ones.
    """
    generator = _lookup(name)
    _check_option_names(name, options)
    return generator(n, **options)


def _check_option_names(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The specimen's options with the defaults filled in; an error naming the known ones for another."""
    allowed = specimen_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(
            f"specimen {name!r} has no option(s) {', '.join(unknown)}; its options are: {', '.join(allowed)}"
        )
    return {**allowed, **options}


def declared_elements(name: str, n: int, **options: Any) -> tuple[str, ...] | None:
    """The elements of a specimen, from its declaration, without building it.

    The options are checked at size ``n`` as :func:`make_specimen` checks them (names
    and values), except what only a build can find (no room to place a random
    specimen's particles at this seed).

    Parameters
    ----------
    name : str
        One of :data:`SPECIMENS`.
    n : int
        Grid size (≥ 16).
    **options
        The generator's keyword options.

    Returns
    -------
    tuple of str or None
        The element symbols in the order of the volumes; None for a specimen without a
        :class:`Declaration` (a plugin's), which must be built to know them.

    Raises
    ------
    InputError
        For an unknown name or option, or an option value the build would refuse.
    """
    _lookup(name)
    given = _check_option_names(name, options)
    declared = DECLARATIONS.get(name)
    if declared is None:
        return None
    given["n"] = validation.positive_int(n, "n", minimum=_MIN_N)
    wanted = inspect.signature(declared.check).parameters
    declared.check(**{key: value for key, value in given.items() if key in wanted})
    return declared.elements
