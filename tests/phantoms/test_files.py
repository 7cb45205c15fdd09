"""A user's ground-truth file: round trips in every format, and clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from tomosweep.errors import InputError
from tomosweep.phantoms import core_shell_2d, load_specimen, nanocubes, save_specimen


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".hdf5", ".zarr"])
def test_round_trip(tmp_path, suffix):
    original = nanocubes(20, rng=3)
    path = save_specimen(original, tmp_path / f"spec{suffix}")
    loaded = load_specimen(path)
    assert loaded.elements == original.elements
    assert loaded.z == original.z
    assert loaded.units == original.units
    np.testing.assert_array_equal(loaded.volumes, original.volumes)
    assert loaded.name == f"file:{path}"


def test_two_dimensional_volumes_and_defaults(tmp_path):
    path = tmp_path / "slice.npz"
    np.savez(path, volumes=np.ones((2, 8, 8)), elements=np.array(["Ag", "Au"]))
    spec = load_specimen(path)
    assert spec.volumes.shape == (2, 8, 8, 1)
    assert spec.z == (47.0, 79.0)
    assert spec.units == "atomic fraction"


def test_partial_density_units_survive(tmp_path):
    original = core_shell_2d(24)
    loaded = load_specimen(save_specimen(original, tmp_path / "cs.h5"))
    assert loaded.units == "g/cm^3"


def _npz(tmp_path, name="bad.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


GOOD = {"volumes": np.ones((2, 6, 6, 6)), "elements": np.array(["Co", "O"])}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"elements": GOOD["elements"]}, "missing 'volumes'"),
        ({"volumes": GOOD["volumes"]}, "missing 'elements'"),
        ({**GOOD, "volumes": np.ones((2, 6))}, "must be \\(n_elements, n, n, n\\)"),
        ({**GOOD, "volumes": np.ones((2, 6, 5, 6))}, "slices must be square"),
        ({**GOOD, "volumes": -np.ones((2, 6, 6, 6))}, "non-negative"),
        ({**GOOD, "volumes": np.full((2, 6, 6, 6), np.nan)}, "NaN"),
        ({**GOOD, "elements": np.array(["Co", "Xy"])}, "unknown element symbol 'Xy'"),
        ({**GOOD, "elements": np.array(["Co"])}, "1 element symbols for 2 volumes"),
        ({**GOOD, "z": np.array([27.0])}, "one positive atomic number per element"),
    ],
)
def test_bad_files_are_clear_errors_naming_the_file(tmp_path, arrays, message):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(InputError, match=message) as info:
        load_specimen(path)
    assert str(path) in str(info.value)


def test_missing_unsupported_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_specimen(tmp_path / "absent.npz")
    with pytest.raises(InputError, match="unsupported file type '.tif'"):
        load_specimen(tmp_path / "x.tif")
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"definitely not HDF5")
    with pytest.raises(InputError, match="cannot be read as h5"):
        load_specimen(corrupt)
