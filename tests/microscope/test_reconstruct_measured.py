"""reconstruct-data on measured series: held-out figures beside the study's, HAADF-only series (issue 21)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from tomosweep.cli import app
from tomosweep.microscope.heldout import compare_heldout, heldout_lines
from tomosweep.microscope.reconstruct import reconstruct_data
from tomosweep.series import write_mrc, write_rawtlt
from tomosweep.sweep.spec import study_from_dict
from tomosweep.sweep.trial import simulate_cell

STUDY = {
    "name": "heldout",
    "seed": 2,
    "phantom": {"name": "core_shell_cube", "size": 16},
    "acquisition": {"n_haadf": [12], "n_chem": [4]},
    "methods": {"fused": {"lambda_haadf": {"low": 0.4, "high": 0.6}, "lambda_tv": 1.0, "n_iter": 20}},
    "budget": {"trials_per_cell": 1, "initial_points": 1},
    "cluster": {"n_workers": 1},
}


def _write_cell_series(folder, acq, *, haadf=None, gains=None) -> None:
    """The study's own cell as a microscope would write it (MRC + TIFF maps + .rawtlt)."""
    folder.mkdir()
    write_mrc(folder / "haadf.mrc", acq.haadf if haadf is None else haadf, acq.haadf_angles)
    for k, e in enumerate(acq.elements):
        tifffile.imwrite(folder / f"{e}.tif", acq.chem[k].astype(np.float32), photometric="minisblack")
    write_rawtlt(folder / "maps.rawtlt", acq.chem_angles)
    maps = "\n".join(f'{e} = "{e}.tif"' for e in acq.elements)
    background = ", ".join(f"{e} = {acq.background[e]!r}" for e in acq.elements)
    (folder / "data.toml").write_text(
        f'gamma = 1.7\n[haadf]\nfile = "haadf.mrc"\nbackground = 0\n[chem]\nangles = "maps.rawtlt"\n'
        f'background = {{ {background} }}\n[chem.elements]\n{maps}\n[align]\nmethod = "none"\n'
    )


@pytest.fixture(scope="module")
def study_store(client, tmp_path_factory):
    from tomosweep.sweep.api import run_study

    path = tmp_path_factory.mktemp("heldout") / "s.zarr"
    run_study(study_from_dict(STUDY), path, client=client)
    return path


@pytest.mark.slow
def test_heldout_figures_sit_beside_the_studys_and_a_misfit_is_named(study_store, tmp_path):
    specimen, acq = simulate_cell(study_from_dict(STUDY), 12, 4)
    _write_cell_series(tmp_path / "same", acq)
    done = reconstruct_data(
        tmp_path / "same" / "data.toml", tmp_path / "out_same", weights_store=study_store, holdout=0.2
    )
    h = done.heldout
    assert 0 < h["relative_error"] < 0.5 and np.isfinite(h["chem_deviance"]) and h["chem_deviance"] > 0
    assert h["chem_left_out_angle"] == pytest.approx(acq.chem_angles[2], abs=1e-3)  # as the .rawtlt rounds it
    study = h["study"]
    assert study["cell"] == [12, 4] and study["spread"] == 0.25 and "default" in study["spread_from"]
    # the data are the study's own series (angles as the files round them): each figure is the study's
    for row in study["figures"].values():
        assert row["ratio"] == pytest.approx(1.0, rel=0.05) and not row["differs"]
    assert study["verdict"] == ["the data behave like the study's simulated series (every held-out figure within ±25%)"]
    record = json.loads((tmp_path / "out_same" / "reconstruction.json").read_text())
    assert record["heldout"]["relative_error"] == pytest.approx(h["relative_error"])
    assert record["heldout"]["study"]["figures"]["relative_error"]["study"] == pytest.approx(study["relative_error"])

    # the same series with every HAADF projection jittered by a pixel and left unaligned
    rng = np.random.default_rng(0)
    jittered = np.stack([np.roll(p, int(rng.choice([-2, 2])), axis=0) for p in acq.haadf])
    _write_cell_series(tmp_path / "jittered", acq, haadf=jittered)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "reconstruct-data",
            str(tmp_path / "jittered" / "data.toml"),
            "--out",
            str(tmp_path / "out_jittered"),
            "--weights",
            str(study_store),
            "--holdout",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out_jittered" / "reconstruction.json").read_text())
    row = record["heldout"]["study"]["figures"]["relative_error"]
    assert row["differs"] and row["ratio"] > 1.25
    assert "verdict: the held-out HAADF error is" in result.output
    assert "fit the model worse than the study assumed" in " ".join(result.output.split())
    assert "HAADF error: data" in result.output and "the study's simulated series" in result.output


def test_comparison_verdicts_in_plain_words():
    data = {"relative_error": 0.2, "chem_deviance": 0.5}
    study = {"relative_error": 0.1, "chem_deviance": 0.52}
    out = compare_heldout(data, study, 0.25, "the default")
    assert out["figures"]["relative_error"]["differs"] and not out["figures"]["chem_deviance"]["differs"]
    assert out["verdict"] == [
        "the held-out HAADF error is 2.00× the study's simulated series': these data fit the model worse than the "
        "study assumed (alignment, calibration, dose or specimen differ), so expect a higher NRMSE than the study "
        "predicts"
    ]
    better = compare_heldout({"relative_error": 0.05}, {"relative_error": 0.1}, 0.25, "x")
    assert "better than the study's" in better["verdict"][0]
    lines = heldout_lines({"left_out_angles": [-30.0, 30.0], "relative_error": 0.2, "study": out})
    assert lines[0] == "held-out check: HAADF tilts -30°, 30° predicted with relative error 0.200"
    assert lines[1] == "  HAADF error: data 0.200, the study's simulated series 0.100 (2.00×)"
    assert lines[-1].startswith("verdict: the held-out HAADF error is 2.00×")


@pytest.mark.slow
def test_haadf_only_series_is_aligned_and_reconstructed_by_sirt(tmp_path):
    from tomosweep.phantoms import make_specimen
    from tomosweep.solvers import Projector

    specimen = make_specimen("core_shell_cube", 24)
    angles = np.linspace(-60, 60, 13)
    signal = ((np.asarray(specimen.z, float)[:, None, None, None] * specimen.volumes) ** 1.7).sum(0)
    clean = Projector(24, angles).forward(signal)
    haadf = np.random.default_rng(1).poisson(2000.0 * clean / clean.max()).astype(np.float32)
    haadf = np.stack([np.roll(p, s, axis=0) for p, s in zip(haadf, np.tile([0, 1, -1], 5)[:13], strict=True)])
    write_mrc(tmp_path / "haadf.mrc", haadf, angles)
    (tmp_path / "data.toml").write_text('[haadf]\nfile = "haadf.mrc"\nbackground = 0\n[align]\nmethod = "com"\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["reconstruct-data", str(tmp_path / "data.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "note: no [chem] section: a HAADF-only series is reconstructed without chemistry (that needs [chem])" in text
    assert "note: reconstructed by SIRT as one HAADF volume" in text
    record = json.loads((out / "reconstruction.json").read_text())
    assert record["method"] == "sirt" and record["elements"] == ["HAADF"]
    assert 0 < record["heldout"]["relative_error"] < 0.3 and len(record["heldout"]["left_out_angles"]) == 1
    assert "held-out check: HAADF tilts" in result.output
    assert record["alignment"]["method"] == "com"
    volumes = np.load(out / "volumes.npz")["volumes"]
    assert volumes.shape == (1, 24, 24, 24)
    for name in ("HAADF.tif", "slices.png", "alignment.png", "volumes.ome.zarr"):
        assert (out / name).exists(), name
    # the volume is the specimen's HAADF signal: it correlates with the truth
    corr = np.corrcoef(volumes[0].ravel(), signal.ravel())[0, 1]
    assert corr > 0.8


@pytest.mark.slow
def test_true_k_factors_do_not_make_the_reconstruction_worse():
    """Sensitivities put every element in one concentration unit, as a study's series are: with the HAADF
    scale fitted jointly they help (measured: ⟨NRMSE⟩ 0.323 with the true k-factors, 0.628 without)."""
    from tomosweep.microscope.weights import measured_cell
    from tomosweep.phantoms import TiltScheme, make_specimen, simulate
    from tomosweep.series import MeasuredSeries
    from tomosweep.solvers import nrmse
    from tomosweep.sweep.methods import METHODS

    specimen = make_specimen("core_shell_cube", 24)
    acq = simulate(specimen, TiltScheme(15, chem_every=3), chem_snr={"Co": 4.0, "Mn": 1.5, "O": 2.5}, rng=1)
    elements = tuple(specimen.elements)
    dose = tuple(float(acq.dose[e]) for e in elements)
    assert max(dose) / min(dose) > 3  # the elements' counts per unit concentration differ
    params = {p.name: float(p.default) for p in METHODS["fused"].params} | {"n_iter": 60.0}
    scores = {}
    for label, sensitivity in (("with", dose), ("without", None)):
        series = MeasuredSeries(
            haadf=acq.haadf,
            haadf_angles=np.asarray(acq.haadf_angles, float),
            chem=acq.chem,
            chem_angles=np.asarray(acq.chem_angles, float),
            elements=elements,
            chem_background=tuple(float(acq.background[e]) for e in elements),
            sensitivity=sensitivity,
        )
        result = METHODS["fused"].run(measured_cell(series, gamma=1.7), params, "cpu")
        scores[label] = float(nrmse(np.asarray(result.volume), specimen.volumes, channel_axis=0).mean())
    assert scores["with"] <= scores["without"] + 0.005, scores


def test_the_allowed_spread_comes_from_stored_replicates():
    from tomosweep.microscope.heldout import DEFAULT_HELDOUT_SPREAD, study_spread

    class Store:
        path = "s.zarr"

        def __init__(self, entries):
            self.entries = entries

        def replicates(self):
            return self.entries

    values = [0.20, 0.22, 0.24]
    spread, why = study_spread(Store({"fused/12/4": {"nrmse": values}}), "fused", (12, 4))
    assert spread == pytest.approx(2 * np.std(values, ddof=1) / np.mean(values))
    assert why == "2 × the relative std of 3 stored replicates"
    assert study_spread(Store({}), "fused", (12, 4))[0] == DEFAULT_HELDOUT_SPREAD
    assert study_spread(Store({"fused/12/4": {"nrmse": [0.2, None]}}), "fused", (12, 4))[0] == DEFAULT_HELDOUT_SPREAD


def test_missing_sensitivities_are_named_with_what_they_cost_the_fused_maps(tmp_path):
    """Equal sensitivities distort fused maps themselves (benchmarks/measured.py --factors): the note says so."""
    from tomosweep.phantoms import TiltScheme, make_specimen, simulate

    acq = simulate(make_specimen("core_shell_cube", 16), TiltScheme(9, chem_every=3), rng=0)
    _write_cell_series(tmp_path / "data", acq)
    with (tmp_path / "data" / "data.toml").open("a") as f:
        f.write('[weights]\nmethod = "fused"\nn_iter = 5\n')
    done = reconstruct_data(tmp_path / "data" / "data.toml", tmp_path / "out", holdout=None)
    (note,) = [n for n in done.notes if n.startswith("no [chem.sensitivity] given")]
    assert "distort the maps themselves, not only their ratios" in note
    record = json.loads((tmp_path / "out" / "reconstruction.json").read_text())
    assert note in record["notes"]


def test_a_study_of_another_size_is_named_for_its_lambda_tv(study_store):
    """The best lambda_tv grows about as n² (map_cost.py --only transfer): data far from the study's size are told."""
    from tomosweep.microscope.weights import size_note, study_weights

    weights = study_weights(study_store, "fused", 12, 4)
    assert weights.study_size == 16 and "lambda_tv" in weights.params
    assert size_note(weights, 16) is None and size_note(weights, 19) is None and size_note(weights, 13) is None
    note = size_note(weights, 64)
    assert note.startswith("the study searched its weights at 16³ and these data are 64 voxels across")
    assert "may be about 16× off here" in note
    assert "0.062×" in size_note(weights, 4)


def _drifting_cell_series(folder, *, align: str) -> tuple[object, dict[str, float]]:
    """The study's cell 12×4 as a drifting microscope series with its own [weights] (no study needed)."""
    from tomosweep.series import apply_shifts

    _, acq = simulate_cell(study_from_dict(STUDY), 12, 4)
    t = np.radians(acq.haadf_angles)
    drift = np.stack([1.2 * np.sin(1.3 * t) + 0.4, 0.8 * np.cos(1.7 * t) - 0.3], axis=1)
    folder.mkdir(exist_ok=True)
    write_mrc(folder / "haadf.mrc", apply_shifts(acq.haadf, -drift), acq.haadf_angles)
    chem_drift = drift[[int(np.argmin(np.abs(acq.haadf_angles - a))) for a in acq.chem_angles]]
    for k, e in enumerate(acq.elements):
        counts = np.round(apply_shifts(acq.chem[k], -chem_drift))
        tifffile.imwrite(folder / f"{e}.tif", counts.astype(np.float32), photometric="minisblack")
    write_rawtlt(folder / "maps.rawtlt", acq.chem_angles)
    maps = "\n".join(f'{e} = "{e}.tif"' for e in acq.elements)
    weights = {"lambda_haadf": 0.5, "lambda_tv": 1.0, "n_iter": 20.0}
    (folder / "data.toml").write_text(
        f'gamma = 1.7\npixel_size_nm = 0.5\n[haadf]\nfile = "haadf.mrc"\n[chem]\nangles = "maps.rawtlt"\n'
        f'[chem.elements]\n{maps}\n[align]\n{align}\n[weights]\nmethod = "fused"\n'
        + "".join(f"{k} = {v!r}\n" for k, v in weights.items())
    )
    return folder / "data.toml", weights


def _volumes(out) -> np.ndarray:
    return np.load(out / "volumes.npz")["volumes"].astype(np.float64)


def test_aligned_series_and_shifts_written_reproduce_the_volumes(tmp_path):
    """The aligned series (MRC + .tlt), re-read with method = "none", and the written shifts.json and IMOD
    .xf applied to the raw series with method = "file", each give the same volumes."""
    import mrcfile

    data, _ = _drifting_cell_series(tmp_path / "raw", align='method = "xcorr"')
    first = reconstruct_data(data, tmp_path / "first", holdout=None)
    out = tmp_path / "first"
    for name in ("aligned_haadf.mrc", "aligned_haadf.tlt", "aligned_chem.tlt", "aligned.toml", "shifts.json"):
        assert name in first.files and (out / name).is_file()
    assert {"alignment.xf", "alignment.tlt"} <= set(first.files)
    record = json.loads((out / "reconstruction.json").read_text())
    assert record["dose"]["mode"] == "auto" and len(record["dose"]["haadf_dose"]) == 12
    angles = np.loadtxt(out / "aligned_haadf.tlt")
    np.testing.assert_allclose(angles, record["alignment"]["angles"], atol=1e-6)
    with mrcfile.open(out / "aligned_haadf.mrc") as mrc:
        assert mrc.data.shape == (12, 16, 16)
        assert float(mrc.voxel_size.x) == pytest.approx(5.0)  # 0.5 nm in Å
    for e in first.elements:
        with mrcfile.open(out / f"aligned_{e}.mrc") as mrc:
            assert mrc.data.shape == (4, 16, 16) and mrc.data.min() >= 0
    volumes = _volumes(out)
    scale = np.abs(volumes).max()

    again = reconstruct_data(out / "aligned.toml", tmp_path / "again", holdout=None)
    assert again.alignment is None
    np.testing.assert_allclose(_volumes(tmp_path / "again"), volumes, atol=1e-4 * scale)

    for name, files in (("shifts.json", ["shifts.json"]), ("alignment.xf", ["alignment.xf", "alignment.tlt"])):
        folder = tmp_path / name
        data, _ = _drifting_cell_series(folder, align=f'method = "file"\nfile = "{name}"')
        for f in files:
            (folder / f).write_bytes((out / f).read_bytes())
        done = reconstruct_data(data, tmp_path / f"from_{name}", holdout=None)
        assert done.alignment is not None and done.alignment["method"] == "file"
        np.testing.assert_allclose(
            np.asarray(done.alignment["shift_det_px"]), record["alignment"]["shift_det_px"], atol=1e-4
        )
        np.testing.assert_allclose(_volumes(tmp_path / f"from_{name}"), volumes, atol=1e-4 * scale)
