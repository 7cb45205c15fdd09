"""The formats people have: Gatan DM, HyperSpy, Berkeley EMD, old FEI MRC, EDS spectrum images, HAADF-only series,
and the tilt-axis direction checked against the data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, rotate
from series_writers import image_axes, signal, write_dm3, write_old_fei_mrc

from tomosweep.errors import InputError
from tomosweep.series import load_series, read_stack, tilt_axis_misfit

ANGLES = np.linspace(-60.0, 60.0, 7)


def _specimen_series(angles: np.ndarray, n: int = 24, seed: int = 0) -> np.ndarray:
    """Parallel projections ``(n_tilts, n_det, n_x)`` about the x axis of a few blobs (counts ≥ 0)."""
    rng = np.random.default_rng(seed)
    volume = np.zeros((n, n, n))  # (y, z, x)
    for _ in range(5):
        y, z, x = rng.integers(n // 4, 3 * n // 4, size=3)
        volume[y, z, x] = 1.0
    volume = gaussian_filter(volume, 1.5) * 1000
    stack = [rotate(volume, a, axes=(0, 1), reshape=False, order=1).sum(axis=1) for a in angles]
    return np.round(np.clip(stack, 0, None))


def test_a_lazy_gatan_stack_is_read_here_whatever_dask_scheduler_a_session_left_set(tmp_path):
    """RosettaSciIO hands DM data over lazily; a closed distributed Client can leave dask's default
    scheduler pointing at it ("no Client active"), which once failed every DM read after a study."""
    import dask

    stack = _specimen_series(ANGLES)
    write_dm3(tmp_path / "haadf.dm3", stack, first_angle=-60.0, step=20.0)
    with dask.config.set(scheduler="dask.distributed"):
        data, _ = read_stack(tmp_path / "haadf.dm3")
    np.testing.assert_allclose(data, stack)


def _write(path, text: str):
    path.write_text(text)
    return path


def test_dm3_stack_with_tilts_on_its_third_axis(tmp_path):
    stack = _specimen_series(ANGLES)
    write_dm3(tmp_path / "haadf.dm3", stack, first_angle=-60.0, step=20.0)
    data, angles = read_stack(tmp_path / "haadf.dm3")
    np.testing.assert_allclose(data, stack)
    np.testing.assert_allclose(angles, ANGLES)
    _write(tmp_path / "data.toml", '[haadf]\nfile = "haadf.dm3"\nbackground = 0\n')
    series = load_series(tmp_path / "data.toml")
    np.testing.assert_allclose(series.haadf, stack)
    assert series.elements == () and series.n_chem == 0 and series.shape == (24, 24)
    assert series.notes == (
        "no [chem] section: a HAADF-only series is reconstructed without chemistry (that needs [chem])",
    )


def test_hspy_image_stack_with_angles_in_metadata(tmp_path):
    from rsciio.hspy import file_writer

    stack = _specimen_series(ANGLES)
    tilts = {"Tomography": {"tilts": ANGLES.tolist()}}
    file_writer(str(tmp_path / "haadf.hspy"), signal(stack.astype(np.float32), image_axes(7, 24, 24), tilts))
    data, angles = read_stack(tmp_path / "haadf.hspy")
    np.testing.assert_allclose(data, stack)
    np.testing.assert_allclose(angles, ANGLES)


def test_eds_spectrum_image_stack_reduced_by_energy_windows(tmp_path):
    from rsciio.hspy import file_writer

    rng = np.random.default_rng(3)
    n_tilts, rows, cols, channels = 5, 8, 6, 40  # 0.25 keV per channel from 0
    si = rng.poisson(3.0, size=(n_tilts, rows, cols, channels)).astype(np.uint16)
    axes = image_axes(n_tilts, rows, cols, tilt_units="deg", first=-60.0, step=30.0)
    axes = [{**a, "navigate": True} for a in axes] + [
        {"name": "Energy", "units": "keV", "scale": 0.25, "offset": 0.0, "size": channels, "navigate": False}
    ]
    file_writer(str(tmp_path / "eds.hspy"), signal(si, axes, {"Signal": {"signal_type": "EDS_TEM"}}))
    _write(
        tmp_path / "data.toml",
        '[chem]\n[chem.windows]\nCo = [6.8, 7.1]\nO = [0.45, 0.6]\n[chem.elements]\nCo = "eds.hspy"\nO = "eds.hspy"\n',
    )
    series = load_series(tmp_path / "data.toml")
    assert series.elements == ("Co", "O")
    energies = 0.25 * np.arange(channels)
    for k, (lo, hi) in enumerate([(6.8, 7.1), (0.45, 0.6)]):
        inside = (energies >= lo) & (energies <= hi)
        np.testing.assert_array_equal(series.chem[k], si[..., inside].sum(axis=-1))
    np.testing.assert_allclose(series.chem_angles, [-60, -30, 0, 30, 60])


def test_a_window_outside_the_spectrum_is_refused(tmp_path):
    from rsciio.hspy import file_writer

    si = np.ones((3, 6, 6, 10), dtype=np.uint16)
    axes = [{**a, "navigate": True} for a in image_axes(3, 6, 6)] + [
        {"name": "Energy", "units": "eV", "scale": 10.0, "offset": 0.0, "size": 10, "navigate": False}
    ]
    file_writer(str(tmp_path / "eds.hspy"), signal(si, axes))
    toml = _write(
        tmp_path / "data.toml",
        '[chem]\nangles = [-30, 0, 30]\nwindows = { Co = [6.8, 7.1] }\n[chem.elements]\nCo = "eds.hspy"\n',
    )
    with pytest.raises(InputError) as err:
        load_series(toml)
    assert str(err.value) == (
        f"data file {toml}: chemical map Co: {tmp_path.resolve() / 'eds.hspy'}: the energy window 6.8–7.1 keV "
        "holds no channel of the spectrum (0–0.09 keV)"
    )


def test_berkeley_emd_through_rosettasciio(tmp_path):
    from rsciio.emd import file_writer

    stack = _specimen_series(ANGLES)
    axes = image_axes(7, 24, 24, tilt_units="deg", first=-60.0, step=20.0)
    file_writer(str(tmp_path / "haadf.emd"), signal(stack.astype(np.float32), axes))
    data, angles = read_stack(tmp_path / "haadf.emd")
    np.testing.assert_allclose(data, stack)
    np.testing.assert_allclose(angles, ANGLES)


def test_old_fei_extended_header_gives_the_angles(tmp_path):
    stack = _specimen_series(ANGLES)
    write_old_fei_mrc(tmp_path / "fei.mrc", stack, ANGLES)
    data, angles = read_stack(tmp_path / "fei.mrc")
    np.testing.assert_allclose(data, stack)
    np.testing.assert_allclose(angles, ANGLES)
    _write(tmp_path / "data.toml", '[haadf]\nfile = "fei.mrc"\nangles = "header"\nbackground = 0\n')
    np.testing.assert_allclose(load_series(tmp_path / "data.toml").haadf_angles, ANGLES)


def test_the_tilt_axis_direction_is_checked_against_the_data(tmp_path):
    stack = _specimen_series(np.linspace(-70, 70, 15))
    along, across = tilt_axis_misfit(stack)
    assert along < 0.01 and across > 0.1, (along, across)
    # an IMOD-style stack (axis vertical) read with the default horizontal axis
    np.savez(tmp_path / "h.npz", haadf=stack.transpose(0, 2, 1), angles=np.linspace(-70, 70, 15))
    toml = _write(tmp_path / "data.toml", '[haadf]\nfile = "h.npz"\nbackground = 0\n')
    with pytest.raises(InputError) as err:
        load_series(toml)
    text = str(err.value)
    assert text.startswith(f'data file {toml}: tilt_axis = "horizontal" does not fit the data: the mass of each slice')
    assert text.endswith('the tilt axis of these images is vertical: set tilt_axis = "vertical"')
    assert "\n" not in text
    _write(tmp_path / "data.toml", 'tilt_axis = "vertical"\n[haadf]\nfile = "h.npz"\nbackground = 0\n')
    np.testing.assert_allclose(load_series(toml).haadf, stack)
