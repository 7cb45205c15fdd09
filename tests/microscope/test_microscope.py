"""plan, replicate and reconstruct-data: ordering, replicates, weights lookup and refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sweep_support import tiny_study
from typer.testing import CliRunner

from tomosweep.cli import app
from tomosweep.errors import InputError
from tomosweep.microscope.plan import parse_cost, plan
from tomosweep.microscope.replicate import replicate_cells
from tomosweep.microscope.weights import study_weights
from tomosweep.results import SweepStore
from tomosweep.results.folders import check_out_folder
from tomosweep.search.warm import nearest_cell
from tomosweep.sweep.spec import study_from_dict


@pytest.fixture(scope="module")
def store(client, tmp_path_factory):
    from tomosweep.sweep.api import run_study

    path = tmp_path_factory.mktemp("plan") / "s.zarr"
    run_study(study_from_dict(tiny_study()), path, client=client)
    return path


def test_nearest_cell_is_nearest_in_log_tilts():
    cells = [(10, 3), (20, 3), (40, 6), (40, 12)]
    assert nearest_cell(cells, 18, 3) == (20, 3)
    assert nearest_cell(cells, 45, 9) == (40, 12)  # log(12/9) < log(9/6)
    assert nearest_cell(cells, 14, 3) == (10, 3)  # log(14/10) < log(20/14)


def test_replicates_are_stored_and_plan_uses_mean_plus_spread(store, client):
    result = replicate_cells(store, method="sirt", seeds=3, client=client)
    assert set(result) == {"sirt/5/3", "sirt/9/3"}
    for entry in result.values():
        values = entry["nrmse"]
        assert len(values) == 3 and len(set(entry["noise_seeds"])) == 3
        assert len(set(values)) == 3, "fresh noise must change the NRMSE"
    with SweepStore.open(store) as opened:
        assert opened.replicates() == result
        rows = plan(opened, 10.0, method="sirt")
        maps = opened.maps("sirt")
    assert [(r.n_haadf, r.n_chem) for r in rows] == [(5, 3), (9, 3)]  # same chemical tilts: fewer HAADF first
    for row in rows:
        values = np.array(result[f"sirt/{row.n_haadf}/{row.n_chem}"]["nrmse"])
        assert row.value == pytest.approx(values.mean() + values.std(ddof=1))
        assert row.meets and row.n_replicates == 3
    assert rows[0].best == pytest.approx(float(maps["best_nrmse"][0, 0]))
    assert set(rows[0].weights) == {"n_iter"}


def test_plan_cost_orders_and_cli_reports(store, tmp_path):
    with SweepStore.open(store) as opened:
        rows = plan(opened, 10.0, method="fused", cost=parse_cost("haadf=1,chem=100"))
    assert [r.cost for r in rows] == [305.0, 309.0]
    runner = CliRunner()
    figure = tmp_path / "frontier.png"
    result = runner.invoke(app, ["plan", str(store), "--target", "0.0001", "--figure", str(figure)])
    assert result.exit_code == 0, result.output
    assert "no cell of the grid reaches 0.0001" in result.output
    assert figure.read_bytes()[:4] == b"\x89PNG"
    inside = runner.invoke(app, ["plan", str(store), "--target", "1", "--figure", str(store / "x.png")])
    assert inside.exit_code == 2 and "must not lie inside the store" in inside.output


@pytest.mark.parametrize(
    ("cost", "message"), [("chem=x", "is not a number"), ("dose=1", "unknown term"), ("chem=-1", "≥ 0")]
)
def test_bad_cost_is_refused(cost, message):
    with pytest.raises(InputError, match=message):
        parse_cost(cost)


def test_study_weights_merge_fixed_values(store):
    weights = study_weights(store, "fused", 8, 4)
    assert weights.cell == (9, 3)
    assert set(weights.params) == {"lambda_haadf", "lambda_chem", "lambda_tv", "n_iter"}
    assert weights.params["lambda_tv"] == 1.0 and weights.params["n_iter"] == 4.0
    assert "s.zarr cell 9×3" in weights.source


def test_reconstruct_data_refuses_a_foreign_output_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds files tomosweep did not write"):
        check_out_folder(tmp_path, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        check_out_folder(tmp_path / "file", overwrite=False)


def test_reconstruct_data_cli_errors_are_one_line(tmp_path):
    np.savez(tmp_path / "o.npz", maps=np.full((3, 8, 8), 5.0), angles=[-30.0, 0.0, 30.0])
    (tmp_path / "d.toml").write_text(
        '[chem]\n[chem.elements]\nO = "o.npz"\n[weights]\nmethod = "fused"\nlambda_x = 1\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tomosweep.cli",
            "reconstruct-data",
            str(tmp_path / "d.toml"),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "fused has no parameter ['lambda_x']" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_chemical_snr_axis_answers_at_what_dose(store, client, tmp_path):
    from tomosweep.microscope.plan import snr_figure

    result = replicate_cells(store, method="sirt", cells=[(5, 3)], seeds=2, chem_snr_scales=[0.5, 2.0], client=client)
    assert set(result) == {"sirt/5/3/snr×0.5", "sirt/5/3/snr×2"}
    low, high = (np.mean(result[f"sirt/5/3/snr×{f}"]["nrmse"]) for f in ("0.5", "2"))
    assert high < low, "four times the chemical SNR must help SIRT"
    with SweepStore.open(store) as opened:
        rows = plan(opened, 10.0, method="sirt", chem_snr_scale=2.0)
        assert [(r.n_haadf, r.n_chem, r.cost) for r in rows] == [(5, 3, 12.0)]  # 3 tilts at 4× the dose
        with pytest.raises(InputError, match="no replicates at 3× the study's chemical SNR"):
            plan(opened, 10.0, method="sirt", chem_snr_scale=3.0)
        figure = snr_figure(opened, "sirt")
    assert figure is not None
    figure.savefig(tmp_path / "snr.png")
    assert (tmp_path / "snr.png").stat().st_size > 1000
