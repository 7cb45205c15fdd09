"""A real STEM-HAADF tilt series: ETSpy's test data (a needle, 77 tilts ±76°, NIST public licence).

``.ci/run`` fetches the ETSpy wheel with pip into a cache folder and names it in
``TOMOSWEEP_ETSPY_WHEEL`` (or a folder holding ``HAADF.mrc`` in ``TOMOSWEEP_ETSPY_DATA``);
the data are read from the wheel, never committed. Without them the tests skip and say why.
ETSpy's own aligned stack (``HAADF_Aligned.hspy``, HDF5) is read with h5py; the shifts it
applied are measured by registering each raw image to its aligned one (the same image moved).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def needle(etspy_data):
    """Raw images binned 2 × 2, angles from the .rawtlt, and the shifts ETSpy applied (full pixels)."""
    import h5py

    from tomosweep.series import read_stack
    from tomosweep.series.align import relative_shift

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the old FEI file has no MRC map id / machine stamp
        raw, header_angles = read_stack(etspy_data / "HAADF.mrc")
    angles = np.loadtxt(etspy_data / "HAADF.rawtlt")
    with h5py.File(etspy_data / "HAADF_Aligned.hspy", "r") as f:
        aligned = np.asarray(f["Experiments/__unnamed__/data"], dtype=float)
    raw = np.asarray(raw, dtype=float)
    etspy = np.array([relative_shift(a, r, max_shift=60) for a, r in zip(aligned, raw, strict=True)])
    binned = raw.reshape(raw.shape[0], raw.shape[1] // 2, 2, raw.shape[2] // 2, 2).sum(axis=(2, 4))
    return binned, angles, header_angles, etspy


def test_header_angles_are_the_rawtlt_ones(needle):
    _, angles, header_angles, _ = needle
    assert header_angles is not None
    np.testing.assert_allclose(header_angles, angles, atol=0.01)


def test_alignment_agrees_with_etspy_and_reprojects_better(needle):
    from tomosweep.series import align_series, apply_shifts
    from tomosweep.series.calibrate import vacuum_level
    from tomosweep.solvers import Projector, sirt

    binned, angles, _, etspy = needle
    vacuum = vacuum_level(binned, angles)
    assert vacuum.proven
    series = np.maximum(binned - vacuum.level, 0.0)
    alignment = align_series(series, angles, method="projmatch", max_shift=30)
    difference = 2 * alignment.shifts - etspy  # ours in full pixels
    # modulo what neither alignment fixes the same way: a translation of the needle and where
    # each puts the axis (a constant across it)
    t = np.radians(angles)
    design = np.stack([np.ones_like(t), np.cos(t), -np.sin(t)], axis=1)
    coef, *_ = np.linalg.lstsq(design, difference[:, 0], rcond=None)
    across = difference[:, 0] - design @ coef
    along = difference[:, 1] - np.median(difference[:, 1])
    assert np.median(np.abs(across)) <= 0.5 and np.median(np.abs(along)) <= 0.5, (across, along)

    projector = Projector(series.shape[1], angles)

    def reprojection_error(stack: np.ndarray) -> float:
        volume = sirt(projector, stack.astype(np.float32), n_iter=30).volume
        return float(np.linalg.norm(projector.forward(volume) - stack) / np.linalg.norm(stack))

    before = reprojection_error(series)
    after = reprojection_error(apply_shifts(series, alignment.shifts))
    assert after < 0.8 * before, (before, after)


def test_a_real_gatan_dm3_tilt_series_is_read_with_its_angles(etspy_data):
    """ETSpy's HAADF.dm3: a Digital Micrograph tilt stack (91 tilts, ±90° in 2° steps) read by RosettaSciIO."""
    from tomosweep.series import read_stack

    stack, angles = read_stack(etspy_data / "HAADF.dm3")
    assert stack.shape == (91, 64, 64) and stack.dtype == np.float64
    np.testing.assert_allclose(angles, np.arange(-90.0, 90.1, 2.0))
    assert stack.min() > 0 and np.all(np.isfinite(stack))  # raw detector counts, every tilt filled


def test_the_needle_tunes_sirts_iterations_on_its_own_held_out_tilts(etspy_data, tmp_path):
    """examples/tune_needle.toml as its comment says to run it: tune, status, reconstruct-data."""
    import shutil
    import subprocess
    import sys

    from tomosweep.results import SweepStore

    for name in ("HAADF.mrc", "HAADF.rawtlt"):
        shutil.copy(etspy_data / name, tmp_path / name)
    example = Path(__file__).resolve().parents[2] / "examples" / "tune_needle.toml"
    shutil.copy(example, tmp_path / "tune_needle.toml")

    def tomosweep(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tomosweep.cli", *args], cwd=tmp_path, capture_output=True, text=True
        )

    tuned = tomosweep("tune", "tune_needle.toml", "--store", "needle.zarr", "-q")
    assert tuned.returncode == 0, tuned.stderr
    records = SweepStore.open(tmp_path / "needle.zarr").records()
    assert len(records) == 6 and all(r.ok and r.info["loss"]["minimised"] == "haadf" for r in records)
    by_iterations = sorted(records, key=lambda r: r.params["n_iter"])
    best = min(records, key=lambda r: r.nrmse)
    # a few iterations leave the held-out tilts badly predicted; the tune's best is far better, and real
    assert by_iterations[0].params["n_iter"] < 25 and by_iterations[0].nrmse > 2 * best.nrmse
    assert best.params["n_iter"] >= 50 and best.nrmse < 0.1
    status = tomosweep("status", "needle.zarr", "--format", "json")
    assert status.returncode == 0 and '"best_loss"' in status.stdout
    done = tomosweep("reconstruct-data", "tune_needle.toml", "--weights", "needle.zarr", "--out", "needle")
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "needle" / "reconstruction.json").read_text())
    assert record["weights"]["n_iter"] == int(best.params["n_iter"]) and "needle.zarr" in record["weights_from"]
