"""Real SerialEM and Gatan series written as microscopes write them: ETSpy's test data (NIST public licence).

SerialEM's multi-frame series (three ``.mrc`` at −5°, 0° and 5°, two frames each, an ``.mdoc`` beside
each), its single stack of two frames at one tilt, and three DigitalMicrograph files of one series
(``BF_001…003.dm3``, one image each, the stage tilt in each file's tags). Read from the wheel named
in ``TOMOSWEEP_ETSPY_WHEEL`` (``.ci/run`` fetches it), never committed; without it the tests skip.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tomosweep.errors import InputError
from tomosweep.series import load_series

pytestmark = [pytest.mark.realdata]

FOLDERS = ("SerialEM_Multiframe_Test", "SerialEM_MultiTilt_Test", "DM_Series_Test")


@pytest.fixture(scope="module")
def etspy_series(tmp_path_factory) -> Path:
    wheel = os.environ.get("TOMOSWEEP_ETSPY_WHEEL")
    if not wheel or not Path(wheel).is_file():
        pytest.skip("ETSpy's test data are not here: set TOMOSWEEP_ETSPY_WHEEL to the etspy wheel (.ci/run fetches it)")
    out = tmp_path_factory.mktemp("etspy_series")
    prefix = "etspy/tests/test_data/"
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(prefix) and m[len(prefix) :].split("/")[0] in FOLDERS]
        if not members:
            pytest.skip(f"{wheel} does not carry ETSpy's SerialEM and DM series")
        for member in members:
            target = out / member[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
    return out


def test_serialem_multiframe_files_per_tilt_with_their_mdocs(etspy_series):
    folder = etspy_series / "SerialEM_Multiframe_Test"
    (folder / "data.toml").write_text('bin = 8\n[haadf]\nfile = "test_*.mrc"\nangles = "mdoc"\nbackground = 0\n')
    series = load_series(folder / "data.toml")
    np.testing.assert_allclose(series.haadf_angles, [-5.00151, -0.000488, 5.00054])  # ETSpy's own test values
    assert series.haadf is not None and series.haadf.shape == (3, 128, 128)
    assert series.pixel_size_nm == pytest.approx(0.788 * 8)  # PixelSpacing 7.88 Å, binned 8 × 8
    assert any("2 frames at each tilt were summed" in n for n in series.notes)
    # SerialEM's tilt axis angle −90°: the axis already runs along the columns, no turn
    assert any('tilt_axis = "horizontal", turned by 0°' in n for n in series.notes)
    import mrcfile

    with mrcfile.open(folder / "test_002.mrc", permissive=True) as mrc:  # −5°: the first tilt
        frames = np.asarray(mrc.data, dtype=float)
    expected = frames.sum(axis=0).reshape(128, 8, 128, 8).sum(axis=(1, 3))
    np.testing.assert_allclose(series.haadf[0], expected)


def test_serialem_stack_of_frames_at_one_tilt_is_one_tilt_and_refused(etspy_series):
    folder = etspy_series / "SerialEM_MultiTilt_Test"
    (folder / "data.toml").write_text('[haadf]\nfile = "test_000.mrc"\nbackground = 0\n')
    with pytest.raises(InputError, match=r"HAADF: 1 tilt; a tilt series needs at least 3"):
        load_series(folder / "data.toml")


def test_gatan_files_per_tilt_in_stage_tilt_order(etspy_series):
    from tomosweep.series.per_tilt import read_per_tilt

    folder = etspy_series / "DM_Series_Test"
    files = [folder / f"BF_00{k}.dm3" for k in (3, 1, 2)]
    got = read_per_tilt(files, None, None)
    np.testing.assert_allclose(got.angles, [-72.003, -69.0036, -66.0042], atol=1e-3)  # "Stage Alpha" of each file
    assert [f.name for f in got.files] == ["BF_001.dm3", "BF_002.dm3", "BF_003.dm3"]
    assert got.stack.shape == (3, 128, 128)
    # ETSpy ships these three images zeroed (the tags are the test): a series of them is refused clearly
    (folder / "data.toml").write_text('[haadf]\nfile = "BF_*.dm3"\nbackground = 0\n')
    with pytest.raises(InputError, match="HAADF: the series is empty after subtracting its vacuum level"):
        load_series(folder / "data.toml")
