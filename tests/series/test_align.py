"""Alignment: known random shifts and a tilt-axis offset recovered within half a pixel."""

from __future__ import annotations

import numpy as np
import pytest

from tomosweep.errors import InputError
from tomosweep.phantoms import TiltScheme, simulate
from tomosweep.series import align_series, apply_shifts, load_series, read_stack, write_mrc
from tomosweep.series.align import relative_shift


def _modulo_rigid(angles: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Residual of ``error`` (n, 2) after the freedom every alignment has: a translation of the
    specimen, ``y cos θ − z sin θ`` across the axis and a constant along it."""
    t = np.radians(angles)
    design = np.stack([np.cos(t), -np.sin(t)], axis=1)
    coef, *_ = np.linalg.lstsq(design, error[:, 0], rcond=None)
    return np.stack([error[:, 0] - design @ coef, error[:, 1] - error[:, 1].mean()], axis=1)


@pytest.fixture(scope="module")
def shifted(isolated, tmp_path_factory):
    """A 25-tilt HAADF series with random shifts of up to ±3 px and the tilt axis 2.3 px off centre,
    written to MRC with its angles in the header, as a microscope would leave it."""
    acq = simulate(isolated, TiltScheme(25, n_chem=5), rng=0)
    rng = np.random.default_rng(11)
    truth = rng.uniform(-3, 3, size=(acq.haadf.shape[0], 2))
    truth[:, 0] += 2.3
    folder = tmp_path_factory.mktemp("shifted")
    write_mrc(folder / "haadf.mrc", apply_shifts(acq.haadf, -truth), acq.haadf_angles)
    return folder / "haadf.mrc", acq, truth


@pytest.mark.parametrize("method", ["projmatch", "xcorr", "com"])
def test_known_shifts_are_recovered_within_half_a_pixel(shifted, method):
    path, _, truth = shifted
    data, angles = read_stack(path)
    alignment = align_series(data, angles, method=method)
    residual = _modulo_rigid(alignment.angles, alignment.shifts - truth)
    assert np.abs(residual).max() < 0.5, np.abs(residual).max(axis=0)
    if method == "com":  # the axis offset itself, once the specimen's own mass centre is accounted for
        assert abs(np.mean(residual[:, 0])) < 0.1


@pytest.mark.parametrize("method", ["projmatch", "xcorr", "com"])
def test_reported_shifts_are_the_true_ones_without_a_net_translation(shifted, method):
    """The shifts reported are the applied ones: no translation of the specimen in them (the
    chain's reference or the specimen's own mass centre once moved it by several voxels), the
    axis offset is the constant of the truth's own fit, the largest shift the truth's."""
    from tomosweep.series.align import without_translation

    path, _, truth = shifted
    data, angles = read_stack(path)
    alignment = align_series(data, angles, method=method)
    again, offset = without_translation(alignment.angles, alignment.shifts)
    np.testing.assert_allclose(again, alignment.shifts, atol=1e-9)
    assert offset == pytest.approx(alignment.tilt_axis_offset, abs=1e-9)
    truth_free, truth_offset = without_translation(alignment.angles, truth)
    assert abs(alignment.tilt_axis_offset - truth_offset) < 0.3
    assert np.abs(alignment.shifts - truth_free).max() < 0.5
    assert abs(np.abs(alignment.shifts).max() - np.abs(truth_free).max()) < 0.5


def test_projection_matching_beats_the_chain_on_a_noisy_series(isolated):
    """Registered to a reprojection of the whole series, no pairwise error adds up along a chain."""
    rng = np.random.default_rng(4)
    acq = simulate(isolated, TiltScheme(31, n_chem=5), haadf_snr=300, rng=1)
    truth = rng.uniform(-3, 3, size=(acq.haadf.shape[0], 2))
    raw = apply_shifts(acq.haadf, -truth)
    errors = {}
    for method in ("xcorr", "projmatch"):
        found = align_series(raw, acq.haadf_angles, method=method).shifts
        errors[method] = np.sqrt((_modulo_rigid(acq.haadf_angles, found - truth) ** 2).mean())
    assert errors["projmatch"] < 0.2, errors
    assert errors["projmatch"] <= errors["xcorr"], errors


def test_shifts_carry_to_chemical_tilts():
    from tomosweep.series.align import Alignment

    alignment = Alignment(
        angles=np.array([-10.0, 0.0, 10.0]),
        shifts=np.array([[1.0, 0.0], [2.0, 1.0], [4.0, -1.0]]),
        tilt_axis_offset=0.0,
        method="xcorr",
        com_before=np.zeros(3),
        com_after=np.zeros(3),
    )
    shifts, interpolated = alignment.at(np.array([0.01, 5.0]))
    np.testing.assert_allclose(shifts, [[2.0, 1.0], [3.0, 0.0]])
    assert interpolated == 1


def test_relative_shift_is_sub_pixel(isolated):
    image = isolated.volumes.sum(axis=(0, 2))
    moved = apply_shifts(image[None], np.array([[-1.3, 0.6]]))[0]
    np.testing.assert_allclose(relative_shift(image, moved), [1.3, -0.6], atol=0.1)


def test_fourier_shift_undoes_itself(isolated):
    stack = isolated.volumes.sum(axis=2)[:3]
    shifts = np.array([[0.4, -1.7], [2.2, 0.3], [-0.5, 0.5]])
    back = apply_shifts(apply_shifts(stack, shifts, nonnegative=False), -shifts, nonnegative=False)
    assert np.linalg.norm(back - stack) / np.linalg.norm(stack) < 0.02


def test_empty_projection_and_bad_method_are_refused():
    with pytest.raises(InputError, match="a projection is empty"):
        align_series(np.zeros((3, 4, 4)), np.array([-1.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="align.method must be one of"):
        align_series(np.ones((3, 4, 4)), np.array([-1.0, 0.0, 1.0]), method="sift")


def test_loaded_series_keeps_alignment_settings(tmp_path):
    np.savez(tmp_path / "o.npz", maps=np.full((3, 4, 4), 5.0), angles=[-30.0, 0.0, 30.0])
    (tmp_path / "d.toml").write_text('[align]\nmethod = "com"\n[chem]\n[chem.elements]\nO = "o.npz"\n')
    assert load_series(tmp_path / "d.toml").align.method == "com"
