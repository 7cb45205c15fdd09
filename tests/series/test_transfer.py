"""Alignments in: IMOD .xf, ETSpy .hspy and tomosweep shifts.json, each by its own tool's definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tomosweep.errors import InputError
from tomosweep.series import apply_shifts, load_series, write_mrc, write_rawtlt
from tomosweep.series.align import Alignment
from tomosweep.series.transfer import SHIFTS_FORMAT, Frame, write_imod_xf, write_shifts_json

ANGLES = np.array([-10.0, -5.0, 0.0, 5.0, 10.0])  # under 30°: the tilt-axis check stays out of the way
ROWS, COLS = 32, 40
BLOB = (14.0, 18.0)  # (row, column) of the specimen in every raw image
D = np.array([[3.0, -2.0], [1.5, 0.5], [0.0, 0.0], [-2.25, 1.0], [0.75, 2.5]])  # IMOD (DX, DY) per tilt


def _blob(rows: int = ROWS, cols: int = COLS, at: tuple[float, float] = BLOB) -> np.ndarray:
    r, c = np.mgrid[:rows, :cols]
    return 100.0 * np.exp(-((r - at[0]) ** 2 + (c - at[1]) ** 2) / (2 * 2.0**2))


def _com(image: np.ndarray) -> np.ndarray:
    """(row, column) centre of mass."""
    r, c = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(image * r).sum(), (image * c).sum()]) / image.sum()


def _series(tmp_path, *, rows: int = ROWS, cols: int = COLS, at=BLOB, extra: str = "", align: str = "") -> object:
    stack = np.stack([_blob(rows, cols, at)] * ANGLES.size).astype(np.float32)
    write_mrc(tmp_path / "raw.mrc", stack, ANGLES)
    (tmp_path / "data.toml").write_text(
        f'{extra}\n[haadf]\nfile = "raw.mrc"\nbackground = 0\ndose = "constant"\n[align]\nmethod = "file"\n{align}\n'
    )
    return tmp_path / "data.toml"


def _xf(path, matrices: np.ndarray, d: np.ndarray, angles: np.ndarray = ANGLES) -> None:
    lines = [
        f"{a[0, 0]:.7f} {a[0, 1]:.7f} {a[1, 0]:.7f} {a[1, 1]:.7f} {x:.3f} {y:.3f}\n"
        for a, (x, y) in zip(matrices, d, strict=True)
    ]
    path.write_text("".join(lines))
    write_rawtlt(path.with_suffix(".tlt"), angles)


def _rotation(degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def _aligned(data) -> np.ndarray:
    series = load_series(data)
    assert series.given_alignment is not None and series.given_alignment.method == "file"
    return apply_shifts(series.haadf, series.given_alignment.shifts, nonnegative=False)


def test_imod_xf_moves_each_image_as_imod_does(tmp_path):
    """x' = A x + d: with A = 1 the specimen at (column, row) lands at (column + DX, row + DY)."""
    _xf(tmp_path / "raw.xf", np.stack([np.eye(2)] * 5), D)
    aligned = _aligned(_series(tmp_path, align='file = "raw.xf"'))
    for image, (dx, dy) in zip(aligned, D, strict=True):
        np.testing.assert_allclose(_com(image), [BLOB[0] + dy, BLOB[1] + dx], atol=0.02)


def test_imod_xf_on_a_vertical_binned_series(tmp_path):
    """IMOD's layout (axis along the rows), bin 2: DX runs across the axis, DY along it, both halved."""
    _xf(tmp_path / "raw.xf", np.stack([np.eye(2)] * 5), D)
    data = _series(
        tmp_path,
        rows=COLS,
        cols=ROWS,
        at=(18.0, 14.0),
        extra='tilt_axis = "vertical"\nbin = 2',
        align='file = "raw.xf"',
    )
    aligned = _aligned(data)
    for image, (dx, dy) in zip(aligned, D, strict=True):
        # a binned pixel J covers raw pixels 2J and 2J + 1: raw u is binned (u − 0.5) / 2
        np.testing.assert_allclose(_com(image), [(14.0 + dx - 0.5) / 2, (18.0 + dy - 0.5) / 2], atol=0.03)


def test_imod_xf_rotation_must_be_the_data_files_turn(tmp_path):
    _xf(tmp_path / "raw.xf", np.stack([_rotation(3.0)] * 5), D)
    with pytest.raises(
        InputError, match=r"as tilt_axis_angle = -3\.000 does.*set tilt_axis_angle = -3\.000"
    ) as refused:
        load_series(_series(tmp_path, align='file = "raw.xf"'))
    assert "\n" not in str(refused.value)
    aligned = _aligned(_series(tmp_path, extra="tilt_axis_angle = -3.0", align='file = "raw.xf"'))
    centre = np.array([(COLS - 1) / 2, (ROWS - 1) / 2])
    for image, d in zip(aligned, D, strict=True):
        col, row = _rotation(3.0) @ (np.array([BLOB[1], BLOB[0]]) - centre) + centre + d
        np.testing.assert_allclose(_com(image), [row, col], atol=0.05)


@pytest.mark.parametrize(
    ("lines", "angles", "message"),
    [
        (4, ANGLES[:4], "4 tilts, the series 5"),
        (5, ANGLES + 2.0, "do not match the series"),
        (5, None, "needs its tilt angles beside it"),
    ],
)
def test_imod_xf_that_does_not_fit_is_refused(tmp_path, lines, angles, message):
    _xf(tmp_path / "raw.xf", np.stack([np.eye(2)] * lines), D[:lines], ANGLES[:lines] if angles is None else angles)
    if angles is None:
        (tmp_path / "raw.tlt").unlink()
    with pytest.raises(InputError, match=message) as refused:
        load_series(_series(tmp_path, align='file = "raw.xf"'))
    assert "\n" not in str(refused.value)


def test_imod_xf_that_scales_is_refused(tmp_path):
    _xf(tmp_path / "raw.xf", np.stack([1.01 * np.eye(2)] * 5), D)
    with pytest.raises(InputError, match="scale, skew or turn"):
        load_series(_series(tmp_path, align='file = "raw.xf"'))


def _etspy(path, shifts: np.ndarray, *, tiltaxis=0.0, xshift=0.0, yshift=0.0, shape=(ROWS, COLS), angles=ANGLES):
    """An .hspy as ETSpy saves a TomoStack: metadata.Tomography with the shifts and tilts as signals."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["file_format"] = "HyperSpy"
        group = f.create_group("Experiments/__unnamed__")
        group.create_dataset("data", data=np.zeros((angles.size, *shape), np.float32))
        for i, (name, size, nav) in enumerate(
            [("Projections", angles.size, True), ("y", shape[0], False), ("x", shape[1], False)]
        ):
            axis = group.create_group(f"axis-{i}")
            axis.attrs.update(name=name, size=size, navigate=nav)
        tomo = group.create_group("metadata/Tomography")
        tomo.attrs.update(tiltaxis=tiltaxis, xshift=xshift, yshift=yshift, cropped=False)
        tomo.create_dataset("_sig_shifts/data", data=shifts)
        tomo.create_dataset("_sig_tilts/data", data=angles[:, None])


S_E = np.array([[-2.0, 1.0], [0.5, -1.5], [0.0, 0.0], [1.25, 2.0], [-0.75, 0.5]])  # ETSpy (across, along) per tilt


def test_etspy_shifts_then_trans_stack_as_etspy_applies_them(tmp_path):
    """aligned(p) = raw(p − s), then trans_stack's (xshift, −yshift) in (column, row)."""
    _etspy(tmp_path / "stack.hspy", S_E, xshift=1.5, yshift=0.75)
    aligned = _aligned(_series(tmp_path, align='file = "stack.hspy"'))
    for image, (s_row, s_col) in zip(aligned, S_E, strict=True):
        np.testing.assert_allclose(_com(image), [BLOB[0] + s_row - 0.75, BLOB[1] + s_col + 1.5], atol=0.02)


def test_etspy_tilt_axis_turn(tmp_path):
    """trans_stack turns by tiltaxis about shape/2 after the shifts: tomosweep turns by −tiltaxis first."""
    _etspy(tmp_path / "stack.hspy", S_E, tiltaxis=-2.5, xshift=1.0, yshift=0.5)
    with pytest.raises(InputError, match=r"as tilt_axis_angle = 2\.500 does.*set tilt_axis_angle = 2\.500"):
        load_series(_series(tmp_path, align='file = "stack.hspy"'))
    aligned = _aligned(_series(tmp_path, extra="tilt_axis_angle = 2.5", align='file = "stack.hspy"'))
    centre = np.array([COLS / 2, ROWS / 2])
    for image, (s_row, s_col) in zip(aligned, S_E, strict=True):
        moved = np.array([BLOB[1] + s_col, BLOB[0] + s_row])
        col, row = _rotation(-2.5) @ (moved - centre) + centre + np.array([1.0, -0.5])
        np.testing.assert_allclose(_com(image), [row, col], atol=0.05)


def test_etspy_stack_of_another_size_is_refused(tmp_path):
    _etspy(tmp_path / "stack.hspy", S_E, shape=(ROWS // 2, COLS // 2))
    with pytest.raises(InputError, match=r"its images are 16 × 20 pixels.*other pixels"):
        load_series(_series(tmp_path, align='file = "stack.hspy"'))


def test_shifts_json_follows_bin_and_refuses_another_turn(tmp_path):
    shifts = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 0.0], [-1.0, 1.0], [2.0, 0.5]])
    alignment = Alignment(ANGLES, shifts, 0.0, "projmatch", np.zeros(5), np.zeros(5))
    write_shifts_json(tmp_path / "shifts.json", alignment, Frame("horizontal", 0.0, 1, (ROWS, COLS)), (ROWS, COLS))
    series = load_series(_series(tmp_path, extra="bin = 2", align='file = "shifts.json"'))
    np.testing.assert_allclose(series.given_alignment.shifts, shifts / 2)
    with pytest.raises(InputError, match=r"as tilt_axis_angle = 0\.000 does.*set tilt_axis_angle = 0\.000"):
        load_series(_series(tmp_path, extra="tilt_axis_angle = 1.0", align='file = "shifts.json"'))
    write_shifts_json(
        tmp_path / "shifts.json", alignment, Frame("horizontal", 0.0, 1, (ROWS, 2 * COLS)), (ROWS, 2 * COLS)
    )
    with pytest.raises(InputError, match="it aligns another series"):
        load_series(_series(tmp_path, align='file = "shifts.json"'))


def test_imod_xf_written_reads_back(tmp_path):
    shifts = np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 0.0], [-1.0, 1.0], [2.0, 0.5]])
    alignment = Alignment(ANGLES, shifts, 0.0, "projmatch", np.zeros(5), np.zeros(5))
    write_imod_xf(tmp_path / "raw.xf", alignment, Frame("vertical", 1.5, 2, (COLS, ROWS)))
    data = _series(
        tmp_path,
        rows=COLS,
        cols=ROWS,
        extra='tilt_axis = "vertical"\ntilt_axis_angle = 1.5\nbin = 2',
        align='file = "raw.xf"',
    )
    np.testing.assert_allclose(load_series(data).given_alignment.shifts, shifts, atol=1e-5)


@pytest.mark.parametrize(
    ("align", "message"),
    [('method = "file"', "needs align.file"), ('method = "xcorr"\nfile = "a.xf"', 'read with align.method = "file"')],
)
def test_file_and_method_go_together(tmp_path, align, message):
    stack = np.stack([_blob()] * ANGLES.size).astype(np.float32)
    write_mrc(tmp_path / "raw.mrc", stack, ANGLES)
    (tmp_path / "data.toml").write_text(f'[haadf]\nfile = "raw.mrc"\n[align]\n{align}\n')
    with pytest.raises(InputError, match=message):
        load_series(tmp_path / "data.toml")


def test_a_misfit_alignment_file_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from tomosweep import cli

    _xf(tmp_path / "raw.xf", np.stack([np.eye(2)] * 4), D[:4], ANGLES[:4])
    data = _series(tmp_path, align='file = "raw.xf"')
    monkeypatch.setattr("sys.argv", ["tomosweep", "reconstruct-data", str(data), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    shown = " ".join(captured.err.split())  # the terminal wraps one line at its width
    assert shown.startswith("error:") and "4 tilts, the series 5" in shown and not (tmp_path / "out").exists()


def _shifts_record(**changes) -> dict:
    record = {
        "format": SHIFTS_FORMAT,
        "angles": [float(a) for a in ANGLES],
        "shift_det_px": [0.5, 0.0, 0.0, -0.5, 0.25],
        "shift_x_px": [0.0, 0.25, 0.0, 0.0, -0.25],
        "shape": [ROWS, COLS],
        "tilt_axis": "horizontal",
        "tilt_axis_angle": 0.0,
        "bin": 1,
    }
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, ""),  # the record as written: read
        ('{"bin": Infinity}', "not a tomosweep shifts.json"),
        ('{"bin": 1e400}', "not a tomosweep shifts.json"),
        ('{"bin": 1.9}', "not a tomosweep shifts.json"),
        ('{"shape": [Infinity, 40]}', "not a tomosweep shifts.json"),
        ('{"shape": [32]}', "not a tomosweep shifts.json"),
        ('{"shape": [32, 40, 1]}', "not a tomosweep shifts.json"),
        ('{"angles": [[-10], [-5], [0], [5], [10]]}', "not a tomosweep shifts.json"),
        ('{"tilt_axis_angle": NaN}', "not a tomosweep shifts.json"),
        ('{"shift_det_px": [NaN, 0, 0, 0, 0]}', "not numbers"),
        ("[" * 100000 + "]" * 100000, "not a tomosweep shifts.json"),
    ],
)
def test_a_shifts_json_that_is_not_one_is_one_line(tmp_path, text, message):
    import json

    record = _shifts_record()
    if text is not None and text.startswith("{"):
        body = json.dumps(record)[:-1] + ", " + text[1:]  # the change, in JSON's own spelling (NaN, Infinity)
    else:
        body = json.dumps(record) if text is None else text
    (tmp_path / "shifts.json").write_text(body)
    data = _series(tmp_path, align='file = "shifts.json"')
    if text is None:
        assert load_series(data).given_alignment is not None
        return
    with pytest.raises(InputError, match=message) as refused:
        load_series(data)
    assert "\n" not in str(refused.value) and "shifts.json" in str(refused.value)


def _etspy_changed(path, change: str) -> None:
    import h5py

    shifts = S_E.copy()
    if change == "nan shifts":
        shifts[1, 0] = np.nan
    if change == "four shifts":
        shifts = shifts[:4]
    _etspy(path, shifts)
    with h5py.File(path, "r+") as f:
        group = f["Experiments/__unnamed__"]
        tomo = group["metadata/Tomography"]
        if change == "text tiltaxis":
            tomo.attrs["tiltaxis"] = "abc"
        elif change == "two tiltaxes":
            tomo.attrs["tiltaxis"] = np.array([1.0, 2.0])
        elif change == "nan xshift":
            tomo.attrs["xshift"] = np.nan
        elif change == "size missing":
            del group["axis-1"].attrs["size"]
        elif change == "text size":
            group["axis-1"].attrs["size"] = "abc"
        elif change == "Tomography a dataset":
            del group["metadata/Tomography"]
            group["metadata"].create_dataset("Tomography", data=np.zeros(3))
        elif change == "text shifts":
            del tomo["_sig_shifts/data"]
            tomo.create_dataset("_sig_shifts/data", data=np.array([[b"a", b"b"]] * 5))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("nan shifts", "not numbers"),
        ("four shifts", "4 shifts but 5 tilts"),
        ("text tiltaxis", "not as ETSpy writes it"),
        ("two tiltaxes", "not as ETSpy writes it"),
        ("nan xshift", "not as ETSpy writes it"),
        ("size missing", "not as ETSpy writes it"),
        ("text size", "not as ETSpy writes it"),
        ("Tomography a dataset", "no signal with ETSpy's metadata.Tomography"),
        ("text shifts", "not as ETSpy writes it"),
    ],
)
def test_an_etspy_file_not_as_etspy_writes_it_is_one_line(tmp_path, change, message):
    _etspy_changed(tmp_path / "stack.hspy", change)
    with pytest.raises(InputError, match=message) as refused:
        load_series(_series(tmp_path, align='file = "stack.hspy"'))
    assert "\n" not in str(refused.value) and "stack.hspy" in str(refused.value)


@pytest.mark.parametrize("line", ['file = "a\\u0000.xf"', 'file = "loop.json"'])  # a NUL; a link to itself
def test_an_alignment_path_that_cannot_be_used_is_one_line(tmp_path, line):
    (tmp_path / "loop.json").symlink_to("loop.json")
    with pytest.raises(InputError, match="cannot be used") as refused:
        load_series(_series(tmp_path, align=line))
    assert "\n" not in str(refused.value)
