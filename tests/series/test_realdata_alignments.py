"""ETSpy's own alignment of its real needle, taken in with ``[align] method = "file"``.

The data come as in ``test_realdata.py`` (``TOMOSWEEP_ETSPY_DATA`` or ``TOMOSWEEP_ETSPY_WHEEL``);
without them the test skips and says why.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_etspy_alignment_of_the_needle_gives_etspys_aligned_images(etspy_data, tmp_path):
    """The raw needle aligned by HAADF_Aligned.hspy's metadata is ETSpy's stored aligned stack: within
    0.1 px across the tilt axis, and up to one constant along it (2.51 px: the file's ``xshift``, which
    ETSpy's ``align_other`` applies and its stored images do not hold)."""
    import shutil

    import h5py

    from tomosweep.errors import InputError
    from tomosweep.series import apply_shifts, load_series
    from tomosweep.series.align import relative_shift

    for name in ("HAADF.mrc", "HAADF.rawtlt", "HAADF_Aligned.hspy"):
        shutil.copy(etspy_data / name, tmp_path / name)
    body = (
        '[haadf]\nfile = "HAADF.mrc"\nangles = "HAADF.rawtlt"\nbackground = 0\ndose = "constant"\n'
        '[align]\nmethod = "file"\nfile = "HAADF_Aligned.hspy"\n'
    )
    (tmp_path / "data.toml").write_text(body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the old FEI file has no MRC map id / machine stamp
        with pytest.raises(InputError, match=r"set tilt_axis_angle = 2\.793"):  # ETSpy's tiltaxis −2.79°
            load_series(tmp_path / "data.toml")
        (tmp_path / "data.toml").write_text("tilt_axis_angle = 2.7933411848827294\n" + body)
        series = load_series(tmp_path / "data.toml")
    assert series.haadf is not None and series.given_alignment is not None
    ours = apply_shifts(series.haadf, series.given_alignment.shifts)
    with h5py.File(tmp_path / "HAADF_Aligned.hspy", "r") as f:
        theirs = np.asarray(f["Experiments/__unnamed__/data"], dtype=float)
    residual = np.array([relative_shift(t, o, max_shift=10) for t, o in zip(theirs, ours, strict=True)])
    assert np.abs(residual[:, 0]).max() < 0.1, residual[:, 0]
    assert np.abs(residual[:, 1] - 2.5116).max() < 0.1, residual[:, 1]


def test_auto_finds_etspys_tilt_axis_on_the_needle(etspy_data, tmp_path):
    """``tilt_axis_angle = "auto"`` on the raw needle lands within 0.3° of the turn ETSpy found (its
    ``tiltaxis`` −2.79°, 2.79° in tomosweep's sense, as the test above reads it)."""
    import shutil

    from tomosweep.series import load_series

    for name in ("HAADF.mrc", "HAADF.rawtlt"):
        shutil.copy(etspy_data / name, tmp_path / name)
    (tmp_path / "data.toml").write_text(
        'tilt_axis_angle = "auto"\nbin = 2\n[haadf]\nfile = "HAADF.mrc"\nangles = "HAADF.rawtlt"\ndose = "constant"\n'
        '[align]\nmethod = "none"\n'
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the old FEI file has no MRC map id / machine stamp
        series = load_series(tmp_path / "data.toml")
    assert series.axis_turn is not None
    assert series.axis_turn["tilt_axis_angle"] == pytest.approx(2.7933, abs=0.3)
    assert series.frame.tilt_axis_angle == series.axis_turn["tilt_axis_angle"]
