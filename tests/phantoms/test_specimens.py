"""Built-in specimens: elements, shapes, stoichiometry, seeding, registry."""

from __future__ import annotations

import numpy as np
import pytest

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

EXPECTED = {
    "core_shell_2d": ("Ag", "Au"),
    "core_shell_sphere": ("Ag", "Au"),
    "nanocubes": ("Co", "Cu", "O", "Au"),
    "conio_composite": ("Co", "Ni", "O"),
    "core_shell_cube": ("Co", "Mn", "O"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("n", [24, 33])
def test_elements_shapes_and_values(name, n):
    spec = make_specimen(name, n)
    assert spec.elements == EXPECTED[name]
    n_x = 1 if name == "core_shell_2d" else n
    assert spec.volumes.shape == (len(spec.elements), n, n, n_x)
    assert np.all(spec.volumes >= 0)
    assert all(v.max() > 0 for v in spec.volumes), "every element must be present"


def test_core_shell_weight_fractions_and_density():
    spec = core_shell_2d(64)
    assert spec.units == "g/cm^3"
    inside = spec.weight_fractions.sum(axis=0) > 0
    ag, au = spec.weight_fractions
    assert set(np.round(au[inside], 6)) == {0.2, 0.8}
    np.testing.assert_allclose(ag[inside] + au[inside], 1.0)
    core = au > 0.5
    assert core.sum() > 0 and (inside & ~core).sum() > core.sum()  # the shell surrounds a smaller core
    np.testing.assert_allclose(spec.volumes, spec.weight_fractions * spec.density[None])
    sphere = core_shell_sphere(32)
    assert sphere.volumes.shape == (2, 32, 32, 32)


def test_oxide_stoichiometry():
    cubes = nanocubes(48, rng=1)
    co, cu, o, au = cubes.volumes
    assert np.all(o[co > 0] == co[co > 0])  # CoO 1:1
    assert np.all(o[cu > 0] == cu[cu > 0])  # CuO 1:1
    assert set(np.unique(au[au > 0])) == {1.0}
    assert not np.any((co > 0) & (cu > 0))  # cubes do not overlap
    core_shell = core_shell_cube(40)
    co, mn, o = core_shell.volumes
    np.testing.assert_allclose(o[co > 0] / co[co > 0], 4 / 3)  # Co3O4
    np.testing.assert_allclose(o[mn > 0] / mn[mn > 0], 4 / 3)  # Mn3O4
    composite = conio_composite(40)
    co, ni, o = composite.volumes
    np.testing.assert_allclose(o[(co + ni) > 0], (co + ni)[(co + ni) > 0])  # CoO and NiO 1:1


@pytest.mark.parametrize("make", [nanocubes, conio_composite])
def test_seeded_specimens_are_deterministic(make):
    a, b, c = make(32, rng=5), make(32, rng=5), make(32, rng=6)
    assert np.array_equal(a.volumes, b.volumes)
    assert not np.array_equal(a.volumes, c.volumes)


def test_registry_and_errors():
    assert set(SPECIMENS) == set(EXPECTED)
    with pytest.raises(InputError, match="unknown specimen 'teapot'|'teapot'"):
        make_specimen("teapot", 32)
    with pytest.raises(InputError):
        make_specimen("nanocubes", 4)
