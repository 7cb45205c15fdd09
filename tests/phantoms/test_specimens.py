"""Built-in specimens: elements, shapes, stoichiometry, geometry, seeding, registry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomosweep.errors import InputError
from tomosweep.phantoms import (
    SPECIMENS,
    conio_composite,
    core_shell_2d,
    core_shell_cube,
    core_shell_sphere,
    make_specimen,
    nanocubes,
)
from tomosweep.phantoms.specimens import DECLARATIONS, DENSITY_G_CM3, declared_elements, specimen_options

EXPECTED = {
    "core_shell_2d": ("Ag", "Au"),
    "core_shell_sphere": ("Ag", "Au"),
    "nanocubes": ("Co", "Cu", "O", "Au"),
    "conio_composite": ("Co", "Ni", "O"),
    "core_shell_cube": ("Co", "Mn", "O"),
}
FULL = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


def _axial_radius(n: int) -> np.ndarray:
    c = np.arange(n) - (n - 1) / 2
    return np.hypot(c[:, None], c[None, :])[..., None]


# ---------------------------------------------------------------- every specimen


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("n", [16, 17, 33])
def test_elements_shapes_and_values(name, n):
    spec = make_specimen(name, n)
    assert spec.name == name
    assert spec.elements == EXPECTED[name]
    n_x = 1 if name == "core_shell_2d" else n
    assert spec.volumes.shape == (len(spec.elements), n, n, n_x)
    assert spec.volumes.dtype == np.float64 and isinstance(spec.volumes, np.ndarray)
    assert np.all(spec.volumes >= 0)
    assert all(v.max() > 0 for v in spec.volumes), "every element must be present"
    assert spec.units == ("g/cm^3" if name in {"core_shell_2d", "core_shell_sphere"} else "atomic fraction")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_matter_stays_inside_the_cylinder_around_the_tilt_axis(name):
    # so no tilt about x carries any of the specimen out of the n-pixel detector
    n = 40
    matter = make_specimen(name, n).volumes.sum(axis=0) > 0
    assert np.all(np.broadcast_to(_axial_radius(n), matter.shape)[matter] <= n / 2)
    assert not matter[0].any() and not matter[-1].any()


# ---------------------------------------------------------------- Yuan 2021 Ag-Au core-shell


def test_core_shell_2d_weight_fractions_density_and_partial_densities():
    n = 64
    spec = core_shell_2d(n)
    ag, au = spec.weight_fractions
    inside = (ag + au) > 0
    core, shell = inside & (au > 0.5), inside & (au < 0.5)
    np.testing.assert_allclose(au[core], 0.8, rtol=1e-15)
    np.testing.assert_allclose(ag[core], 0.2, rtol=1e-15)
    np.testing.assert_allclose(au[shell], 0.2, rtol=1e-15)
    np.testing.assert_allclose(ag[shell], 0.8, rtol=1e-15)
    assert not spec.volumes[:, ~inside].any() and not spec.density[~inside].any()
    # mass-weighted inverse rule 1/ρ = Σ C_A/ρ_A
    rho_core = 1 / (0.8 / DENSITY_G_CM3["Au"] + 0.2 / DENSITY_G_CM3["Ag"])
    rho_shell = 1 / (0.2 / DENSITY_G_CM3["Au"] + 0.8 / DENSITY_G_CM3["Ag"])
    np.testing.assert_allclose(spec.density[core], rho_core)
    np.testing.assert_allclose(spec.density[shell], rho_shell)
    assert rho_core == pytest.approx(16.52, abs=0.01) and rho_shell == pytest.approx(11.54, abs=0.01)
    np.testing.assert_allclose(spec.volumes, spec.weight_fractions * spec.density[None])
    assert spec.density.shape == (n, n, 1) and spec.weight_fractions.shape == spec.volumes.shape


def test_core_shell_2d_geometry_matches_fig_1():
    n = 96
    spec = core_shell_2d(n)
    ag, au = spec.weight_fractions[..., 0]
    particle_width = ((ag + au)[n // 2] > 0).sum()
    core_width = (au[n // 2] > 0.5).sum()
    assert particle_width == pytest.approx(2 * n / 3, abs=2)  # two thirds of the field
    assert core_width == pytest.approx(particle_width / 2, abs=2)  # core half the particle radius


def test_core_shell_options_are_applied_and_checked():
    spec = core_shell_2d(32, core_radius=0.1, shell_radius=0.4, core_au=1.0, shell_au=0.0)
    ag, au = spec.weight_fractions
    assert set(np.unique(au)) == {0.0, 1.0} and ag.max() == 1.0
    assert spec.info["shell_radius"] == 0.4
    with pytest.raises(InputError, match="core_radius .* must be smaller than shell_radius"):
        core_shell_2d(32, core_radius=0.3, shell_radius=0.2)
    with pytest.raises(InputError, match="shell_radius must lie in"):
        core_shell_sphere(32, shell_radius=0.7)
    with pytest.raises(InputError, match="core_au must lie in"):
        core_shell_2d(32, core_au=1.5)


@pytest.mark.parametrize("n", [17, 33])
def test_sphere_central_slice_is_the_2d_particle(n):
    sphere, disc = core_shell_sphere(n), core_shell_2d(n)
    np.testing.assert_array_equal(sphere.volumes[..., n // 2], disc.volumes[..., 0])
    np.testing.assert_allclose(sphere.volumes, sphere.weight_fractions * sphere.density[None])


# ---------------------------------------------------------------- Schwartz 2024 Fig. 4c nanocubes


def test_nanocube_stoichiometry_is_exact():
    co, cu, o, au = nanocubes(48, rng=1).volumes
    np.testing.assert_array_equal(co[co > 0], 0.5)
    np.testing.assert_array_equal(o[co > 0], co[co > 0])  # CoO 1:1
    np.testing.assert_array_equal(cu[cu > 0], 0.5)
    np.testing.assert_array_equal(o[cu > 0], cu[cu > 0])  # CuO 1:1
    np.testing.assert_array_equal(au[au > 0], 1.0)
    assert not np.any((co > 0) & (cu > 0))
    assert not np.any((au > 0) & ((co > 0) | (o > 0)))  # gold replaces the oxide
    assert np.array_equal(o > 0, (co > 0) | (cu > 0))  # no oxygen without a cation


def test_nanocubes_do_not_touch_and_gold_sits_on_them():
    spec = nanocubes(48, rng=2)
    co, cu, _, au = spec.volumes
    cubes = spec.info["cubes"]
    assert [c["phase"] for c in cubes] == ["CoO"] * 3 + ["CuO"] * 3
    # each connected object (oxide plus its gold) holds one oxide only: cubes never touch
    objects, count = ndimage.label((co + cu + au) > 0, structure=FULL)
    for k in range(1, count + 1):
        here = objects == k
        assert not (co[here].any() and cu[here].any())
    # every gold particle touches (or nearly touches) an oxide surface
    gold, n_gold = ndimage.label(au > 0, structure=FULL)
    near_oxide = ndimage.binary_dilation((co + cu) > 0, structure=FULL, iterations=2)
    assert n_gold > 0
    assert set(np.unique(gold[near_oxide & (gold > 0)])) == set(range(1, n_gold + 1))


def test_nanocube_options():
    spec = nanocubes(40, rng=0, n_coo=2, n_cuo=0, gold_per_cube=0, random_orientation=False, cube_edge=0.2)
    co, cu, o, au = spec.volumes
    assert not cu.any() and not au.any() and co.any()
    assert len(spec.info["cubes"]) == 2 and spec.info["seed"] == 0
    # axis-aligned cubes of edge 8 voxels: 8×8×8 = 512 voxels each (± one layer of rounding)
    assert 2 * 7**3 <= (co > 0).sum() <= 2 * 9**3
    with pytest.raises(InputError, match="at least one cube"):
        nanocubes(32, n_coo=0, n_cuo=0)
    with pytest.raises(InputError, match="could not place CoO cube 1 of 2"):
        nanocubes(16, n_coo=2, cube_edge=0.45)
    with pytest.raises(InputError, match="cube_edge must be"):
        nanocubes(32, cube_edge=(0.2, 0.1))
    with pytest.raises(InputError, match="n_cuo must be an integer"):
        nanocubes(32, n_cuo=-1)


# ---------------------------------------------------------------- Schwartz 2024 Supp. Fig. 10 CoNiO


def test_conio_stoichiometry_and_embedding():
    n = 48
    spec = conio_composite(n, rng=3)
    co, ni, o = spec.volumes
    np.testing.assert_array_equal(co[co > 0], 0.5)
    np.testing.assert_array_equal(ni[ni > 0], 0.5)
    np.testing.assert_array_equal(o[co > 0], 0.5)
    np.testing.assert_array_equal(o[ni > 0], 0.5)
    assert not np.any((co > 0) & (ni > 0))  # particles replace the support
    assert np.array_equal(o > 0, (co > 0) | (ni > 0))
    # particles lie inside the tube wall, and none touch each other
    radius = np.broadcast_to(_axial_radius(n), co.shape)
    r_in, r_out = spec.info["inner_radius"] * n, spec.info["outer_radius"] * n
    assert np.all((radius[co > 0] >= r_in) & (radius[co > 0] <= r_out))
    _, count = ndimage.label(co > 0, structure=FULL)
    assert count == spec.info["n_particles"] == len(spec.info["particles"]) == 10
    # the tube is hollow: nothing on the axis
    assert not spec.volumes[:, n // 2, n // 2, :].any()


def test_conio_rod_and_option_checks():
    n = 32
    rod = conio_composite(n, rng=0, inner_radius=0.0, n_particles=3)
    assert rod.volumes[:, n // 2, n // 2, n // 2].any()  # a solid rod
    _, count = ndimage.label(rod.channel("Co") > 0, structure=FULL)
    assert count == 3
    with pytest.raises(InputError, match="inner_radius .* must be smaller than outer_radius"):
        conio_composite(n, inner_radius=0.3, outer_radius=0.2)
    with pytest.raises(InputError, match="does not fit in a tube wall"):
        conio_composite(n, inner_radius=0.28, outer_radius=0.3, particle_radius=0.05)


# ---------------------------------------------------------------- Schwartz 2024 Fig. 2 core-shell cube


def test_core_shell_cube_stoichiometry_and_geometry():
    n = 40
    co, mn, o = core_shell_cube(n).volumes
    np.testing.assert_allclose(co[co > 0], 3 / 7)
    np.testing.assert_allclose(mn[mn > 0], 3 / 7)
    np.testing.assert_allclose(o[co > 0], 4 / 7)  # Co3O4
    np.testing.assert_allclose(o[mn > 0], 4 / 7)  # Mn3O4
    assert not np.any((co > 0) & (mn > 0))
    core = co > 0
    # a cube core of edge 0.36·n, fully wrapped in the shell
    side = round(core.sum() ** (1 / 3))
    assert side**3 == core.sum() and side == pytest.approx(0.36 * n, abs=1)
    assert np.all(mn[ndimage.binary_dilation(core, structure=FULL) & ~core] > 0)
    assert not core[0].any() and not (mn > 0)[:, :, 0].any()


def test_core_shell_cube_per_face_thickness():
    n = 40
    co, mn, _ = core_shell_cube(n, shell_thickness=(0.02, 0.1, 0.05, 0.05, 0.05, 0.05)).volumes
    core_rows = np.flatnonzero(co.any(axis=(1, 2)))
    shell_rows = np.flatnonzero(mn.any(axis=(1, 2)))
    below, above = core_rows[0] - shell_rows[0], shell_rows[-1] - core_rows[-1]
    assert above > below  # the +y face grew a thicker grain
    with pytest.raises(InputError, match="one number or six"):
        core_shell_cube(n, shell_thickness=(0.1, 0.1))
    with pytest.raises(InputError, match="does not fit the field"):
        core_shell_cube(n, core_edge=0.6)


# ---------------------------------------------------------------- seeding


@pytest.mark.parametrize("make", [nanocubes, conio_composite])
def test_seeded_specimens_are_deterministic(make):
    a, b, c = make(32, rng=5), make(32, rng=5), make(32, rng=6)
    assert np.array_equal(a.volumes, b.volumes)
    assert not np.array_equal(a.volumes, c.volumes)
    from_generator = make(32, rng=np.random.default_rng(5))
    assert np.array_equal(a.volumes, from_generator.volumes)
    assert a.info["seed"] == 5 and from_generator.info["seed"] is None
    assert make(32, rng=None).volumes.shape == a.volumes.shape


def test_deterministic_specimens_repeat():
    for make in (core_shell_2d, core_shell_sphere, core_shell_cube):
        assert np.array_equal(make(24).volumes, make(24).volumes)


# ---------------------------------------------------------------- registry


def test_registry_builds_every_specimen_with_options():
    assert set(SPECIMENS) == set(EXPECTED)
    spec = make_specimen("nanocubes", 32, rng=4, n_cuo=1)
    assert np.array_equal(spec.volumes, nanocubes(32, rng=4, n_cuo=1).volumes)
    assert specimen_options("core_shell_cube") == {"core_edge": 0.36, "shell_thickness": 0.07}
    assert "rng" in specimen_options("conio_composite")


def test_registry_errors_name_what_is_known():
    with pytest.raises(InputError, match="unknown specimen 'teapot'; known specimens: core_shell_2d, .*nanocubes"):
        make_specimen("teapot", 32)
    with pytest.raises(InputError, match="no option\\(s\\) radius; its options are: core_radius, shell_radius"):
        make_specimen("core_shell_2d", 32, radius=0.2)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_built_in_declares_the_elements_it_builds(name):
    assert set(DECLARATIONS) == set(SPECIMENS)
    assert declared_elements(name, 16) == EXPECTED[name] == tuple(make_specimen(name, 16).elements)


@pytest.mark.parametrize(
    ("name", "n", "options", "match"),
    [
        ("core_shell_2d", 32, {"core_radius": 0.3, "shell_radius": 0.2}, "must be smaller than shell_radius"),
        ("core_shell_sphere", 32, {"core_au": 1.5}, "core_au must lie in"),
        ("nanocubes", 32, {"n_coo": 0, "n_cuo": 0}, "at least one cube"),
        ("nanocubes", 32, {"cube_edge": (0.2, 0.1)}, "cube_edge must be"),
        ("conio_composite", 32, {"inner_radius": 0.28, "outer_radius": 0.3}, "does not fit in a tube wall"),
        ("conio_composite", 16, {"inner_radius": 0.25}, "does not fit in a tube wall"),
        ("core_shell_cube", 40, {"core_edge": 0.6}, "does not fit the field"),
        ("core_shell_cube", 40, {"shell_thickness": (0.1, 0.1)}, "one number or six"),
        ("core_shell_cube", 15, {}, "n must be an integer ≥ 16"),
        ("core_shell_2d", 32, {"radius": 0.2}, "no option\\(s\\) radius"),
    ],
)
def test_declared_elements_check_the_options_as_the_build_does(name, n, options, match):
    with pytest.raises(InputError, match=match):
        make_specimen(name, n, **options)
    with pytest.raises(InputError, match=match):
        declared_elements(name, n, **options)


def test_a_specimen_without_a_declaration_has_no_declared_elements(monkeypatch):
    monkeypatch.setitem(SPECIMENS, "teapot", core_shell_2d)
    assert declared_elements("teapot", 32, core_au=0.5) is None
    with pytest.raises(InputError, match="unknown specimen 'kettle'"):
        declared_elements("kettle", 32)


@pytest.mark.parametrize("n", [4, 15, 16.5, "32", True, None])
def test_bad_sizes_are_refused(n):
    with pytest.raises(InputError, match="n must be an integer ≥ 16"):
        make_specimen("core_shell_cube", n)
