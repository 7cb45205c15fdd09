"""Hostile and unlucky data files: each is refused with one exact line, never read wrongly, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import h5py
import mrcfile
import numpy as np
import pytest

from tomosweep.errors import InputError
from tomosweep.series import load_series, write_mrc

ANGLES = [-60.0, -30.0, 0.0, 30.0, 60.0]
MAPS = np.random.default_rng(0).poisson(20.0, size=(5, 8, 8)).astype(np.float64)


def _toml(d, body: str):
    (d / "data.toml").write_text(body)
    return d / "data.toml"


def _co(d, name: str = "co.npz", **arrays):
    np.savez(d / name, **({"maps": MAPS, "angles": ANGLES} | arrays))
    return _toml(d, f'[chem]\n[chem.elements]\nCo = "{name}"\n')


def _radians(d):
    return _toml(d, '[chem]\nangles = [-1.0, -0.5, 0.0, 0.5, 1.0]\n[chem.elements]\nCo = "co.npz"\n')


def _nan_angle(d):
    return _toml(d, '[chem]\nangles = [nan, -30.0, 0.0, 30.0, inf]\n[chem.elements]\nCo = "co.npz"\n')


def _decimal_commas(d):
    (d / "a.tlt").write_text("-52,5\n-30,0\n0,0\n30,0\n52,5\n")
    return _toml(d, '[chem]\nangles = "a.tlt"\n[chem.elements]\nCo = "co.npz"\n')


def _not_a_number(d):
    (d / "a.tlt").write_text("-60\n-30\nSECRET-TOKEN\n30\n60\n")
    return _toml(d, '[chem]\nangles = "a.tlt"\n[chem.elements]\nCo = "co.npz"\n')


def _mrc_fewer_sections(d):
    write_mrc(d / "co.mrc", np.concatenate([MAPS, MAPS[:4]]))  # 9 sections
    with mrcfile.open(d / "co.mrc", mode="r+") as mrc:
        mrc.header.nz = 3
    return _toml(d, '[chem]\nangles = [-60, 0, 60]\n[chem.elements]\nCo = "co.mrc"\n')


CASES = {
    "radians": (
        _radians,
        "chemical map Co: the angles look like radians (all within ±π/2, spanning 2.00); "
        'set angles_unit = "rad" if they are, or angles_unit = "deg" if these are degrees',
    ),
    "NaN angle": (_nan_angle, "chemical map Co: angles must be finite numbers"),
    "decimal commas": (
        _decimal_commas,
        "chemical map Co: angle file {d}/a.tlt: line 1 writes its angle with a "
        "decimal comma; write decimals with a point",
    ),
    "non-numeric angle": (
        _not_a_number,
        "chemical map Co: angle file {d}/a.tlt: line 3 is not a number; give one angle in degrees per line",
    ),
    "MRC header short": (
        _mrc_fewer_sections,
        "chemical map Co: {d}/co.mrc: the MRC header declares 3 sections of "
        "8 × 8 (768 bytes of data) but the file holds 2304 bytes of data; the header and the data "
        "disagree",
    ),
    "normalised maps": (
        lambda d: _co(d, maps=MAPS / MAPS.max()),
        "chemical map Co: these values cannot be counts "
        "(not whole numbers); give the raw counts per pixel, which the Poisson model needs, or "
        'declare [chem] units = "normalised" for maps proportional to counts',
    ),
    "maps of 0 and 1": (
        lambda d: _co(d, maps=(MAPS > 20).astype(float)),
        "chemical map Co: these values cannot "
        "be counts (none above 1 (maximum 1)); give the raw counts per pixel, which the Poisson model "
        'needs, or declare [chem] units = "normalised" for maps proportional to counts',
    ),
    "complex maps": (
        lambda d: _co(d, maps=MAPS + 1j),
        "chemical map Co: {d}/co.npz: holds complex numbers (an FFT or exit wave?); give real image intensities",
    ),
    "pickled maps": (
        lambda d: _co(d, maps=np.empty((5, 8, 8), dtype=object)),
        "chemical map Co: {d}/co.npz: "
        "holds Python objects (a pickle); tomosweep never loads pickles — save plain numeric arrays",
    ),
    "one file two elements": (
        lambda d: (_co(d), _toml(d, '[chem]\n[chem.elements]\nCo = "co.npz"\nCu = "./co.npz"\n'))[1],
        "chemical map Cu and chemical map Co name the same series ({d}/co.npz); each needs its own images",
    ),
    "two tilts": (
        lambda d: _co(d, maps=MAPS[:2], angles=ANGLES[:2]),
        "chemical map Co: 2 tilts; a tilt series needs "
        "at least 3 (fewer leave every slice undetermined and the tilt axis unfit)",
    ),
    "bin 16": (
        lambda d: (_co(d), _toml(d, 'bin = 16\n[chem]\n[chem.elements]\nCo = "co.npz"\n'))[1],
        "bin = 16 leaves 0 × 0 pixels of the 8 × 8 images; at least 4 × 4 are needed: choose bin ≤ 2",
    ),
    "no series": (
        lambda d: _toml(d, "bin = 2\n"),
        "name a [haadf] series, a [chem] section with element maps, or both",
    ),
    "bad window": (
        lambda d: _toml(d, '[chem]\nwindows = { Co = [7.1, 6.8] }\n[chem.elements]\nCo = "co.npz"\n'),
        "chem.windows: the window of Co must be [low, high] keV with 0 ≤ low < high",
    ),
    "no header angles": (
        lambda d: (np.savez(d / "h.npz", h=MAPS), _toml(d, '[haadf]\nfile = "h.npz"\n'))[1],
        'HAADF: the image file holds no tilt angles; give angles = "series.rawtlt" or a list of degrees',
    ),
    "angle npz missing": (
        lambda d: _toml(d, '[chem]\nangles = { file = "gone.npz" }\n[chem.elements]\nCo = "co.npz"\n'),
        "chemical map Co: angle file {d}/gone.npz: no such file",
    ),
    "angle npz corrupt": (
        lambda d: (
            (d / "a.npz").write_bytes(b"PK\x03\x04 not really"),
            _toml(d, '[chem]\nangles = "a.npz"\n[chem.elements]\nCo = "co.npz"\n'),
        )[1],
        "chemical map Co: angle file {d}/a.npz: not a valid .npz archive (a zip of .npy arrays)",
    ),
    "angle npz pickled": (
        lambda d: (
            np.savez(d / "a.npz", angles=np.array(ANGLES, dtype=object)),
            _toml(d, '[chem]\nangles = "a.npz"\n[chem.elements]\nCo = "co.npz"\n'),
        )[1],
        "chemical map Co: angle file {d}/a.npz: holds Python objects (a pickle); tomosweep never "
        "loads pickles — save plain numeric arrays",
    ),
    "angle h5 group": (
        lambda d: (
            h5py.File(d / "a.h5", "w").create_group("tilts").file.close(),
            _toml(d, '[chem]\nangles = { file = "a.h5", dataset = "tilts" }\n[chem.elements]\nCo = "co.npz"\n'),
        )[1],
        "chemical map Co: angle file {d}/a.h5: 'tilts' is a group, not a dataset; name the dataset inside it",
    ),
    "angle h5 corrupt": (
        lambda d: (
            (d / "a.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40),
            _toml(d, '[chem]\nangles = { file = "a.h5", dataset = "t" }\n[chem.elements]\nCo = "co.npz"\n'),
        )[1],
        "chemical map Co: angle file {d}/a.h5: not a readable HDF5 file (corrupt, truncated or another format)",
    ),
    "angle h5 strings": (
        lambda d: (
            h5py.File(d / "a.h5", "w").create_dataset("t", data=[b"-60", b"0"]).file.close(),
            _toml(d, '[chem]\nangles = { file = "a.h5", dataset = "t" }\n[chem.elements]\nCo = "co.npz"\n'),
        )[1],
        "chemical map Co: angle file {d}/a.h5: holds text, not numbers",
    ),
    "image h5 corrupt": (
        lambda d: (
            (d / "co.h5").write_bytes(b"junk" * 100),
            _toml(d, '[chem]\nangles = [-60, 0, 60]\n[chem.elements]\nCo = "co.h5"\n'),
        )[1],
        "chemical map Co: {d}/co.h5: not a readable HDF5 file (corrupt, truncated or another format)",
    ),
    "unknown key": (
        lambda d: _toml(d, '[chem]\nshift = 3\n[chem.elements]\nCo = "co.npz"\n'),
        "unknown key 'shift' in [chem]",
    ),
    "bad unit": (
        lambda d: _toml(d, 'angles_unit = "grad"\n[chem]\n[chem.elements]\nCo = "co.npz"\n'),
        "angles_unit: must be 'deg' or 'rad' (got 'grad')",
    ),
}


@pytest.fixture
def folder(tmp_path):
    np.savez(tmp_path / "co.npz", maps=MAPS, angles=ANGLES)
    return tmp_path


@pytest.mark.parametrize("case", list(CASES))
def test_each_hostile_data_file_is_one_exact_line(folder, case):
    build, expected = CASES[case]
    toml = build(folder)
    with pytest.raises(InputError) as err:
        load_series(toml)
    assert str(err.value) == f"data file {toml}: " + expected.format(d=folder.resolve())
    assert "SECRET" not in str(err.value)


def test_radians_are_read_when_declared(folder):
    # co.npz holds its own angles (±60°); the given radians differ, so the test says to use the given ones
    toml = _toml(
        folder,
        'angles_unit = "rad"\nheader_angles = "ignore"\n[chem]\nangles = [-1.0, -0.5, 0.0, 0.5, 1.0]\n'
        '[chem.elements]\nCo = "co.npz"\n',
    )
    series = load_series(toml)
    np.testing.assert_allclose(series.chem_angles, np.degrees([-1.0, -0.5, 0.0, 0.5, 1.0]))
    assert any("the given ones are used" in note for note in series.notes)


def test_given_angles_that_disagree_with_the_files_own_are_refused_naming_both(folder):
    toml = _toml(folder, '[chem]\nangles = [-50, -25, 0, 25, 50]\n[chem.elements]\nCo = "co.npz"\n')
    with pytest.raises(InputError) as err:
        load_series(toml)
    text = str(err.value)
    assert "the file's own angles (-60.0° … 60.0°, 5 angles)" in text and "differ by up to 10.00°" in text
    assert 'angles = "header"' in text and 'header_angles = "ignore"' in text and "\n" not in text
    # the same angles given again (rounded as an angle file rounds them) agree: nothing to say
    same = _toml(folder, '[chem]\nangles = [-60.01, -30, 0, 30, 60.02]\n[chem.elements]\nCo = "co.npz"\n')
    assert load_series(same).n_chem == 5


def test_normalised_maps_are_read_when_declared_with_a_note(folder):
    np.savez(folder / "n.npz", maps=MAPS / MAPS.max(), angles=ANGLES)
    series = load_series(_toml(folder, '[chem]\nunits = "normalised"\n[chem.elements]\nCo = "n.npz"\n'))
    assert series.chem_units == "normalised" and "Poisson noise model" in series.notes[0]
    np.testing.assert_allclose(series.chem[0], MAPS / MAPS.max())


def _gib16():
    return 16 * 2**30


def test_a_64_gib_hdf5_dataset_is_refused_before_reading(folder, monkeypatch):
    monkeypatch.setattr("tomosweep.series.readers.available_memory", _gib16)
    with h5py.File(folder / "big.h5", "w") as f:
        f.create_dataset("maps", shape=(1024, 4096, 4096), dtype="f4")  # declared, never written
    assert (folder / "big.h5").stat().st_size < 1 << 20
    toml = _toml(folder, '[chem]\nangles = [-60, 0, 60]\n[chem.elements]\nCo = { file = "big.h5", dataset = "maps" }\n')
    with pytest.raises(InputError) as err:
        load_series(toml)
    assert str(err.value) == (
        f"data file {toml}: chemical map Co: {folder.resolve()}/big.h5: declares a 1024 × 4096 × 4096 array "
        "(64.0 GiB stored); reading it needs 192.0 GiB of memory and 16.0 GiB is available"
    )


def test_an_npz_member_declaring_64_gib_is_refused_from_its_header(folder, monkeypatch):
    import zipfile

    monkeypatch.setattr("tomosweep.series.readers.available_memory", _gib16)
    header = {"descr": "<f4", "fortran_order": False, "shape": (1024, 4096, 4096)}
    with zipfile.ZipFile(folder / "big.npz", "w") as z, z.open("maps.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(b"\x00" * 64)
    toml = _toml(folder, '[chem]\nangles = [-60, 0, 60]\n[chem.elements]\nCo = "big.npz"\n')
    with pytest.raises(
        InputError,
        match=r"declares a 1024 × 4096 × 4096 array \(64.0 GiB stored\); reading it "
        r"needs 192.0 GiB of memory and 16.0 GiB is available$",
    ):
        load_series(toml)


def test_an_mrc_of_64_gib_is_refused_from_its_header(folder, monkeypatch):
    monkeypatch.setattr("tomosweep.series.readers.available_memory", _gib16)
    write_mrc(folder / "big.mrc", MAPS[:1])
    with mrcfile.open(folder / "big.mrc", mode="r+") as mrc:
        mrc.header.nx, mrc.header.ny, mrc.header.nz = 4096, 4096, 1024
    with open(folder / "big.mrc", "r+b") as f:  # a sparse file: the length the header declares
        f.truncate(1024 + 64 * 2**30)
    toml = _toml(folder, '[chem]\nangles = [-60, 0, 60]\n[chem.elements]\nCo = "big.mrc"\n')
    with pytest.raises(InputError, match=r"big.mrc: declares a 1024 × 4096 × 4096 array \(64.0 GiB stored\)"):
        load_series(toml)


def test_hdf5_external_links_and_virtual_datasets_are_refused(folder):
    with h5py.File(folder / "other.h5", "w") as f:
        f["maps"] = MAPS
    with h5py.File(folder / "link.h5", "w") as f:
        f["maps"] = h5py.ExternalLink("other.h5", "maps")
    layout = h5py.VirtualLayout(shape=MAPS.shape, dtype="f8")
    layout[:] = h5py.VirtualSource(str(folder / "other.h5"), "maps", shape=MAPS.shape)
    with h5py.File(folder / "vds.h5", "w") as f:
        f.create_virtual_dataset("maps", layout)
    for name, what in (("link.h5", "an HDF5 external link to another file"), ("vds.h5", "a virtual dataset drawing")):
        toml = _toml(
            folder, f'[chem]\nangles = {ANGLES}\n[chem.elements]\nCo = {{ file = "{name}", dataset = "maps" }}\n'
        )
        with pytest.raises(InputError) as err:
            load_series(toml)
        assert str(err.value).startswith(
            f"data file {toml}: chemical map Co: {folder.resolve()}/{name}: /maps is {what}"
        )


def test_paths_are_resolved_and_hashed_as_resolved(folder):
    (folder / "sub").mkdir()
    (folder / "alias.npz").symlink_to(folder / "co.npz")
    series = load_series(_toml(folder, '[chem]\n[chem.elements]\nCo = "sub/../alias.npz"\n'))
    assert list(series.sources) == [str((folder / "co.npz").resolve())]


def test_several_problems_are_counted_and_one_line_each(folder):
    toml = _toml(folder, 'bin = 0\ngamma = 9\n[chem]\n[chem.elements]\nCo = "co.npz"\n')
    with pytest.raises(InputError) as err:
        load_series(toml)
    assert str(err.value) == (
        f"data file {toml}: 2 problems\n"
        "  - bin: must be greater than or equal to 1 (got 0)\n"
        "  - gamma: must be less than or equal to 3 (got 9)"
    )


@pytest.mark.parametrize("case", ["radians", "angle npz pickled"])
def test_reconstruct_data_refuses_with_exit_2_and_one_line(folder, case):
    build, expected = CASES[case]
    toml = build(folder)
    result = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "reconstruct-data", str(toml), "--out", str(folder / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and not (folder / "r").exists()
    message = f"error: data file {toml}: " + expected.format(d=folder.resolve())
    assert " ".join(message.split()) in " ".join(result.stderr.split())
