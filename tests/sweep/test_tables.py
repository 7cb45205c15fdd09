"""``tomosweep status`` and ``tomosweep methods`` never cut a number or a name.

At 80 columns (a terminal console forced to that width) and piped (no terminal), every number
and name the table shows appears whole, no ``…``, no line over the width; ``--format csv|json``
prints the same data as :func:`tomosweep.sweep.study_status` (or the method registry), in full
precision, as plain text a script parses.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from sweep_support import tiny_study

from tomosweep.results import OK, TrialRecord
from tomosweep.sweep import study_from_dict, study_status
from tomosweep.sweep.api import create_store
from tomosweep.sweep.methods import METHODS

N_ELEMENTS = 4  # nanocubes: Co, Cu, O, Au


def _trial(method: str, h: int, k: int) -> TrialRecord:
    # many digits, different in every cell, so a cut or a wrong row shows
    value = 0.2512345678 + 0.0123456789 * k + (0.1 if method == "sirt" else 0.0) + 0.00731 * h
    if method == "fused":
        params = {"lambda_haadf": 0.512345678 + 1.3 * k + 0.01 * h, "lambda_tv": 1.0, "n_iter": 4.0}
    else:
        params = {"n_iter": 3.0 + k + h}
    return TrialRecord(
        method=method,
        n_haadf=h,
        n_chem=3,
        params=params,
        status=OK,
        nrmse=value,
        nrmse_elements=(value,) * N_ELEMENTS,
        iterations=4,
        wall_time_s=0.1,
        worker="w",
        finished_at=1.0,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The tiny study's store, three trials per cell (out of four), written without a cluster."""
    path = tmp_path_factory.mktemp("tables") / "s[1].zarr"  # brackets: a path is text, not markup
    with create_store(study_from_dict(tiny_study()), path, elements=("Co", "Cu", "O", "Au")) as opened:
        for k in range(3):
            for method in ("fused", "sirt"):
                for h in (5, 9):
                    opened.append(_trial(method, h, k))
    return path


def _run_cli(args, capsys, monkeypatch, *, width: int | None = None, errors: list | None = None) -> tuple[int, str]:
    """Run ``tomosweep ARGS`` in-process; ``width``: on a terminal console of that many columns."""
    from tomosweep import cli

    screen = io.StringIO()
    if width is not None:
        terminal = Console(file=screen, width=width, force_terminal=True, color_system=None, legacy_windows=False)
        monkeypatch.setattr(cli.study, "out", terminal)
    monkeypatch.setattr(sys, "argv", ["tomosweep", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    if errors is not None:
        errors.extend(captured.err.splitlines())
    return code, screen.getvalue() + captured.out


def _shown(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4g}"


def _status_numbers(store: Path) -> list[tuple[str, list[str]]]:
    """What each row of the status table must show whole: (method, [cell, trials, best, each best param])."""
    frame = study_status(store)
    params = ("lambda_haadf", "lambda_tv", "n_iter")
    rows = []
    for row in frame.to_dict("records"):
        given = [(p, _shown(row[p])) for p in params if math.isfinite(row[p])]
        rows.append(
            (
                row["method"],
                [f"{row['n_haadf']}×{row['n_chem']}", f"{row['trials']}/{row['budget']}", _shown(row["best_nrmse"])],
                given,
            )
        )
    return rows


def _tokens(text: str) -> set[str]:
    return {token for line in text.splitlines() for token in line.replace("│", " ").replace("┃", " ").split()}


def test_status_at_80_columns_shows_every_number_whole(store, capsys, monkeypatch):
    code, text = _run_cli(["status", store], capsys, monkeypatch, width=80)
    assert code == 0
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80, text
    tokens = _tokens(text)
    for method, numbers, params in _status_numbers(store):
        assert method in tokens
        for number in numbers:
            assert number in tokens, (number, text)
        for name, value in params:
            assert f"{name}={value}" in tokens, (name, value, text)  # the narrow layout: name=value pairs
    assert len({n[2] for _, n, _ in _status_numbers(store)}) == 4  # four cells, four different bests shown


def test_status_piped_is_one_line_per_cell_with_every_number(store):
    result = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "status", str(store)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    assert str(store) in result.stdout.splitlines()[0]  # the title: the path whole, brackets kept
    header = next(line for line in result.stdout.splitlines() if "method" in line)
    for name in ("lambda_haadf", "lambda_tv", "n_iter"):
        assert name in header  # wide: a column per parameter
    assert "lambda_chem" not in header  # no cell has a value for it: no column of dashes
    lines = [line.split("│")[1:-1] for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(lines) == 4
    for cells, (method, numbers, params) in zip(lines, _status_numbers(store), strict=True):
        cells = [cell.strip() for cell in cells]
        assert cells[0] == method and cells[1:3] == numbers[:2] and cells[5] == numbers[2]
        assert [c for c in cells[6:] if c != "–"] == [value for _, value in params]


def _same(shown, stored) -> bool:
    if isinstance(stored, float) and math.isnan(stored):
        return shown is None or (isinstance(shown, float) and math.isnan(shown))
    return shown == stored


def test_status_csv_and_json_are_the_study_status_data(store, capsys, monkeypatch):
    frame = study_status(store)
    code, text = _run_cli(["status", store, "--format", "csv"], capsys, monkeypatch)
    assert code == 0
    parsed = pd.read_csv(io.StringIO(text))
    parsed["stopped"] = parsed["stopped"].astype(object).fillna("")  # empty: the cell has not stopped early
    assert list(parsed.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(parsed, frame, check_dtype=False, check_exact=True)

    code, text = _run_cli(["status", store, "--format", "json"], capsys, monkeypatch)
    assert code == 0
    records = json.loads(text)
    assert [list(r) for r in records] == [list(frame.columns)] * len(frame)
    for shown, stored in zip(records, frame.to_dict("records"), strict=True):
        assert all(_same(shown[k], v) for k, v in stored.items()), (shown, stored)
    assert records[0]["best_nrmse"] == frame["best_nrmse"].iloc[0]  # every digit, not the table's four


def test_csv_is_plain_even_on_a_narrow_terminal(store, capsys, monkeypatch):
    code, text = _run_cli(["status", store, "--format", "csv"], capsys, monkeypatch, width=20)
    assert code == 0
    assert text.splitlines()[0] == ",".join(study_status(store).columns)  # no wrap, no box, no colour


def _method_rows() -> list[dict]:
    return [
        {"method": m.name, "parameter": p.name, "type": p.kind, "default": p.default, "low": p.low, "high": p.high}
        | {"prior": p.prior, "searched": p.searched, "meaning": p.doc}
        for m in METHODS.values()
        for p in m.params
    ]


@pytest.mark.parametrize("width", [80, None])
def test_methods_never_cut_a_name_a_number_or_a_meaning(width, capsys, monkeypatch):
    if width is None:  # piped: the real stdout console of a command whose output is captured
        from tomosweep.cli import common, study

        monkeypatch.setenv("COLUMNS", "80")
        monkeypatch.setattr(study, "out", common._console(stderr=False))
    code, text = _run_cli(["methods"], capsys, monkeypatch, width=width)
    assert code == 0
    assert "…" not in text
    if width:
        assert max(len(line) for line in text.splitlines()) <= width, text
    else:
        assert max(len(line) for line in text.splitlines()) > 80  # piped: nothing wrapped
    tokens = _tokens(text)
    for row in _method_rows():
        expected = [row["method"], row["parameter"], row["type"], f"{row['default']:g}"]
        expected += [f"{row['low']:g}–{row['high']:g}", row["prior"], "searched" if row["searched"] else "fixed"]
        for value in expected:
            assert value in tokens, (value, text)
        for word in row["meaning"].split():  # wrapped between words, never inside one
            assert word in tokens, (word, row["meaning"], text)
    assert "(e.g. [methods.fused])" in " ".join(text.split())  # the example is text, not markup


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_methods_csv_and_json_are_the_registry(fmt, capsys, monkeypatch):
    code, text = _run_cli(["methods", "--format", fmt], capsys, monkeypatch)
    assert code == 0
    if fmt == "csv":
        parsed = pd.read_csv(io.StringIO(text)).to_dict("records")
    else:
        parsed = json.loads(text)
    assert parsed == _method_rows()


def test_an_unknown_format_is_one_error_line(capsys, monkeypatch):
    errors: list[str] = []
    code, text = _run_cli(["methods", "--format", "xml"], capsys, monkeypatch, errors=errors)
    assert code == 2 and text == ""
    assert [line for line in errors if line.startswith("error:")] == [
        "error: Invalid value for '--format': 'xml' is not one of 'table', 'csv', 'json'."
    ], errors
