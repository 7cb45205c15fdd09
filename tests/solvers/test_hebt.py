"""HEBT (Yuan 2021 §2.2, eq. 15–18) on the core-shell Ag-Au slice of Yuan 2021 §3.1.1.

The phantom is a disc: core 80 wt% Au / 20 wt% Ag, shell 20 wt% Au / 80 wt% Ag, each
at its alloy density. Data are simulated from the paper's own forward models with the
Table 2 factors: EDS ``I_A = n f_A W(C_A ρ)`` (eq. 10) and HAADF
``I^H = D N_v Σ_A z_A W(C_A ρ)`` (eq. 14), 31 chemical tilts over ±75° as in the
paper and 61 HAADF tilts (every chemical tilt is also a HAADF tilt).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter

from tomosweep.errors import InputError
from tomosweep.solvers import Projector, backend
from tomosweep.solvers.hebt import hebt, response_ratios
from tomosweep.solvers.physics import f_factor, z_factor
from tomosweep.solvers.quantify import quantify
from tomosweep.solvers.sirt import sirt

N = 64
R_PARTICLE, R_CORE = 28.0, 14.0
ELEMENTS = ("Ag", "Au")
CORE_WT = np.array([0.2, 0.8])  # Ag, Au
SHELL_WT = np.array([0.8, 0.2])
DENSITY = {"Ag": 10.49, "Au": 19.32}  # g/cm³
EDS_SCALE = 1.0  # n of eq. 6, giving ≈ 500 counts at the thickest ray
HAADF_SCALE = 1e-3  # D_e^H N_v of eq. 14
F = np.array([f_factor(e) for e in ELEMENTS])
Z = np.array([z_factor(e) for e in ELEMENTS])
TRUE_RATIOS = HAADF_SCALE * Z / (EDS_SCALE * F)  # eq. 16
ERODE = 3  # pixels kept away from the core/shell and shell/vacuum boundaries


def _alloy_density(wt: np.ndarray) -> float:
    return 1.0 / sum(c / DENSITY[e] for c, e in zip(wt, ELEMENTS, strict=True))


@pytest.fixture(scope="module")
def phantom():
    centre = (N - 1) / 2
    yy, zz = np.mgrid[:N, :N]
    radius = np.hypot(yy - centre, zz - centre)
    core = radius <= R_CORE
    shell = (radius <= R_PARTICLE) & ~core
    wt = np.zeros((2, N, N, 1))
    wt[:, core] = CORE_WT[:, None, None]
    wt[:, shell] = SHELL_WT[:, None, None]
    rho = np.zeros((N, N, 1))
    rho[core] = _alloy_density(CORE_WT)
    rho[shell] = _alloy_density(SHELL_WT)
    return {
        "wt": wt,
        "rho": rho,
        "core": binary_erosion(core, iterations=ERODE)[..., None],
        "shell": binary_erosion(shell, iterations=ERODE)[..., None],
        "particle": (core | shell)[..., None],
    }


@pytest.fixture(scope="module")
def geometry():
    chem = Projector(N, np.linspace(-75, 75, 31), cache_dir=False)
    haadf = Projector(N, np.linspace(-75, 75, 61), cache_dir=False)
    return haadf, chem


def _simulate(projector: Projector, wt: np.ndarray, rho: np.ndarray):
    partial = [projector.forward(wt[i] * rho).astype(np.float64) for i in range(len(ELEMENTS))]
    eds = np.stack([EDS_SCALE * F[i] * partial[i] for i in range(len(ELEMENTS))])
    haadf = HAADF_SCALE * sum(Z[i] * partial[i] for i in range(len(ELEMENTS)))
    return eds, haadf


@pytest.fixture(scope="module")
def data(phantom, geometry):
    haadf_proj, chem_proj = geometry
    chem, _ = _simulate(chem_proj, phantom["wt"], phantom["rho"])
    _, haadf = _simulate(haadf_proj, phantom["wt"], phantom["rho"])
    return haadf, chem


def _region_means(weight_fractions: np.ndarray, phantom) -> tuple[np.ndarray, np.ndarray]:
    core = np.array([w[phantom["core"]].mean() for w in weight_fractions])
    shell = np.array([w[phantom["shell"]].mean() for w in weight_fractions])
    return core, shell


# ---------------------------------------------------------------- response ratios


def test_response_ratios_recover_eq_16_on_noise_free_data(data):
    haadf, chem = data
    fit = response_ratios(haadf[::2], chem)  # HAADF at the 31 chemical tilts
    np.testing.assert_allclose(fit.ratios, TRUE_RATIOS, rtol=1e-6)
    assert fit.r_squared > 0.98


def test_response_ratios_with_poisson_noise_after_the_gaussian_filter(data):
    haadf, chem = data
    noisy = np.random.default_rng(0).poisson(chem).astype(np.float64)
    fit = response_ratios(haadf[::2], gaussian_filter(noisy, (0, 0.8, 0.8, 0)))
    np.testing.assert_allclose(fit.ratios, TRUE_RATIOS, rtol=0.03)
    assert fit.r_squared > 0.98


def test_response_ratios_reject_mismatched_tilts(data):
    haadf, chem = data
    with pytest.raises(InputError, match="same tilts and pixels as the HAADF"):
        response_ratios(haadf, chem)  # 61 HAADF tilts against 31 chemical ones
    with pytest.raises(InputError, match="must be non-negative"):
        response_ratios(haadf[::2], -chem)


# ---------------------------------------------------------------- HEBT + eq. 18


def test_hebt_quantification_recovers_the_core_shell_composition(phantom, geometry, data):
    """Acceptance criterion: ±5 wt% in the eroded core and shell, noise-free data."""
    haadf_proj, chem_proj = geometry
    haadf, chem = data
    result = hebt(haadf_proj, haadf, chem_proj, chem, alpha=0.8, n_iter=200)

    assert result.volume.shape == (2, N, N, 1)
    assert result.iterations == 200
    np.testing.assert_allclose(result.info["response_ratios"], TRUE_RATIOS, rtol=0.01)
    assert result.info["r_squared"] > 0.98
    assert result.info["ratios_estimated"] is True
    assert result.info["alpha"] == 0.8
    cost = result.costs["data"]
    assert cost.shape == (201,) and cost[-1] < 1e-3 * cost[0]

    q = quantify(result.volume, Z)  # eq. 18 with the ESF threshold
    assert q.esf.converged
    core, shell = _region_means(q.weight_fractions, phantom)
    np.testing.assert_allclose(core, CORE_WT, atol=0.05)
    np.testing.assert_allclose(shell, SHELL_WT, atol=0.05)
    inside = q.weight_fractions.sum(axis=0) > 0
    assert np.count_nonzero(inside) == pytest.approx(phantom["particle"].sum(), rel=0.03)


def test_hebt_with_given_ratios_and_no_filter(phantom, geometry, data):
    haadf_proj, chem_proj = geometry
    haadf, chem = data
    result = hebt(
        haadf_proj, haadf, chem_proj, chem, alpha=0.5, n_iter=150, response_ratios=TRUE_RATIOS, gaussian_sigma=None
    )
    assert result.info["ratios_estimated"] is False
    assert result.info["r_squared"] == pytest.approx(1.0, abs=1e-9)
    assert result.info["gaussian_sigma"] is None
    core, shell = _region_means(quantify(result.volume, Z).weight_fractions, phantom)
    np.testing.assert_allclose(core, CORE_WT, atol=0.03)
    np.testing.assert_allclose(shell, SHELL_WT, atol=0.03)


def test_hebt_needs_haadf_at_the_chemical_tilts_to_estimate_ratios(geometry, data):
    haadf_proj, chem_proj = geometry
    haadf, chem = data
    shifted = Projector(N, np.linspace(-74, 76, 61), cache_dir=False)
    with pytest.raises(InputError, match="not every chemical tilt is a HAADF tilt"):
        hebt(shifted, haadf, chem_proj, chem, alpha=0.8, n_iter=1)
    result = hebt(shifted, haadf, chem_proj, chem, alpha=0.8, n_iter=1, haadf_at_chem_tilts=haadf[::2])
    np.testing.assert_allclose(result.info["response_ratios"], TRUE_RATIOS, rtol=0.01)


def test_hebt_callback_stops_the_run(geometry, data):
    haadf_proj, chem_proj = geometry
    haadf, chem = data
    seen = []

    def stop_at_five(k, costs, volume):
        seen.append(costs["data"])
        return k == 5

    result = hebt(haadf_proj, haadf, chem_proj, chem, alpha=0.8, n_iter=50, callback=stop_at_five)
    assert result.iterations == 5
    assert len(seen) == 6 and all(b < a for a, b in zip(seen, seen[1:], strict=False))


def test_hebt_float64_input_gives_float64_volume(geometry, data):
    haadf_proj, chem_proj = geometry
    haadf, chem = data
    assert hebt(haadf_proj, haadf, chem_proj, chem, alpha=0.7, n_iter=2).volume.dtype == np.float64
    single = hebt(haadf_proj, haadf.astype(np.float32), chem_proj, chem.astype(np.float32), alpha=0.7, n_iter=2)
    assert single.volume.dtype == np.float32


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.2, 1.5])
def test_hebt_rejects_alpha_outside_the_open_unit_interval(geometry, data, alpha):
    haadf_proj, chem_proj = geometry
    haadf, chem = data
    with pytest.raises(InputError, match=r"alpha must lie in \(0, 1\) \(strictly between 0 and 1"):
        hebt(haadf_proj, haadf, chem_proj, chem, alpha=alpha)


def test_hebt_rejects_bad_inputs(geometry, data):
    haadf_proj, chem_proj = geometry
    haadf, chem = data
    with pytest.raises(InputError, match="chem_tilt_series must be non-negative"):
        hebt(haadf_proj, haadf, chem_proj, chem - 1.0, alpha=0.8)
    with pytest.raises(InputError, match="haadf_tilt_series must be non-negative"):
        hebt(haadf_proj, -haadf, chem_proj, chem, alpha=0.8)
    with pytest.raises(InputError, match=r"chem_tilt_series must have shape \(2, 31, 64, n_x\)"):
        hebt(haadf_proj, haadf, chem_proj, chem[:, :30], alpha=0.8)
    with pytest.raises(InputError, match=r"chem_tilt_series must have shape \(n_elements"):
        hebt(haadf_proj, haadf, chem_proj, chem[0], alpha=0.8)
    with pytest.raises(InputError, match=r"haadf_tilt_series must have shape \(61, 64, n_x\)"):
        hebt(haadf_proj, haadf[::2], chem_proj, chem, alpha=0.8)
    with pytest.raises(InputError, match="both must cover the same slices"):
        hebt(haadf_proj, np.concatenate([haadf, haadf], axis=-1), chem_proj, chem, alpha=0.8)
    with pytest.raises(InputError, match="share slice size and detector width"):
        hebt(Projector(32, [0.0, 45.0], cache_dir=False), haadf, chem_proj, chem, alpha=0.8)
    with pytest.raises(InputError, match=r"one value per element \(2\)"):
        hebt(haadf_proj, haadf, chem_proj, chem, alpha=0.8, response_ratios=[1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="response_ratios must be finite and > 0"):
        hebt(haadf_proj, haadf, chem_proj, chem, alpha=0.8, response_ratios=[1.0, 0.0])
    with pytest.raises(InputError, match="gaussian_sigma must be finite and ≥ 0"):
        hebt(haadf_proj, haadf, chem_proj, chem, alpha=0.8, gaussian_sigma=-1)
    with pytest.raises(InputError, match=r"relaxation must lie in \(0, 2\)"):
        hebt(haadf_proj, haadf, chem_proj, chem, alpha=0.8, relaxation=2.5)


# ---------------------------------------------------------------- EDS-SIRT + eq. 12


def test_eds_sirt_quantification_recovers_the_composition(phantom, geometry, data):
    """Yuan 2021 §3.1.2: one SIRT per element (Gaussian-filtered sinograms, 50
    iterations), then eq. 12 with f_A. Same ±5 wt% tolerance as HEBT holds on
    noise-free data; the paper's noisy case is looser."""
    _, chem_proj = geometry
    _, chem = data
    filtered = gaussian_filter(chem, (0, 0.8, 0.8, 0))
    maps = np.stack([sirt(chem_proj, filtered[i], n_iter=50).volume for i in range(2)])
    q = quantify(maps, F)
    core, shell = _region_means(q.weight_fractions, phantom)
    np.testing.assert_allclose(core, CORE_WT, atol=0.05)
    np.testing.assert_allclose(shell, SHELL_WT, atol=0.05)


# ---------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(
    not backend.gpu_available(), reason=f"needs CuPy and a CUDA device: {backend.gpu_unavailable_reason()}"
)
def test_hebt_on_gpu_matches_cpu(geometry, data):
    haadf_proj, chem_proj = geometry
    haadf, chem = data
    haadf32, chem32 = haadf.astype(np.float32), chem.astype(np.float32)
    cpu = hebt(haadf_proj, haadf32, chem_proj, chem32, alpha=0.8, n_iter=30)
    gpu = hebt(haadf_proj, haadf32, chem_proj, chem32, alpha=0.8, n_iter=30, device="gpu")
    assert gpu.device.startswith("gpu")
    np.testing.assert_allclose(backend.to_numpy(gpu.volume), cpu.volume, rtol=1e-3, atol=1e-4 * float(cpu.volume.max()))


def test_prefilter_smooths_tilt_and_detector_axes_only():
    from tomosweep.solvers import prefilter_chem

    chem = np.zeros((2, 9, 11, 3))
    chem[0, 4, 5, 1] = 1.0
    out = prefilter_chem(chem, 0.8)
    assert out[0, :, :, 1].sum() == pytest.approx(1.0)  # mass kept within the slice
    assert np.all(out[:, :, :, [0, 2]] == 0) and np.all(out[1] == 0)  # no leak across slices or elements
    assert 0 < out[0, 3, 5, 1] < out[0, 4, 5, 1]  # spread along the tilt axis
    assert 0 < out[0, 4, 4, 1] < out[0, 4, 5, 1]  # and along the detector
    np.testing.assert_array_equal(prefilter_chem(chem, 0.0), chem)
    with pytest.raises(InputError, match="gaussian_sigma must be finite and ≥ 0"):
        prefilter_chem(chem, -1.0)
