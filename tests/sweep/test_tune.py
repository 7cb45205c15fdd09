"""``tomosweep tune``: the weights searched on the measured series itself, with a loss that needs no truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from tomosweep.cli import app
from tomosweep.results import SweepStore
from tomosweep.series import write_mrc, write_rawtlt
from tomosweep.solvers import nrmse
from tomosweep.sweep.api import resume_study, run_tune, stored_prepared, study_status
from tomosweep.sweep.methods import METHODS
from tomosweep.sweep.spec import study_from_dict
from tomosweep.sweep.trial import simulate_cell
from tomosweep.sweep.tune import (
    THINNED,
    fit_weights,
    full_cell,
    heldout_tilts,
    prepare,
    tune_study,
    tune_trial_terms,
)

STUDY = {
    "name": "twin",
    "seed": 3,
    "phantom": {"name": "core_shell_cube", "size": 16},
    "acquisition": {"n_haadf": [16], "n_chem": [5]},
    "methods": {"fused": {}},
    "budget": {"trials_per_cell": 1, "initial_points": 1},
}

TUNE = """
[methods.fused]
lambda_haadf = { low = 0.05, high = 20, prior = "log" }
lambda_tv = { low = 0.05, high = 20, prior = "log" }
n_iter = 30
[budget]
trials_per_cell = BUDGET
initial_points = 2
[tune]
splits = 1
[cluster]
n_workers = 1
"""


def write_series(folder, *, budget: int = 3, tune: str | None = None, haadf_only: bool = False):
    """A measured series as a microscope writes it (MRC + TIFF maps in counts + .rawtlt) and its truth."""
    specimen, acq = simulate_cell(study_from_dict(STUDY), 16, 5)
    folder.mkdir(parents=True, exist_ok=True)
    write_mrc(folder / "haadf.mrc", acq.haadf, acq.haadf_angles)
    text = 'gamma = 1.7\n[haadf]\nfile = "haadf.mrc"\nbackground = 0\n'
    if not haadf_only:
        for k, e in enumerate(acq.elements):
            tifffile.imwrite(folder / f"{e}.tif", acq.chem[k].astype(np.float32), photometric="minisblack")
        write_rawtlt(folder / "maps.rawtlt", acq.chem_angles)
        maps = "\n".join(f'{e} = "{e}.tif"' for e in acq.elements)
        background = ", ".join(f"{e} = {acq.background[e]!r}" for e in acq.elements)
        text += f'[chem]\nangles = "maps.rawtlt"\nbackground = {{ {background} }}\n[chem.elements]\n{maps}\n'
    text += '[align]\nmethod = "none"\n'
    text += (TUNE if tune is None else tune).replace("BUDGET", str(budget))
    (folder / "data.toml").write_text(text)
    return folder / "data.toml", specimen


def tomosweep(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", *args], capture_output=True, text=True, timeout=300, **kw
    )


def test_the_loss_ranks_weights_as_the_truth_does(tmp_path):
    """Numbers against ground truth: the held-out loss prefers the weights the true NRMSE prefers."""
    data, specimen = write_series(tmp_path / "d")
    study, series = tune_study(data)
    prepared, _ = prepare(series)
    points = [
        {"lambda_haadf": 1.0, "lambda_tv": 0.5},
        {"lambda_haadf": 1.0, "lambda_tv": 40.0},  # smoothed flat
        {"lambda_haadf": 0.01, "lambda_tv": 0.01},  # chemistry alone, noise kept
    ]
    losses, errors = [], []
    for point in points:
        terms = tune_trial_terms(study, prepared, "fused", point)
        losses.append(terms["splits"][0]["chem"])
        volume = METHODS["fused"].run(full_cell(prepared), {**study.fixed("fused"), **point}, "cpu").volume
        errors.append(float(np.mean(nrmse(np.asarray(volume), specimen.volumes, channel_axis=0))))
    assert np.argmin(losses) == np.argmin(errors) == 0
    assert losses[0] < 1.0  # better than the chemical-only start
    # deterministic: the same point on the same data gives the same loss
    again = tune_trial_terms(study, prepared, "fused", points[0])["splits"][0]["chem"]
    assert again == losses[0]


def test_thinned_weights_and_held_out_tilts():
    assert fit_weights("fused", {"lambda_haadf": 2.0, "lambda_tv": 1.0, "n_iter": 30}, 0.5, thinned=True) == {
        "lambda_haadf": 4.0,
        "lambda_tv": 2.0,
        "n_iter": 30.0,
    }
    assert fit_weights("sirt", {"n_iter": 30}, 0.5, thinned=True) == {"n_iter": 30.0}
    assert set(THINNED) == {"fused", "poisson_ml_tv"}
    first, turned = heldout_tilts(45, 0.1), heldout_tilts(45, 0.1, 1)
    assert len(first) == 4 and not set(first) & set(turned)
    assert all(0 < i < 44 for i in (*first, *turned))


@pytest.mark.slow
def test_tune_run_status_resume_extend_and_reconstruct_data(tmp_path, client):
    data, _ = write_series(tmp_path / "d", budget=2)
    store = tmp_path / "t.zarr"
    summary = run_tune(data, store, client=client)
    assert summary.n_trials == 2 and summary.complete
    with SweepStore.open(store) as opened:
        records = opened.records()
        assert opened.n_haadf == (16,) and opened.n_chem == (5,)
        assert set(opened.inputs) >= {"data.file", "data.series.0"}
        prepared = stored_prepared(opened)
    assert prepared is not None and prepared.elements == ("Co", "Mn", "O")
    for r in records:
        assert r.ok and 0 < r.nrmse < 2
        assert r.info["objective"].startswith("tune (chem)")
        loss = r.info["loss"]
        assert loss["minimised"] == "chem" and len(loss["splits"]) == 1 and loss["haadf"] > 0
        assert r.nrmse == pytest.approx(loss["chem"])
    frame = study_status(store)
    assert "best_loss" in frame.columns and "best_nrmse" not in frame.columns
    assert frame["loss"][0].startswith("chem: held-out Poisson deviance")

    # raise the budget in the data file: resume --extend keeps every trial and adds the rest
    data.write_text(data.read_text().replace("trials_per_cell = 2", "trials_per_cell = 4"))
    more = resume_study(store, study=data, extend=True, client=client)
    assert more.n_trials == 4 and more.n_new == 2
    with SweepStore.open(store) as opened:
        kept = opened.records()[:2]
    assert [r.params for r in kept] == [r.params for r in records]

    # the tuned weights go to reconstruct-data
    result = CliRunner().invoke(
        app, ["reconstruct-data", str(data), "--weights", str(store), "--out", str(tmp_path / "r"), "--holdout", "0"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r" / "reconstruction.json").read_text())
    best = frame.iloc[0]
    assert "t.zarr" in record["weights_from"]
    with SweepStore.open(store) as opened:
        loss, params = opened.best("fused", (16, 5))
    assert record["weights"]["lambda_tv"] == pytest.approx(params["lambda_tv"])
    assert best["best_loss"] >= loss  # the extension can only have improved it

    # a data file changed since the tune is refused on resume, nothing written
    tifffile.imwrite(tmp_path / "d" / "Co.tif", np.zeros((5, 16, 16), np.float32), photometric="minisblack")
    with pytest.raises(Exception, match="has changed since"):
        resume_study(store, client=client)
    assert SweepStore.open(store).n_committed == 4


@pytest.mark.slow
def test_tune_cli_status_json_check_export_and_questions_that_need_a_truth(tmp_path):
    data, _ = write_series(tmp_path / "d", budget=2)
    store = tmp_path / "t.zarr"
    result = tomosweep("tune", str(data), "--store", str(store), "-q")
    assert result.returncode == 0, result.stderr
    assert "reconstruct-data" in result.stdout
    status = tomosweep("status", str(store), "--format", "json")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout)[0]
    assert row["best_loss"] > 0 and {"lambda_haadf", "lambda_tv"} <= set(row) and "no ground truth" in row["loss"]
    table = tomosweep("status", str(store))
    assert "best loss" in table.stdout and "no ground truth" in " ".join(table.stdout.split())
    check = tomosweep("check", str(store))
    assert check.returncode == 0, check.stdout + check.stderr
    exported = tomosweep("export", str(store), "--out", str(tmp_path / "ex"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "ex" / "best_params.csv").is_file()
    for args in (["plan", str(store), "--target", "0.3"], ["replicate", str(store), "--seeds", "1"]):
        refused = tomosweep(*args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert "tune" in refused.stderr and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_tune_killed_before_its_series_was_stored_resumes_from_the_data_files(tmp_path, client):
    data, _ = write_series(tmp_path / "d", budget=2)
    store = tmp_path / "t.zarr"
    run_tune(data, store, client=client)
    # as a driver killed between creating the store and keeping the aligned series leaves it
    with SweepStore.open(store, writable=True) as opened:
        opened._group.update_attributes({"prepared": {}})  # the commit point of write_prepared, undone
    data.write_text(data.read_text().replace("trials_per_cell = 2", "trials_per_cell = 3"))
    done = resume_study(store, study=data, extend=True, client=client)
    assert done.n_trials == 3
    with SweepStore.open(store) as opened:
        assert stored_prepared(opened) is not None


@pytest.mark.slow
def test_a_haadf_only_series_tunes_sirts_iterations_on_held_out_tilts(tmp_path, client):
    tune = '[methods.sirt]\nn_iter = { low = 2, high = 100, prior = "log" }\n[budget]\ntrials_per_cell = BUDGET\n'
    tune += "initial_points = 2\n"
    data, _ = write_series(tmp_path / "d", budget=3, tune=tune, haadf_only=True)
    store = tmp_path / "t.zarr"
    summary = run_tune(data, store, client=client)
    assert summary.n_trials == 3
    records = SweepStore.open(store).records()
    assert all(r.ok and r.info["loss"]["minimised"] == "haadf" for r in records)
    assert all(0 < r.nrmse < 1 for r in records)
    assert SweepStore.open(store).n_chem == (0,)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("[budget]\ntrials_per_cell = 0\n", "budget.trials_per_cell"),
        ('[methods.fused]\nlambda_tv = "big"\n', "methods.fused.lambda_tv"),
        ("[tune]\nfraction = 1.5\n", "data.fraction"),
        ("[tune]\nsplitz = 2\n", "splitz"),
        ("[methods.nope]\n", "unknown method 'nope'"),
        ("[budget]\ntrials_per_cell = 6\nladder = [16]\n", "ladder needs a simulated specimen"),
    ],
)
def test_bad_tune_tables_are_one_clear_line_and_nothing_is_written(tmp_path, edit, expected):
    data, _ = write_series(tmp_path / "d", tune=edit)
    store = tmp_path / "t.zarr"
    result = tomosweep("tune", str(data), "--store", str(store))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not store.exists()


def test_normalised_maps_and_a_haadf_only_fused_tune_are_refused(tmp_path):
    data, _ = write_series(tmp_path / "d")
    data.write_text(
        data.read_text().replace(
            '[chem]\nangles = "maps.rawtlt"', '[chem]\nunits = "normalised"\nangles = "maps.rawtlt"'
        )
    )
    result = tomosweep("tune", str(data), "--store", str(tmp_path / "t.zarr"))
    assert result.returncode == 2 and "raw counts" in result.stderr and not (tmp_path / "t.zarr").exists()
    only, _ = write_series(tmp_path / "h", haadf_only=True)
    result = tomosweep("tune", str(only), "--store", str(tmp_path / "h.zarr"))
    assert result.returncode == 2 and "HAADF-only" in result.stderr and not (tmp_path / "h.zarr").exists()


@pytest.mark.slow
def test_an_interrupted_tune_resumes_to_its_full_budget(tmp_path):
    data, _ = write_series(tmp_path / "d", budget=5)
    store = tmp_path / "t.zarr"
    driver = subprocess.Popen(
        [sys.executable, "-m", "tomosweep.cli", "tune", str(data), "--store", str(store), "-q"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        try:
            if SweepStore.open(store).n_committed >= 2:
                break
        except Exception:
            pass
        time.sleep(0.02)
    assert driver.poll() is None
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    killed_at = SweepStore.open(store).n_committed
    result = tomosweep("resume", str(store), "-q")
    assert result.returncode == 0, result.stderr
    records = SweepStore.open(store).records()
    assert len(records) == 5 and killed_at >= 2
    assert len({json.dumps(r.params, sort_keys=True) for r in records}) == 5
