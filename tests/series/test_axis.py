"""The tilt-axis turn estimated from a series, and ``tilt_axis_angle = "auto"`` in a data file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, rotate
from series_writers import write_mdoc

from tomosweep.errors import InputError
from tomosweep.series import load_series, write_mrc
from tomosweep.series.align import apply_shifts
from tomosweep.series.axis import estimate_tilt_axis_angle

ANGLES = np.linspace(-70.0, 70.0, 36)


def _turned(projections: np.ndarray, turn: float) -> np.ndarray:
    """Images whose tilt axis is turned by ``turn``: what ``tilt_axis_angle = turn`` turns back (a cubic
    spline on a band-limited specimen, so that the turn itself blurs nothing)."""
    return np.stack([rotate(p, -turn, reshape=False, order=3, mode="constant") for p in projections])


@pytest.fixture(scope="module")
def nanocubes64():
    """Nanocubes (40³) blurred by σ = 1 voxel in a 64³ field of view, projected at 36 tilts over ±70°."""
    from tomosweep.phantoms import nanocubes
    from tomosweep.solvers import Projector

    volume = gaussian_filter(np.pad(nanocubes(40, rng=2).volumes.sum(axis=0), 12), 1.0)
    return np.asarray(Projector(64, ANGLES).forward(volume.astype(np.float32)), dtype=float)


@pytest.mark.parametrize("turn", [-3.0, 0.0, 2.0])
def test_a_noisy_drifting_turned_series_is_found_within_a_fifth_of_a_degree(nanocubes64, turn):
    rng = np.random.default_rng(7)
    drift = rng.uniform(-2.0, 2.0, size=(ANGLES.size, 2))
    clean = apply_shifts(_turned(nanocubes64, turn), drift)
    counts = rng.poisson(200.0 * clean / clean.max()).astype(float)  # a few hundred counts at most
    found = estimate_tilt_axis_angle(counts, ANGLES)
    assert found.angle == pytest.approx(turn, abs=0.2)
    assert found.residual <= found.residual_unturned
    assert found.as_dict()["estimate_deg"] == found.angle


def _refusal(stack: np.ndarray, angles: np.ndarray = ANGLES) -> str:
    with pytest.raises(InputError) as err:
        estimate_tilt_axis_angle(stack, angles)
    text = str(err.value)
    assert "\n" not in text and text.startswith('tilt_axis_angle = "auto": ')
    assert text.endswith("give tilt_axis_angle in degrees")
    return text


def test_a_turn_beyond_ten_degrees_is_refused(nanocubes64):
    assert "looks turned by more than 10°; check tilt_axis" in _refusal(_turned(nanocubes64, 15.0))


def test_a_specimen_across_the_whole_field_of_view_is_refused():
    film = np.ones((ANGLES.size, 48, 48)) + np.random.default_rng(0).random((ANGLES.size, 48, 48))
    assert "reaches the detector's edge across the tilt axis at 36 of 36 tilts" in _refusal(film)


def test_a_specimen_too_narrow_along_the_axis_is_refused():
    needle = np.zeros((ANGLES.size, 48, 48))
    needle[:, 20:28, 23:26] = 1.0  # three columns
    assert "only 3 image columns along the axis hold specimen" in _refusal(needle)


def test_empty_and_short_series_are_refused(nanocubes64):
    assert "a projection is empty" in _refusal(np.zeros_like(nanocubes64))
    few = np.linspace(-10.0, 10.0, 9)
    assert "9 tilts spanning 20°" in _refusal(nanocubes64[:9], few)


# --- tilt_axis_angle = "auto" in a data file --------------------------------------------------


def _data_file(folder, isolated, turn: float, top: str, *, vertical: bool = False, counts: float = 50.0):
    """A HAADF series and two chemical maps (counts) whose raw images have the tilt axis turned by ``turn``."""
    from tomosweep.solvers import Projector

    projector = Projector(isolated.volumes.shape[1], ANGLES)
    volumes = isolated.volumes.astype(np.float32)
    haadf = np.asarray(projector.forward(volumes.sum(axis=0)), dtype=float)
    rng = np.random.default_rng(3)
    images = {"haadf": 1000.0 * _turned(haadf, turn) / haadf.max()}
    for i, element in enumerate(isolated.elements[:2]):
        projected = np.clip(_turned(np.asarray(projector.forward(volumes[i]), dtype=float), turn), 0.0, None)
        images[element] = rng.poisson(counts * projected / projected.max()).astype(float)
    for name, stack in images.items():
        write_mrc(folder / f"{name}.mrc", stack.transpose(0, 2, 1) if vertical else stack, ANGLES)
    elements = "\n".join(f'{e} = "{e}.mrc"' for e in isolated.elements[:2])
    text = (
        f"{top}\n"
        + ('tilt_axis = "vertical"\n' if vertical else "")
        + '[haadf]\nfile = "haadf.mrc"\nbackground = 0\ndose = "constant"\n[chem]\nangles = "header"\n'
        + f'[chem.elements]\n{elements}\n[align]\nmethod = "com"\n'
    )
    (folder / "data.toml").write_text(text)
    return folder / "data.toml"


@pytest.mark.parametrize("vertical", [False, True])
def test_auto_turns_every_series_as_the_angle_it_found_does_and_reports_it(tmp_path, isolated, vertical):
    from tomosweep.series.transfer import alignment_of, write_shifts_json

    turn = 4.0
    auto = load_series(_data_file(tmp_path, isolated, turn, 'tilt_axis_angle = "auto"', vertical=vertical))
    record = auto.axis_turn
    assert record is not None and record["from"] == "auto" and record["estimated_on"] == "HAADF"
    # a vertical axis is transposed after the turn, which reverses it (series.files.to_layout)
    applied = record["tilt_axis_angle"]
    assert applied == pytest.approx(-turn if vertical else turn, abs=0.2)
    assert auto.frame.tilt_axis_angle == applied
    assert any('tilt_axis_angle = "auto": the images were turned by' in note for note in auto.notes)

    # "auto" reads what a data file giving the angle it found reads, chemical maps included
    given = load_series(_data_file(tmp_path, isolated, turn, f"tilt_axis_angle = {applied!r}", vertical=vertical))
    assert given.axis_turn is None
    np.testing.assert_array_equal(auto.haadf, given.haadf)
    np.testing.assert_array_equal(auto.chem, given.chem)

    # reported beside the shifts (reconstruction.json's "alignment"), and in shifts.json, which reads back
    alignment = alignment_of(auto)
    assert alignment.as_dict()["tilt_axis_turn"] == record
    path = write_shifts_json(tmp_path / "shifts.json", alignment, auto.frame, auto.shape)
    written = json.loads(path.read_text())
    assert written["tilt_axis_angle"] == applied and written["tilt_axis_turn"] == record
    again = (tmp_path / "data.toml").read_text().replace('method = "com"', 'method = "file"\nfile = "shifts.json"')
    (tmp_path / "data.toml").write_text(again)
    np.testing.assert_allclose(load_series(tmp_path / "data.toml").given_alignment.shifts, alignment.shifts)


def test_auto_without_haadf_estimates_on_the_chemical_maps_summed(tmp_path, isolated):
    data = _data_file(tmp_path, isolated, 4.0, "", counts=500.0)
    text = data.read_text()
    data.write_text('tilt_axis_angle = "auto"\n' + text[text.index("[chem]") :])
    series = load_series(data)
    assert series.haadf is None and series.axis_turn["estimated_on"] == "chemical maps, summed"
    # 28-pixel maps of a few hundred counts at most: noisier than the HAADF, and the estimate with them
    assert series.axis_turn["tilt_axis_angle"] == pytest.approx(4.0, abs=0.3)


def test_auto_refines_the_turn_an_mdoc_gives(tmp_path, isolated):
    data = _data_file(tmp_path, isolated, 6.0, 'tilt_axis_angle = "auto"')
    write_mdoc(tmp_path / "haadf.mrc.mdoc", ANGLES, axis=-86.0, size=(28, 28))  # SerialEM's −86°: turned by 4°
    series = load_series(data)
    assert series.axis_turn["start_deg"] == pytest.approx(4.0)
    assert series.axis_turn["tilt_axis_angle"] == pytest.approx(6.0, abs=0.2)
    assert any("from the .mdoc's 4°" in note for note in series.notes)


def test_auto_on_a_series_it_cannot_measure_is_one_line(tmp_path, isolated):
    data = _data_file(tmp_path, isolated, 0.0, 'tilt_axis_angle = "auto"')
    write_mrc(tmp_path / "haadf.mrc", np.ones((ANGLES.size, 28, 28)), ANGLES)  # a film, no isolated specimen
    with pytest.raises(InputError) as err:
        load_series(data)
    assert str(err.value).startswith(f'data file {data}: HAADF: tilt_axis_angle = "auto": the specimen reaches')
    assert "\n" not in str(err.value)


def test_reconstruct_data_refuses_auto_on_a_film_with_exit_2_and_writes_nothing(tmp_path, isolated):
    import subprocess
    import sys

    data = _data_file(tmp_path, isolated, 0.0, 'tilt_axis_angle = "auto"')
    write_mrc(tmp_path / "haadf.mrc", np.ones((ANGLES.size, 28, 28)), ANGLES)
    result = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "reconstruct-data", str(data), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and 'tilt_axis_angle = "auto": the specimen reaches' in errors[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"automatic"', "tilt_axis_angle: give degrees within ±45 or \"auto\", got 'automatic'"),
        ("60", "tilt_axis_angle: 60° is beyond ±45°: a larger turn puts the tilt axis nearer the other direction"),
    ],
)
def test_a_tilt_axis_angle_neither_degrees_nor_auto_is_one_line(tmp_path, value, expected):
    (tmp_path / "data.toml").write_text(f'tilt_axis_angle = {value}\n[haadf]\nfile = "haadf.mrc"\n')
    with pytest.raises(InputError) as err:
        load_series(tmp_path / "data.toml")
    assert str(err.value).startswith(f"data file {tmp_path / 'data.toml'}: {expected}")
    assert "\n" not in str(err.value)


def test_reconstruct_data_records_the_turn_it_applied_without_an_alignment(tmp_path, isolated):
    from tomosweep.microscope import reconstruct_data

    data = _data_file(tmp_path, isolated, 3.0, 'tilt_axis_angle = "auto"')
    text = data.read_text().replace('method = "com"', 'method = "none"') + '[weights]\nmethod = "sirt"\nn_iter = 5\n'
    data.write_text(text)
    reconstruct_data(data, tmp_path / "r", holdout=None)
    record = json.loads((tmp_path / "r" / "reconstruction.json").read_text())
    assert record["alignment"] is None
    assert record["tilt_axis_turn"]["from"] == "auto"
    assert record["tilt_axis_turn"]["tilt_axis_angle"] == pytest.approx(3.0, abs=0.2)
