"""From a study to the microscope and back, end to end.

A specimen is simulated, a small study searches its fused weights, ``plan`` picks the
cell, the cell's series is written to MRC and TIFF with a drifting stage and the tilt axis
off centre, and ``reconstruct-data`` aligns and reconstructs it with the planned weights.
The NRMSE against the truth must be within 20 % of the study's value for that cell.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy.ndimage import shift as nd_shift
from typer.testing import CliRunner

from tomosweep.cli import app
from tomosweep.phantoms import save_specimen
from tomosweep.series import apply_shifts, write_mrc, write_rawtlt
from tomosweep.solvers import nrmse
from tomosweep.sweep.spec import study_from_dict
from tomosweep.sweep.trial import simulate_cell

N_HAADF, N_CHEM = 15, 5


def _drift(angles: np.ndarray) -> np.ndarray:
    """A stage drifting smoothly with tilt, and the tilt axis 1.6 px off the detector centre."""
    t = np.radians(angles)
    return np.stack([1.6 + 1.8 * np.sin(1.3 * t) + 0.7 * np.cos(2.1 * t), 1.2 * np.cos(1.7 * t) - 0.5], axis=1)


def _mass_centre(volumes: np.ndarray, z) -> np.ndarray:
    """Centre of the HAADF signal Σ (Z x)^γ, voxels from the volume centre, (y, z)."""
    m = np.einsum("e...,e->...", np.clip(volumes, 0, None) ** 1.7, np.asarray(z, dtype=float) ** 1.7)
    out = []
    for axis in (0, 1):
        profile = m.sum(axis=tuple(a for a in range(3) if a != axis))
        out.append(profile @ (np.arange(m.shape[axis]) - (m.shape[axis] - 1) / 2) / profile.sum())
    return np.array(out)


@pytest.mark.slow
def test_plan_then_reconstruct_measured_series_matches_the_study(isolated, tmp_path):
    save_specimen(isolated, tmp_path / "specimen.npz")
    study = {
        "name": "e2e",
        "seed": 5,
        "phantom": {"file": str(tmp_path / "specimen.npz")},
        "acquisition": {"n_haadf": [N_HAADF], "n_chem": [N_CHEM]},
        "methods": {
            "fused": {"lambda_haadf": {"low": 0.1, "high": 10.0, "prior": "log"}, "lambda_tv": 1.0, "n_iter": 60}
        },
        "budget": {"trials_per_cell": 5, "initial_points": 3},
        "cluster": {"n_workers": 1},
    }
    from tomosweep.sweep.api import run_study

    store = tmp_path / "s.zarr"
    run_study(study_from_dict(study), store)
    runner = CliRunner()
    planned = runner.invoke(app, ["plan", str(store), "--target", "1.0", "--figure", str(tmp_path / "plan.png")])
    assert planned.exit_code == 0, planned.output
    assert f"{N_HAADF}" in planned.output and "lambda_haadf=" in planned.output
    assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the microscope: the cell's own series, drifting, written as MRC (HAADF) and TIFF (maps)
    specimen, acq = simulate_cell(study_from_dict(study), N_HAADF, N_CHEM)
    data = tmp_path / "data"
    data.mkdir()
    write_mrc(data / "haadf.mrc", apply_shifts(acq.haadf, -_drift(acq.haadf_angles)), acq.haadf_angles)
    chem_drift = _drift(acq.chem_angles)
    for k, element in enumerate(acq.elements):
        # a detector records whole counts: the drifted maps are rounded, as the data check demands
        counts = np.round(apply_shifts(acq.chem[k], -chem_drift))
        tifffile.imwrite(data / f"{element}.tif", counts.astype(np.float32))
    write_rawtlt(data / "maps.rawtlt", acq.chem_angles)
    # a calibrated microscope knows its detector gains: counts per unit of the models
    sensitivity = ", ".join(f"{e} = {acq.dose[e]!r}" for e in acq.elements)
    elements = "\n".join(f'{e} = "{e}.tif"' for e in acq.elements)
    (data / "data.toml").write_text(
        f"""
gamma = 1.7
[haadf]
file = "haadf.mrc"
scale = {acq.dose["haadf"]!r}
[chem]
angles = "maps.rawtlt"
sensitivity = {{ {sensitivity} }}
[chem.elements]
{elements}
[align]
method = "com"
"""
    )
    out = tmp_path / "recon"
    done = runner.invoke(app, ["reconstruct-data", str(data / "data.toml"), "--weights", str(store), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert f"cell {N_HAADF}×{N_CHEM}" in done.output and "held-out check" in done.output
    record = json.loads((out / "reconstruction.json").read_text())
    assert record["heldout"]["relative_error"] < 0.1
    for name in ("volumes.npz", "slices.png", "costs.png", "alignment.png", "Co.tif"):
        assert (out / name).is_file(), name
    ome = json.loads((out / "volumes.ome.zarr" / ".zattrs").read_text())
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert [c["label"] for c in ome["omero"]["channels"]] == list(acq.elements)

    volumes = np.load(out / "volumes.npz")["volumes"].astype(np.float64)
    # CoM alignment centres the specimen's HAADF mass on the tilt axis: move the (smooth)
    # reconstruction back to where the truth has it before comparing
    # alignment adds no translation of its own: the specimen moves only by the part of the
    # drift that *is* a translation (y cos θ − z sin θ across the axis, which no alignment can
    # tell from one; this smooth drift holds about 2 voxels of it)
    t = np.radians(acq.haadf_angles)
    basis = np.stack([np.ones_like(t), np.cos(t), -np.sin(t)], axis=1)
    expected = np.linalg.lstsq(basis, _drift(acq.haadf_angles)[:, 0], rcond=None)[0][1:]
    offset = _mass_centre(volumes, specimen.z) - _mass_centre(specimen.volumes, specimen.z)
    assert np.all(np.abs(offset - expected) <= 0.5), (offset, expected)
    volumes = np.stack([nd_shift(v, [-offset[0], -offset[1], 0.0], order=1) for v in volumes])
    measured = float(nrmse(volumes, specimen.volumes, channel_axis=0).mean())
    from tomosweep.results import SweepStore

    with SweepStore.open(store) as opened:
        study_value = float(opened.maps("fused")["best_nrmse"][0, 0])
    assert measured <= 1.2 * study_value, (measured, study_value)
