"""Physical factors (Yuan 2021 eq. 7, 14, 16, Table 2), weight fractions (eq. 12/18)
and the ESF threshold (§2.1)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from tomosweep.errors import InputError, TomosweepError
from tomosweep.solvers.physics import (
    XrayLine,
    f_factor,
    predicted_response_ratio,
    table2_line,
    xray_line,
    yuan_table2,
    z_factor,
)
from tomosweep.solvers.quantify import esf_threshold, quantify, weight_fractions

# ---------------------------------------------------------------- physics / Table 2


def test_table2_holds_the_four_lines_of_the_paper():
    table = yuan_table2()
    assert sorted(table) == ["Ag", "Au", "Co", "Zn"]
    ag = table["Ag"]
    assert (ag.line, ag.beam_energy_kev) == ("La", 100.0)
    assert ag.sigma_elastic_barn == pytest.approx(9.90e6)
    assert ag.sigma_ionisation_barn == pytest.approx(2.44e3)
    assert (ag.fluorescence_yield, ag.relative_intensity) == (0.057, 0.816)
    assert table["Zn"].beam_energy_kev == 80.0
    assert all(line.detector_efficiency == 1.0 for line in table.values())


def test_table2_lines_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        yuan_table2()["Au"].atomic_weight = 1.0  # type: ignore[misc]


def test_z_factors_match_the_values_quoted_in_section_3_2_3():
    # Yuan 2021 §3.2.3: z_Co = 9.49e4, z_Zn = 9.96e4 b·mol/g.
    assert z_factor("Co") == pytest.approx(9.49e4, rel=2e-3)
    assert z_factor("Zn") == pytest.approx(9.96e4, rel=2e-3)


def test_f_factor_ratio_matches_the_partial_cross_section_ratio_of_section_3_2_3():
    # (f_Co M_Co)/(f_Zn M_Zn) = 1.10 in the paper; absolute f differ by a common 4 %
    # (see the JSON notes), which cancels in every weight fraction.
    co, zn = table2_line("Co"), table2_line("Zn")
    ratio = f_factor(co) * co.atomic_weight / (f_factor(zn) * zn.atomic_weight)
    assert ratio == pytest.approx(1.10, abs=0.01)
    assert f_factor("Co") / f_factor("Zn") == pytest.approx(2.25 / 1.84, rel=2e-3)


def test_f_factor_is_eq_7():
    au = table2_line("Au")
    assert f_factor(au) == pytest.approx(7.46e3 * 0.030 * 0.999 / au.atomic_weight)


def test_response_ratio_is_eq_16():
    assert predicted_response_ratio("Ag") == pytest.approx(z_factor("Ag") / f_factor("Ag"))
    # Twice the HAADF dose, a 0.7 sr detector: r scales by D_H / (D_e Ω/4π).
    scaled = predicted_response_ratio("Ag", haadf_dose=2.0, solid_angle_sr=0.7)
    assert scaled == pytest.approx(2.0 / (0.7 / (4 * math.pi)) * predicted_response_ratio("Ag"))
    with pytest.raises(InputError, match="cannot exceed 4π"):
        predicted_response_ratio("Ag", solid_angle_sr=13.0)


def test_user_line_from_own_values():
    pt = xray_line(
        "Pt",
        "Ma",
        beam_energy_kev=200,
        sigma_elastic_barn=1.5e7,
        sigma_ionisation_barn=6.0e3,
        fluorescence_yield=0.03,
        relative_intensity=0.99,
        atomic_weight=195.084,
        detector_efficiency=0.9,
    )
    assert isinstance(pt, XrayLine)
    assert f_factor(pt) == pytest.approx(6.0e3 * 0.03 * 0.99 * 0.9 / 195.084)
    assert z_factor(pt) == pytest.approx(1.5e7 / 195.084)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sigma_ionisation_barn": -1.0}, "sigma_ionisation_barn must be finite and > 0"),
        ({"atomic_weight": float("nan")}, "atomic_weight must be finite and > 0"),
        ({"fluorescence_yield": 1.5}, r"fluorescence_yield is a probability .* in \(0, 1\]"),
        ({"beam_energy_kev": "fast"}, "beam_energy_kev must be a number"),
    ],
)
def test_user_line_rejects_bad_numbers(change, message):
    values = dict(
        beam_energy_kev=200,
        sigma_elastic_barn=1.5e7,
        sigma_ionisation_barn=6.0e3,
        fluorescence_yield=0.03,
        relative_intensity=0.99,
        atomic_weight=195.084,
    )
    values.update(change)
    with pytest.raises(InputError, match=message):
        xray_line("Pt", "Ma", **values)


def test_unknown_element_is_refused():
    with pytest.raises(InputError, match=r"Table 2 has no X-ray line for 'Fe'.*Ag, Au, Co, Zn"):
        f_factor("Fe")
    with pytest.raises(InputError, match="unknown element symbol 'Xx'"):
        xray_line(
            "Xx",
            "Ka",
            beam_energy_kev=80,
            sigma_elastic_barn=1e6,
            sigma_ionisation_barn=100,
            fluorescence_yield=0.1,
            relative_intensity=0.9,
            atomic_weight=50,
        )
    with pytest.raises(TomosweepError, match="expected an XrayLine or an element symbol"):
        z_factor(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- weight fractions


def _two_phase_maps():
    """Element maps X_A = f_A C_A ρ of a 20×20 image: a two-phase square in a void."""
    f = np.array([1.05, 1.14])
    c = np.zeros((2, 20, 20))
    c[:, 5:15, 5:10] = np.array([0.3, 0.7])[:, None, None]
    c[:, 5:15, 10:15] = np.array([0.9, 0.1])[:, None, None]
    rho = np.where(c.sum(0) > 0, 12.0, 0.0)
    return f[:, None, None] * c * rho, f, c


def test_weight_fractions_recover_the_composition_exactly():
    maps, f, c = _two_phase_maps()
    w = weight_fractions(maps, f)
    np.testing.assert_allclose(w, c, atol=1e-12)


def test_weight_fractions_sum_to_one_inside_and_zero_outside():
    maps, f, c = _two_phase_maps()
    rng = np.random.default_rng(0)
    noisy = maps + 0.2 * rng.random(maps.shape)  # faint background everywhere
    w = weight_fractions(noisy, f, threshold=3.0)
    inside = c.sum(0) > 0
    np.testing.assert_allclose(w.sum(0)[inside], 1.0, atol=1e-12)
    assert np.all(w[:, ~inside] == 0)


def test_weight_fractions_without_threshold_handle_empty_voxels_and_negatives():
    maps, f, _ = _two_phase_maps()
    maps = maps.copy()
    maps[0, 0, 0] = -3.0  # SIRT without clipping can leave negatives
    maps[1, 0, 0] = 2.0
    with np.errstate(all="raise"):  # no 0/0 anywhere
        w = weight_fractions(maps, f)
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w[:, 0, 0], [0.0, 1.0])
    assert np.all(w[:, 1, 1] == 0)


def test_weight_fraction_factors_are_scale_free():
    maps, f, _ = _two_phase_maps()
    np.testing.assert_allclose(weight_fractions(maps, f), weight_fractions(maps, 1e4 * f))


@pytest.mark.parametrize(
    ("maps", "factors", "message"),
    [
        (np.ones((2, 4, 4)), [1.0, 2.0, 3.0], "maps has 2 element.*factors has shape \\(3,\\)"),
        (np.ones((2, 4, 4)), [1.0, 0.0], "factors .* must be finite and > 0"),
        (np.ones(5), [1.0], r"maps must have shape \(n_elements, ...\)"),
        (np.full((2, 3), np.nan), [1.0, 1.0], "maps contains NaN"),
    ],
)
def test_weight_fractions_reject_bad_inputs(maps, factors, message):
    with pytest.raises(InputError, match=message):
        weight_fractions(maps, factors)


def test_negative_threshold_is_refused():
    maps, f, _ = _two_phase_maps()
    with pytest.raises(InputError, match="threshold must be finite and ≥ 0"):
        weight_fractions(maps, f, threshold=-1.0)


# ---------------------------------------------------------------- ESF threshold


def _blurred_disc(radius: float, noise: float, seed: int = 1):
    yy, xx = np.mgrid[:96, :96]
    disc = np.hypot(yy - 47.5, xx - 47.5) <= radius
    image = gaussian_filter(np.where(disc, 2.1, 0.1), 1.5)
    image += noise * np.random.default_rng(seed).standard_normal(image.shape)
    return image, disc


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.15])
def test_esf_threshold_segments_a_blurred_disc(noise):
    image, disc = _blurred_disc(20.0, noise)
    result = esf_threshold(image)
    assert result.converged and result.method == "esf" and result.message == ""
    assert 0.1 < result.threshold < 2.1
    # The plateaus are the extreme sorted values, so noise widens them.
    assert result.background_level == pytest.approx(0.1, abs=0.1 + 2 * noise)
    assert result.particle_level == pytest.approx(2.1, abs=0.1 + 2 * noise)
    area = np.count_nonzero(image > result.threshold)
    assert area == pytest.approx(disc.sum(), rel=0.02)
    assert result.edge_volume == pytest.approx(disc.sum(), rel=0.05)


def test_esf_threshold_falls_back_to_otsu_and_says_so(monkeypatch):
    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr("scipy.optimize.curve_fit", no_convergence)
    image, disc = _blurred_disc(20.0, 0.05)
    result = esf_threshold(image)
    assert not result.converged and result.method == "otsu"
    assert "ESF fit failed" in result.message and "Otsu" in result.message
    assert result.background_level is None
    assert np.count_nonzero(image > result.threshold) == pytest.approx(disc.sum(), rel=0.05)


def test_esf_threshold_rejects_a_constant_map():
    with pytest.raises(InputError, match="total_map is constant"):
        esf_threshold(np.ones((8, 8)))
    with pytest.raises(InputError, match="n_thresholds must be an integer ≥ 8"):
        esf_threshold(np.arange(10.0), n_thresholds=3)


# ---------------------------------------------------------------- quantify


def test_quantify_with_esf_threshold_removes_the_background():
    maps, f, c = _two_phase_maps()
    rng = np.random.default_rng(3)
    noisy = gaussian_filter(maps, (0, 0.7, 0.7)) + 0.3 * rng.random(maps.shape)
    q = quantify(noisy, f)
    assert q.esf is not None and q.esf.converged
    assert q.threshold == q.esf.threshold
    inside = q.weight_fractions.sum(0) > 0
    assert np.count_nonzero(inside) == pytest.approx(np.count_nonzero(c.sum(0)), rel=0.1)
    core = np.zeros((20, 20), bool)
    core[7:13, 6:9] = True
    assert q.weight_fractions[0][core].mean() == pytest.approx(0.3, abs=0.05)


def test_quantify_threshold_options():
    maps, f, c = _two_phase_maps()
    assert quantify(maps, f, threshold=None).threshold is None
    np.testing.assert_allclose(quantify(maps, f, threshold=1.0).weight_fractions, c, atol=1e-12)
    with pytest.raises(InputError, match="threshold must be 'esf', a number or None"):
        quantify(maps, f, threshold="otsu")
