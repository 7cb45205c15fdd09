"""SerialEM ``.mdoc`` files and series written one file per tilt, on small files made here."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from series_writers import write_mdoc

from tomosweep.errors import InputError
from tomosweep.series import load_series, write_mrc
from tomosweep.series.files import to_layout
from tomosweep.series.serialem import layout_from_serialem, sum_frames

ANGLES = [-60.0, -30.0, 0.0, 30.0, 60.0]
IMAGES = np.random.default_rng(1).poisson(30.0, size=(5, 12, 16)).astype(np.float64)


def _haadf(series) -> np.ndarray:
    assert series.haadf is not None
    return series.haadf


def _toml(d, body):
    (d / "data.toml").write_text(body)
    return d / "data.toml"


def test_an_mdoc_beside_the_stack_gives_angles_pixel_size_and_axis(tmp_path):
    write_mrc(tmp_path / "ts.mrc", IMAGES)  # no angles in the header
    write_mdoc(tmp_path / "ts.mrc.mdoc", ANGLES)
    series = load_series(_toml(tmp_path, '[haadf]\nfile = "ts.mrc"\nbackground = 0\n'))
    np.testing.assert_allclose(series.haadf_angles, ANGLES)
    assert series.pixel_size_nm == pytest.approx(0.788)
    np.testing.assert_allclose(_haadf(series), IMAGES)  # SerialEM's −90°: the axis already runs along the columns
    assert any("tilt axis from ts.mrc.mdoc" in n for n in series.notes)


@pytest.mark.parametrize("spacing", [0.0, -5.0])
def test_an_mdoc_pixel_spacing_that_is_no_pixel_size_is_not_used_and_said(tmp_path, spacing):
    write_mrc(tmp_path / "ts.mrc", IMAGES)
    write_mdoc(tmp_path / "ts.mrc.mdoc", ANGLES, spacing=spacing)
    series = load_series(_toml(tmp_path, '[haadf]\nfile = "ts.mrc"\nbackground = 0\n'))
    assert series.pixel_size_nm is None
    assert f"HAADF: PixelSpacing = {spacing:g} in ts.mrc.mdoc is not a pixel size; it is not used" in series.notes


def test_angles_mdoc_and_the_mdoc_axis_turns_a_vertical_series(tmp_path):
    write_mrc(tmp_path / "ts.mrc", IMAGES, angles=[0, 1, 2, 3, 4])  # the header's angles are not used
    write_mdoc(tmp_path / "ts.mdoc", ANGLES, axis=0.0)
    series = load_series(_toml(tmp_path, '[haadf]\nfile = "ts.mrc"\nangles = "mdoc"\nbackground = 0\n'))
    np.testing.assert_allclose(series.haadf_angles, ANGLES)
    np.testing.assert_allclose(_haadf(series), IMAGES.transpose(0, 2, 1))


def test_the_data_files_own_axis_wins_over_the_mdocs(tmp_path):
    write_mrc(tmp_path / "ts.mrc", IMAGES)
    write_mdoc(tmp_path / "ts.mrc.mdoc", ANGLES, axis=0.0)
    series = load_series(_toml(tmp_path, 'tilt_axis = "horizontal"\n[haadf]\nfile = "ts.mrc"\nbackground = 0\n'))
    np.testing.assert_allclose(_haadf(series), IMAGES)


@pytest.mark.parametrize("alpha", [-90.0, -86.7, 85.3, 3.0, -178.0])
def test_serialem_axis_angle_maps_onto_tomosweeps_turn(alpha):
    """A line along SerialEM's axis (from Y, counter-clockwise, first row at the bottom) ends along x."""
    from scipy.ndimage import gaussian_filter

    image = np.zeros((81, 81))
    t = np.linspace(-30, 30, 241)
    a = np.radians(alpha)
    rows, cols = 40 + t * np.cos(a), 40 - t * np.sin(a)  # rows count up from the bottom row 0
    image[np.round(rows).astype(int), np.round(cols).astype(int)] = 1.0
    image = gaussian_filter(image, 1.0)
    direction, turn = layout_from_serialem(alpha)
    laid = to_layout(image[None], tilt_axis=direction, tilt_axis_angle=turn, binning=1)[0]
    spread_rows = np.sqrt(
        np.average((np.arange(81) - np.average(np.arange(81), weights=laid.sum(1))) ** 2, weights=laid.sum(1))
    )
    assert spread_rows < 1.6, (alpha, direction, turn, spread_rows)


def test_frames_at_one_tilt_are_summed():
    stack = np.arange(4 * 2 * 2, dtype=float).reshape(4, 2, 2)
    summed, angles, frames = sum_frames(stack, np.array([-5.0, -5.0, 5.0, 5.0]))
    np.testing.assert_allclose(angles, [-5.0, 5.0])
    np.testing.assert_allclose(summed, [stack[0] + stack[1], stack[2] + stack[3]])
    assert frames == 2


def _per_tilt(d, order=(3, 0, 4, 1, 2)):
    for k in order:  # written out of order: the series is read in angle order, not name order
        write_mrc(d / f"tilt_{k}.mrc", IMAGES[k][None], angles=[ANGLES[k]])


def test_one_file_per_tilt_from_a_glob_in_angle_order(tmp_path):
    _per_tilt(tmp_path)
    (tmp_path / "tilt_0.mrc").rename(tmp_path / "tilt_9.mrc")  # name order is not angle order
    series = load_series(_toml(tmp_path, '[haadf]\nfile = "tilt_*.mrc"\nbackground = 0\n'))
    np.testing.assert_allclose(series.haadf_angles, ANGLES)
    np.testing.assert_allclose(_haadf(series), IMAGES)
    assert len(series.sources) == 5


def test_one_file_per_tilt_from_a_list_with_the_data_files_angles(tmp_path):
    for k in range(5):
        np.savez(tmp_path / f"t{k}.npz", image=IMAGES[k][None])
    names = ", ".join(f'"t{k}.npz"' for k in (4, 2, 0, 1, 3))
    angles = ", ".join(str(ANGLES[k]) for k in (4, 2, 0, 1, 3))
    series = load_series(_toml(tmp_path, f"[haadf]\nfile = [{names}]\nangles = [{angles}]\nbackground = 0\n"))
    np.testing.assert_allclose(series.haadf_angles, ANGLES)
    np.testing.assert_allclose(_haadf(series), IMAGES)


def _mdoc_count(d):
    write_mrc(d / "ts.mrc", IMAGES)
    write_mdoc(d / "ts.mrc.mdoc", ANGLES[:4])
    return _toml(d, '[haadf]\nfile = "ts.mrc"\nbackground = 0\n')


def _sizes(d):
    _per_tilt(d)
    write_mrc(d / "tilt_2.mrc", np.ones((1, 12, 12)), angles=[0.0])
    return _toml(d, '[haadf]\nfile = "tilt_*.mrc"\nbackground = 0\n')


def _no_tilt(d):
    for k in range(5):
        np.savez(d / f"t{k}.npz", image=IMAGES[k][None])
    return _toml(d, '[haadf]\nfile = "t*.npz"\nbackground = 0\n')


def _duplicate(d):
    _per_tilt(d)
    write_mrc(d / "tilt_3.mrc", IMAGES[3][None], angles=[0.0])
    return _toml(d, '[haadf]\nfile = "tilt_*.mrc"\nbackground = 0\n')


def _no_match(d):
    return _toml(d, '[haadf]\nfile = "BF_*.dm3"\nbackground = 0\n')


def _mdoc_numbered(d, numbers=(0, 1, 1, 3, 4)):
    write_mrc(d / "ts.mrc", IMAGES)
    write_mdoc(d / "ts.mrc.mdoc", ANGLES)
    text = (d / "ts.mrc.mdoc").read_text()
    for z, number in enumerate(numbers):
        text = text.replace(f"[ZValue = {z}]", f"[ZValue = #{number}]")
    (d / "ts.mrc.mdoc").write_text(text.replace("#", ""))
    return _toml(d, '[haadf]\nfile = "ts.mrc"\nbackground = 0\n')


def _mdoc_axis(d, axis="1e400"):
    write_mrc(d / "ts.mrc", IMAGES)
    write_mdoc(d / "ts.mrc.mdoc", ANGLES)
    text = (d / "ts.mrc.mdoc").read_text().replace("Tilt axis angle = -90.0", f"Tilt axis angle = {axis}")
    (d / "ts.mrc.mdoc").write_text(text)
    return _toml(d, '[haadf]\nfile = "ts.mrc"\nbackground = 0\n')


def _empty_list(d):
    return _toml(d, '[haadf]\nfile = []\nangles = "header"\nbackground = 0\n')


def _nul_in_glob(d):
    _per_tilt(d)
    return _toml(d, '[haadf]\nfile = "tilt_\\u0000*.mrc"\nbackground = 0\n')


CASES = {
    "mdoc numbered twice": (
        _mdoc_numbered,
        "HAADF: {d}/ts.mrc.mdoc: its sections are numbered [ZValue = 0, 1, 1, 3, 4], not 0 … 4 once each; name "
        "the .mdoc written with the stack",
    ),
    "mdoc numbered beyond": (
        lambda d: _mdoc_numbered(d, (0, 1, 2, 3, 40)),
        "HAADF: {d}/ts.mrc.mdoc: its sections are numbered [ZValue = 0, 1, 2, 3, 40], not 0 … 4 once each; name "
        "the .mdoc written with the stack",
    ),
    "mdoc axis infinite": (
        _mdoc_axis,
        "HAADF: {d}/ts.mrc.mdoc: 'Tilt axis angle = 1e400' is not an angle in degrees",
    ),
    "mdoc axis 1e9": (
        lambda d: _mdoc_axis(d, "1e9"),
        "HAADF: {d}/ts.mrc.mdoc: 'Tilt axis angle = 1e9' is not an angle in degrees",
    ),
    "empty list": (_empty_list, "HAADF: an empty list of files; name one file per tilt (or a glob)"),
    "nul in glob": (_nul_in_glob, "HAADF: the path 'tilt_\\x00*.mrc' cannot be used (embedded null byte)"),
    "mdoc count": (
        _mdoc_count,
        "HAADF: {d}/ts.mrc.mdoc: 4 sections (tilt angles) but ts.mrc holds 5 images; name the .mdoc written with "
        "this stack",
    ),
    "sizes": (
        _sizes,
        "HAADF: the files of one series must have the same image size: tilt_0.mrc 12×16, tilt_1.mrc 12×16, "
        "tilt_2.mrc 12×12, tilt_3.mrc 12×16, tilt_4.mrc 12×16",
    ),
    "no stage tilt": (
        _no_tilt,
        "HAADF: t0.npz, t1.npz, t2.npz …: no stage tilt in the file's metadata; give angles = [...] in the data "
        "file, one per file in the files' order",
    ),
    "duplicate": (_duplicate, "HAADF: tilt_2.mrc and tilt_3.mrc are both at 0°; every file needs its own tilt"),
    "no match": (_no_match, "HAADF: no file matches 'BF_*.dm3' in {d}"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_per_tilt_and_mdoc_input_is_one_line(tmp_path, case):
    build, expected = CASES[case]
    toml = build(tmp_path)
    with pytest.raises(InputError) as err:
        load_series(toml)
    assert str(err.value) == f"data file {toml}: " + expected.format(d=tmp_path.resolve())


def test_reconstruct_data_refuses_a_bad_mdoc_with_exit_2_and_writes_nothing(tmp_path):
    toml = _mdoc_count(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "reconstruct-data", str(toml), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "4 sections (tilt angles) but ts.mrc holds 5 images" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
