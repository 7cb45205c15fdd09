"""Reading measured series: every container, angles from headers and text, layout, binning, validation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from tomosweep.errors import InputError
from tomosweep.series import load_series, read_stack, write_mrc, write_rawtlt

ANGLES = np.array([-60.0, -35.5, -12.25, 0.0, 20.0, 47.75, 60.0])


def _stack(seed: int, n: int = ANGLES.size, shape: tuple[int, int] = (12, 10)) -> np.ndarray:
    return np.random.default_rng(seed).poisson(20.0, size=(n, *shape)).astype(np.float64)


def _write(path, text: str):
    path.write_text(text)
    return path


def test_mrc_with_serialem_angles_round_trips(tmp_path):
    stack = _stack(0)
    write_mrc(tmp_path / "s.mrc", stack, ANGLES)
    data, angles = read_stack(tmp_path / "s.mrc")
    np.testing.assert_allclose(data, stack)
    np.testing.assert_allclose(angles, ANGLES, atol=0.005)


def test_every_container_reads_to_the_same_series(tmp_path):
    haadf, co, o = _stack(1) * 100, _stack(2), _stack(3)
    write_mrc(tmp_path / "haadf.st", haadf, ANGLES)
    tifffile.imwrite(tmp_path / "co.tif", co.astype(np.float32))
    write_rawtlt(tmp_path / "chem.rawtlt", ANGLES)
    with h5py.File(tmp_path / "maps.emd", "w") as f:
        f.create_dataset("data/O/stack", data=o)
        f["data/O/stack"].attrs["tilt_angles"] = ANGLES
    _write(
        tmp_path / "data.toml",
        """
[haadf]
file = "haadf.st"
background = 0
[chem]
angles = "chem.rawtlt"
background = 1.5
[chem.elements]
Co = "co.tif"
O = { file = "maps.emd", dataset = "data/O/stack", angles = "header" }
""",
    )
    series = load_series(tmp_path / "data.toml")
    assert series.elements == ("Co", "O")
    np.testing.assert_allclose(series.haadf, haadf, rtol=1e-6)
    np.testing.assert_allclose(series.chem[0], co)
    np.testing.assert_allclose(series.chem[1], o)
    np.testing.assert_allclose(series.chem_angles, ANGLES, atol=0.005)
    assert series.chem_background == (1.5, 1.5)
    assert len(series.sources) == 4 and all(len(h) == 64 for h in series.sources.values())


def test_npz_angles_vertical_axis_and_binning(tmp_path):
    chem = _stack(4, shape=(10, 12))
    order = np.array([3, 0, 6, 1, 5, 2, 4])  # stored out of order: read back sorted by angle
    np.savez(tmp_path / "cu.npz", maps=chem[order], angles=ANGLES[order])
    _write(
        tmp_path / "data.toml",
        """
tilt_axis = "vertical"
bin = 2
[chem]
[chem.elements]
Cu = { file = "cu.npz", dataset = "maps" }
""",
    )
    series = load_series(tmp_path / "data.toml")
    expected = chem.transpose(0, 2, 1).reshape(7, 6, 2, 5, 2).sum(axis=(2, 4))
    np.testing.assert_allclose(series.chem_angles, ANGLES)
    np.testing.assert_allclose(series.chem[0], expected)
    assert series.shape == (6, 5)


def test_every_problem_is_reported_at_once(tmp_path):
    np.savez(tmp_path / "haadf.npz", series=np.full((7, 8, 8), np.nan), angles=ANGLES)
    np.savez(tmp_path / "co.npz", maps=-_stack(5, shape=(8, 8)))
    np.savez(tmp_path / "xx.npz", maps=_stack(6, n=5, shape=(8, 8)))
    write_rawtlt(tmp_path / "chem.rawtlt", ANGLES)
    _write(
        tmp_path / "data.toml",
        """
[haadf]
file = "haadf.npz"
[chem]
angles = "chem.rawtlt"
[chem.elements]
co = "co.npz"
Xx = "xx.npz"
Cu = "missing.mrc"
""",
    )
    with pytest.raises(InputError) as err:
        load_series(tmp_path / "data.toml")
    text = str(err.value)
    assert "6 problems" in text, text
    assert "unknown element symbol 'Xx'" in text
    assert "HAADF: 448 values are NaN" in text
    assert "unknown element symbol 'co' (did you mean 'Co'?)" in text
    assert "chemical map co: chemical maps are counts and must be ≥ 0" in text
    assert "chemical map Xx: 5 images but 7 angles" in text
    assert "missing.mrc: no such file" in text


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[chem]\nangles = [0]\n[chem.elements]\n", "name at least one element"),
        ("[chem]\nangles = [0]\nelements = {Co = 'c.npz'}\nshift = 3\n", "unknown key 'shift' in [chem]"),
        ("bin = 0\n[chem]\nelements = {Co = 'c.npz'}\n", "bin: must be greater than or equal to 1 (got 0)"),
        ("[chem\n", "not valid TOML"),
    ],
)
def test_malformed_data_files_say_what_is_wrong(tmp_path, toml, message):
    _write(tmp_path / "data.toml", toml)
    with pytest.raises(InputError, match="data file") as err:
        load_series(tmp_path / "data.toml")
    assert message in str(err.value)


def test_angles_from_the_header_must_exist(tmp_path):
    tifffile.imwrite(tmp_path / "co.tif", _stack(7).astype(np.float32))
    _write(tmp_path / "data.toml", '[chem]\n[chem.elements]\nCo = "co.tif"\n')
    with pytest.raises(InputError, match="holds no tilt angles; give angles"):
        load_series(tmp_path / "data.toml")


def test_mismatched_sizes_and_tilts_between_elements(tmp_path):
    np.savez(tmp_path / "a.npz", maps=_stack(8, shape=(8, 8)), angles=ANGLES)
    np.savez(tmp_path / "b.npz", maps=_stack(9, shape=(8, 6)), angles=ANGLES + 1)
    _write(tmp_path / "data.toml", '[chem]\n[chem.elements]\nCo = "a.npz"\nO = "b.npz"\n')
    with pytest.raises(InputError) as err:
        load_series(tmp_path / "data.toml")
    assert "same size" in str(err.value) and "Co 8×8, O 8×6" in str(err.value)


def test_the_commented_example_is_a_valid_data_file():
    import tomllib
    from pathlib import Path

    from tomosweep.series import DataFile

    example = Path(__file__).parents[2] / "examples" / "measured_data.toml"
    spec = DataFile.model_validate(tomllib.loads(example.read_text()))
    assert set(spec.chem.elements) == {"Co", "Cu", "O"} and spec.align.method == "projmatch"
