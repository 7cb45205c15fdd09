"""Simulated acquisition: tilt schemes, SNR calibration, background, determinism, Yuan mode."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomosweep.errors import InputError
from tomosweep.phantoms import Specimen, TiltScheme, measured_snr, simulate, simulate_yuan
from tomosweep.solvers import Projector, hebt, quantify, z_factor


def _disc_specimen(n=48, n_x=3, elements=("Co", "O")):
    yy, zz = np.mgrid[:n, :n] - n / 2 + 0.5
    disc = ((yy**2 + zz**2) < (0.3 * n) ** 2).astype(float)
    maps = np.stack([disc * (0.5 + 0.1 * k) for k in range(len(elements))])
    return Specimen.from_symbols("disc", elements, np.repeat(maps[..., None], n_x, axis=-1))


def test_chemical_tilts_every_kth_haadf_tilt():
    scheme = TiltScheme(45, chem_every=4)
    assert scheme.haadf_angles[0] == -70 and scheme.haadf_angles[-1] == 70
    assert scheme.chem_angles.size == 12  # ceil(45 / 4)
    assert np.all(np.isin(scheme.chem_angles, scheme.haadf_angles))


def test_free_chemical_tilts():
    scheme = TiltScheme(30, n_chem=7, tilt_range=(-60, 60))
    np.testing.assert_allclose(scheme.chem_angles, np.linspace(-60, 60, 7))
    assert TiltScheme(0, n_chem=5).haadf_angles.size == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_haadf": 10}, "exactly one of n_chem"),
        ({"n_haadf": 10, "n_chem": 3, "chem_every": 2}, "exactly one of n_chem"),
        ({"n_haadf": 10, "chem_every": 0}, "chem_every must be an integer ≥ 1"),
        ({"n_haadf": 0, "chem_every": 2}, "needs HAADF tilts"),
        ({"n_haadf": 10, "n_chem": 3, "tilt_range": (-95, 70)}, "tilt_range"),
        ({"n_haadf": -1, "n_chem": 3}, "n_haadf"),
    ],
)
def test_bad_schemes_are_clear_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        TiltScheme(**kwargs)


@pytest.mark.parametrize(("chem_snr", "haadf_snr"), [(2.0, 50.0), (2.5, 2000.0), (3.0, 2200.0), (10.0, 500.0)])
def test_simulated_snr_hits_the_target(chem_snr, haadf_snr):
    acq = simulate(_disc_specimen(), TiltScheme(45, chem_every=5), chem_snr=chem_snr, haadf_snr=haadf_snr, rng=1)
    assert acq.snr["haadf"] == pytest.approx(haadf_snr, rel=0.10)
    for element in ("Co", "O"):
        assert acq.snr[element] == pytest.approx(chem_snr, rel=0.10)


def test_per_element_snr_targets():
    acq = simulate(_disc_specimen(), TiltScheme(20, n_chem=9), chem_snr={"Co": 1.9, "O": 2.7}, rng=2)
    assert acq.snr["Co"] == pytest.approx(1.9, rel=0.10)
    assert acq.snr["O"] == pytest.approx(2.7, rel=0.10)


def test_signal_model_and_background():
    spec = _disc_specimen()
    scheme = TiltScheme(9, chem_every=1)
    acq = simulate(spec, scheme, chem_snr=200.0, haadf_snr=1e4, rng=3)  # near noise-free
    proj = Projector(spec.n, scheme.haadf_angles)
    z = np.asarray(spec.z)[:, None, None, None]
    haadf_model = proj.forward(((z * spec.volumes) ** 1.7).sum(0))
    np.testing.assert_allclose(acq.haadf / acq.dose["haadf"], haadf_model, rtol=0.02, atol=1e-3 * haadf_model.max())
    chem_model = proj.forward(spec.volumes[0])
    background = 0.15 * chem_model.max()
    np.testing.assert_allclose(acq.chem[0] / acq.dose["Co"], chem_model + background, rtol=0.05)
    vacuum = chem_model == 0
    assert acq.chem[0][vacuum].mean() == pytest.approx(acq.background["Co"], rel=0.02)


def test_same_seed_is_bit_identical_and_streams_are_independent():
    spec = _disc_specimen()
    scheme = TiltScheme(15, chem_every=3)
    a = simulate(spec, scheme, rng=7)
    b = simulate(spec, scheme, rng=7)
    assert np.array_equal(a.haadf, b.haadf) and np.array_equal(a.chem, b.chem)
    c = simulate(spec, scheme, rng=8)
    assert not np.array_equal(a.chem, c.chem)
    # adding an element leaves the first element's noise untouched
    wider = simulate(_disc_specimen(elements=("Co", "O", "Cu")), scheme, rng=7)
    assert np.array_equal(wider.chem[0], a.chem[0])


def test_measured_snr_definition():
    expected = np.full(10_000, 9.0)
    counts = np.random.default_rng(0).poisson(expected).astype(float)
    assert measured_snr(expected, counts) == pytest.approx(3.0, rel=0.03)  # √(mean counts)


def test_bad_noise_settings_are_clear_errors():
    spec = _disc_specimen()
    scheme = TiltScheme(10, chem_every=2)
    with pytest.raises(InputError, match="chem_snr has no value for element"):
        simulate(spec, scheme, chem_snr={"Co": 2.0})
    with pytest.raises(InputError, match="chem_snr must be positive"):
        simulate(spec, scheme, chem_snr=-1.0)
    with pytest.raises(InputError, match="rng must be"):
        simulate(spec, scheme, rng=-3)
    with pytest.raises(InputError, match="partial densities"):
        simulate_yuan(spec, scheme)


def _yuan_core_shell(n=64):
    yy, zz = np.mgrid[:n, :n] - n / 2 + 0.5
    r = np.hypot(yy, zz)
    core, shell = r < 0.17 * n, (r >= 0.17 * n) & (r < 0.34 * n)
    c_ag = np.where(core, 0.2, np.where(shell, 0.8, 0.0))
    c_au = np.where(core, 0.8, np.where(shell, 0.2, 0.0))
    rho = np.where(core | shell, 1.0 / (c_ag / 10.49 + c_au / 19.30 + 1e-30), 0.0)
    volumes = np.stack([c_ag * rho, c_au * rho])[..., None]
    return Specimen.from_symbols("core_shell", ("Ag", "Au"), volumes, units="g/cm^3"), core, shell


def test_yuan_mode_counts_follow_equation_4():
    spec, _, _ = _yuan_core_shell()
    scheme = TiltScheme(5, chem_every=1, tilt_range=(-75, 75))
    acq = simulate_yuan(spec, scheme, rng=0)
    proj = Projector(spec.n, scheme.chem_angles)
    from tomosweep.solvers import f_factor

    # I_A = N_V f_A D_e Ω/4π · Δ · Σ_j w_ij (Cρ)_j, Δ = 1.5 nm in cm
    expected = 6.02214076e23 * f_factor("Ag") * 1e-24 * 3.121e8 * (0.7 / (4 * np.pi)) * 1.5e-7
    expected = expected * proj.forward(spec.volumes[0])
    np.testing.assert_allclose(acq.chem[0].sum(), expected.sum(), rtol=0.01)
    assert acq.haadf.shape == (5, spec.n, 1)


def test_yuan_mode_hebt_quantification_recovers_compositions():
    """Yuan 2021 §3.1: 31 tilts ±75°, the paper's dose, HEBT α = 0.8 → ±10 wt%."""
    spec, core, shell = _yuan_core_shell()
    scheme = TiltScheme(31, chem_every=1, tilt_range=(-75, 75))
    acq = simulate_yuan(spec, scheme, rng=0)
    haadf_op, chem_op = acq.projectors(spec.n)
    result = hebt(haadf_op, acq.haadf, chem_op, acq.chem, alpha=0.8, n_iter=200)
    factors = [z_factor(e) for e in spec.elements]
    fractions = quantify(result.volume[..., 0], factors).weight_fractions
    interiors = {
        "core": ndimage.binary_erosion(core, iterations=3),
        "shell": ndimage.binary_erosion(shell, iterations=3),
    }
    truth = {"core": (0.2, 0.8), "shell": (0.8, 0.2)}
    for region, mask in interiors.items():
        for k, element in enumerate(spec.elements):
            measured = fractions[k][mask].mean()
            assert abs(measured - truth[region][k]) < 0.10, (region, element, measured)


def test_cached_simulation_is_keyed_by_content():
    from tomosweep.phantoms import acquisition_key, simulate_cached

    scheme = TiltScheme(9, chem_every=3)
    spec, first = simulate_cached("core_shell_cube", 24, scheme, chem_snr=2.0, rng=4)
    _, again = simulate_cached("core_shell_cube", 24, scheme, chem_snr=2.0, rng=4)
    assert again is first  # reused, not rebuilt
    fresh = simulate(spec, scheme, chem_snr=2.0, rng=4)
    assert np.array_equal(fresh.chem, first.chem)  # a rebuild gives exactly the cached data
    key = acquisition_key("core_shell_cube", 24, scheme, options={}, chem_snr=2.0, rng=4)
    assert key != acquisition_key("core_shell_cube", 24, scheme, options={}, chem_snr=2.0, rng=5)
    assert key != acquisition_key("core_shell_cube", 24, TiltScheme(9, chem_every=2), options={}, chem_snr=2.0, rng=4)
    with pytest.raises(InputError, match="integer seed"):
        simulate_cached("core_shell_cube", 24, scheme, rng=None)


def test_the_haadf_recorded_alongside_the_chemical_maps_matches_the_haadf_series():
    from tomosweep.phantoms import make_specimen

    specimen = make_specimen("nanocubes", 16)
    acq = simulate(specimen, TiltScheme(9, chem_every=2), rng=4)
    assert acq.haadf_at_chem.shape == acq.chem.shape[1:]
    same_tilts = acq.haadf[::2]
    # same dose and signal, independent noise: equal up to Poisson scatter
    assert acq.haadf_at_chem.sum() == pytest.approx(same_tilts.sum(), rel=1e-3)
    assert not np.array_equal(acq.haadf_at_chem, same_tilts)
    assert simulate(specimen, TiltScheme(9, n_chem=1), haadf_snr=1e3, rng=4).haadf_at_chem.shape[0] == 1
