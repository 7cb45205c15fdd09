"""A user's ground-truth file: round trips in every format, and clear errors naming the file."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zarr

from tomosweep.errors import InputError
from tomosweep.phantoms import Specimen, core_shell_2d, load_specimen, nanocubes, save_specimen
from tomosweep.phantoms.files import HSPY_AXES, write_hspy

FORMATS = [".npz", ".h5", ".hdf5", ".zarr", ".hspy"]
GOOD = {"volumes": np.ones((2, 6, 6, 6)), "elements": np.array(["Co", "O"])}


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_atomic_fractions(tmp_path, suffix):
    original = nanocubes(20, rng=3)
    path = save_specimen(original, tmp_path / f"spec{suffix}")
    loaded = load_specimen(path)
    assert loaded.name == f"file:{path}"
    assert loaded.elements == original.elements
    assert loaded.z == original.z
    assert loaded.units == "atomic fraction"
    np.testing.assert_array_equal(loaded.volumes, original.volumes)
    assert loaded.weight_fractions is None and loaded.density is None
    assert loaded.info["seed"] == 3 and loaded.info["source_file"] == str(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_partial_densities_with_weight_fractions(tmp_path, suffix):
    original = core_shell_2d(24)
    loaded = load_specimen(save_specimen(original, tmp_path / f"cs{suffix}"))
    assert loaded.units == "g/cm^3"
    assert loaded.volumes.shape == (2, 24, 24, 1)
    np.testing.assert_array_equal(loaded.volumes, original.volumes)
    np.testing.assert_array_equal(loaded.weight_fractions, original.weight_fractions)
    np.testing.assert_array_equal(loaded.density, original.density)


def test_hspy_is_a_hyperspy_signal_with_axes_units_and_element_names(tmp_path):
    from rsciio.hspy import file_reader

    volumes = np.random.default_rng(0).random((2, 8, 8, 5))  # (element, y, z, x): x along the tilt axis
    write_hspy(tmp_path / "v.hspy", volumes, ("Co", "O"), pixel_size_nm=0.4, tomosweep={"method": "fused"})
    [signal] = file_reader(str(tmp_path / "v.hspy"))
    np.testing.assert_array_equal(signal["data"], volumes.transpose(0, 2, 1, 3))
    axes = signal["axes"]
    assert tuple(a["name"] for a in axes) == HSPY_AXES == ("element", "z", "y", "x")
    assert [a["navigate"] for a in axes] == [True, True, False, False]  # HyperSpy: a stack of (y, x) images
    assert [a.get("units") for a in axes] == [None, "nm", "nm", "nm"]
    assert [float(a["scale"]) for a in axes] == [1.0, 0.4, 0.4, 0.4]
    metadata = signal["metadata"]
    assert metadata["General"]["title"] == "Co, O"
    assert list(metadata["Sample"]["elements"]) == ["Co", "O"]
    assert metadata["Tomosweep"]["method"] == "fused" and metadata["Tomosweep"]["written_by"] == "tomosweep"


def test_hspy_of_another_layout_is_refused_with_the_expected_axes(tmp_path):
    path = write_hspy(tmp_path / "v.hspy", np.ones((1, 4, 4, 4)), ("Co",))
    with h5py.File(path, "a") as f:
        f["Experiments/Co/axis-1"].attrs["name"] = "tilt"
    with pytest.raises(InputError, match=r"axes \('element', 'tilt', 'y', 'x'\), expected \('element', 'z'"):
        load_specimen(path)


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    spec = core_shell_2d(16)
    path = save_specimen(spec, tmp_path / "a.npz")
    with pytest.raises(InputError, match="already exists; pass overwrite=True") as info:
        save_specimen(spec, path)
    assert str(path) in str(info.value)
    assert save_specimen(spec, path, overwrite=True) == path
    with pytest.raises(InputError, match="unsupported file type '.mat'"):
        save_specimen(spec, tmp_path / "a.mat")
    with pytest.raises(InputError, match="needs a Specimen"):
        save_specimen(spec.volumes, tmp_path / "b.npz")


# ---------------------------------------------------------------- hand-made files


def test_two_dimensional_volumes_and_defaults(tmp_path):
    path = tmp_path / "slice.npz"
    np.savez(path, volumes=np.ones((2, 8, 8)), elements=np.array(["Ag", "Au"]))
    spec = load_specimen(path)
    assert spec.volumes.shape == (2, 8, 8, 1)
    assert spec.z == (47.0, 79.0)
    assert spec.units == "atomic fraction"
    assert isinstance(spec, Specimen) and spec.volumes.dtype == np.float64


def test_explicit_atomic_numbers_are_used(tmp_path):
    path = tmp_path / "z.npz"
    np.savez(path, **GOOD, z=np.array([27, 8.5]))
    assert load_specimen(path).z == (27.0, 8.5)


def test_non_cubic_volume_keeps_its_length_along_the_tilt_axis(tmp_path):
    path = tmp_path / "long.npz"
    np.savez(path, volumes=np.ones((1, 6, 6, 10)), elements=np.array(["Au"]))
    assert load_specimen(path).volumes.shape == (1, 6, 6, 10)


@pytest.mark.parametrize("suffix", [".h5", ".hdf5"])
def test_hdf5_elements_stored_as_bytes(tmp_path, suffix):
    path = tmp_path / f"bytes{suffix}"
    with h5py.File(path, "w") as f:
        f["volumes"] = GOOD["volumes"]
        f["elements"] = np.array([b"Co", b"O"])  # fixed-length byte strings
        f["units"] = "atomic fraction"
    spec = load_specimen(path)
    assert spec.elements == ("Co", "O") and spec.z == (27.0, 8.0)


def test_zarr_elements_as_string_array_or_attribute(tmp_path):
    as_array = zarr.open_group(tmp_path / "array.zarr", mode="w")
    as_array.create_array("volumes", data=GOOD["volumes"])
    as_array.create_array("elements", shape=(2,), dtype=str)[...] = np.array(["Co", "O"])
    as_attr = zarr.open_group(tmp_path / "attr.zarr", mode="w")
    as_attr.create_array("volumes", data=GOOD["volumes"])
    as_attr.attrs["elements"] = ["Co", "O"]
    as_json = zarr.open_group(tmp_path / "json.zarr", mode="w")
    as_json.create_array("volumes", data=GOOD["volumes"])
    as_json.attrs["elements"] = json.dumps(["Co", "O"])
    for name in ("array.zarr", "attr.zarr", "json.zarr"):
        assert load_specimen(tmp_path / name).elements == ("Co", "O")


# ---------------------------------------------------------------- bad files


def _npz(tmp_path, name="bad.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"elements": GOOD["elements"]}, "missing 'volumes'"),
        ({"volumes": GOOD["volumes"]}, "missing 'elements'"),
        ({**GOOD, "volumes": np.ones((2, 6))}, "must be \\(n_elements, n, n, n\\)"),
        ({**GOOD, "volumes": np.ones((2, 6, 6, 6, 6))}, "got 5-D shape"),
        ({**GOOD, "volumes": np.ones((2, 6, 5, 6))}, "slices must be square"),
        ({**GOOD, "volumes": -np.ones((2, 6, 6, 6))}, "non-negative"),
        ({**GOOD, "volumes": np.full((2, 6, 6, 6), np.nan)}, "NaN"),
        ({**GOOD, "volumes": np.full((2, 6, 6, 6), np.inf)}, "infinite"),
        ({**GOOD, "volumes": np.full((2, 6, 6, 6), "a")}, "'volumes' must be numeric"),
        ({**GOOD, "elements": np.array(["Co", "Xy"])}, "unknown element symbol 'Xy'"),
        ({**GOOD, "elements": np.array(["Co", "o"])}, "did you mean 'O'"),
        ({**GOOD, "elements": np.array(["Co", "Co"])}, "duplicate element symbols"),
        ({**GOOD, "elements": np.array(["Co"])}, "1 element symbols for 2 volumes"),
        ({**GOOD, "elements": np.array([27, 8])}, "'elements' must hold chemical symbols"),
        ({**GOOD, "z": np.array([27.0])}, "one positive atomic number per element"),
        ({**GOOD, "z": np.array([27.0, -8.0])}, "one positive atomic number per element"),
        ({**GOOD, "weight_fractions": np.ones((2, 5, 5, 5))}, "'weight_fractions' has shape"),
        ({**GOOD, "info": np.array("not json")}, "'info' must be a JSON object"),
    ],
)
def test_bad_npz_files_are_clear_errors_naming_the_file(tmp_path, arrays, message):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(InputError, match=message) as info:
        load_specimen(path)
    assert str(path) in str(info.value)


def test_missing_unsupported_and_corrupt_files(tmp_path):
    for path, message in [
        (tmp_path / "absent.npz", "no such file"),
        (tmp_path / "absent.zarr", "no such file"),
        (tmp_path / "x.tif", "unsupported file type '.tif'; use one of .npz, .h5, .hdf5, .zarr, .hspy"),
        (tmp_path / "noext", "unsupported file type '\\(none\\)'"),
    ]:
        with pytest.raises(InputError, match=message) as info:
            load_specimen(path)
        assert str(path) in str(info.value)

    corrupt_h5 = tmp_path / "corrupt.h5"
    corrupt_h5.write_bytes(b"definitely not HDF5")
    corrupt_npz = tmp_path / "corrupt.npz"
    corrupt_npz.write_bytes(b"definitely not a zip archive")
    empty_zarr = tmp_path / "empty.zarr"
    empty_zarr.mkdir()
    corrupt_hspy = tmp_path / "corrupt.hspy"
    corrupt_hspy.write_bytes(b"definitely not HDF5")
    for path, message in [
        (corrupt_h5, "cannot be read as h5"),
        (corrupt_npz, "cannot be read as npz"),
        (empty_zarr, "cannot be read as zarr"),
        (corrupt_hspy, "cannot be read as hspy"),
    ]:
        with pytest.raises(InputError, match=message) as info:
            load_specimen(path)
        assert str(path) in str(info.value)


def test_pickled_npz_is_refused(tmp_path):
    path = _npz(tmp_path, volumes=GOOD["volumes"], elements=np.array(["Co", "O"], dtype=object))
    with pytest.raises(InputError, match="cannot be read as npz") as info:
        load_specimen(path)
    assert str(path) in str(info.value)


def test_missing_keys_in_hdf5_and_zarr(tmp_path):
    h5_path = tmp_path / "nokey.h5"
    with h5py.File(h5_path, "w") as f:
        f["elements"] = np.array([b"Co", b"O"])
    zarr_path = tmp_path / "nokey.zarr"
    zarr.open_group(zarr_path, mode="w").create_array("volumes", data=GOOD["volumes"])
    for path, message in [(h5_path, "missing 'volumes'"), (zarr_path, "missing 'elements'")]:
        with pytest.raises(InputError, match=message) as info:
            load_specimen(path)
        assert str(path) in str(info.value)


def test_hdf5_group_where_a_dataset_belongs(tmp_path):
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as f:
        f.create_group("volumes")
        f["elements"] = np.array([b"Co", b"O"])
    with pytest.raises(InputError, match="'volumes' is a group, expected a dataset") as info:
        load_specimen(path)
    assert str(path) in str(info.value)


def test_zarr_bad_values_are_checked_like_npz(tmp_path):
    path = tmp_path / "neg.zarr"
    group = zarr.open_group(path, mode="w")
    group.create_array("volumes", data=-GOOD["volumes"])
    group.attrs["elements"] = ["Co", "O"]
    with pytest.raises(InputError, match="non-negative") as info:
        load_specimen(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".zarr", ".hspy"])
def test_overwrite_replaces_only_what_tomosweep_wrote(tmp_path, suffix):
    spec = core_shell_2d(16)
    ours = save_specimen(spec, tmp_path / f"ours{suffix}")
    assert save_specimen(spec, ours, overwrite=True) == ours  # our own file: replaced
    foreign = tmp_path / f"theirs{suffix}"
    if suffix == ".npz":
        np.savez(foreign, volumes=spec.volumes, elements=np.asarray(spec.elements))
    elif suffix == ".h5":
        with h5py.File(foreign, "w") as f:
            f.create_dataset("volumes", data=spec.volumes)
    elif suffix == ".hspy":  # a HyperSpy signal of the same layout, but not tomosweep's
        write_hspy(foreign, spec.volumes, spec.elements)
        with h5py.File(foreign, "a") as f:
            del f[f"Experiments/{', '.join(spec.elements)}/metadata/Tomosweep"]
    else:
        zarr.open_group(foreign, mode="w").create_array("volumes", data=spec.volumes)
    before = sorted(p.name for p in foreign.rglob("*")) if foreign.is_dir() else foreign.read_bytes()
    with pytest.raises(InputError, match="tomosweep did not write; overwrite replaces only"):
        save_specimen(spec, foreign, overwrite=True)
    after = sorted(p.name for p in foreign.rglob("*")) if foreign.is_dir() else foreign.read_bytes()
    assert after == before


def test_overwrite_never_replaces_a_sweep_store(tmp_path):
    from tomosweep.results import SweepStore

    store = tmp_path / "S.zarr"
    SweepStore.create(
        store,
        spec={},
        spec_hash="x",
        methods=["sirt"],
        param_names=["n_iter"],
        elements=["Co"],
        n_haadf=[5],
        n_chem=[3],
    ).close()
    with pytest.raises(InputError, match="is a tomosweep sweep store"):
        save_specimen(core_shell_2d(16), store, overwrite=True)
    assert SweepStore.open(store).n_committed == 0
