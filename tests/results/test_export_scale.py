"""Export of a large map: a 1,000-cell store exports within 30 s (the convergence figure summarises
beyond CONVERGENCE_PANELS cells) and a SIGTERM stops it with exit 143, writing nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tomosweep.results import SweepStore
from tomosweep.results.export import CONVERGENCE_PANELS, convergence_figure, export

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def build_store(path: Path, **kw) -> Path:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from export_scale import build_store as build
    finally:
        sys.path.remove(str(BENCHMARKS))
    build(path, **kw)
    return path


@pytest.fixture(scope="module")
def thousand(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("big") / "s.zarr", cells=1000, trials=2)


def test_a_small_map_keeps_one_convergence_panel_per_cell(tmp_path):
    with SweepStore.open(build_store(tmp_path / "s.zarr", cells=6, trials=2)) as store:
        assert len(store.n_haadf) * len(store.n_chem) <= CONVERGENCE_PANELS
        assert len(convergence_figure(store).axes) == len(store.n_haadf) * len(store.n_chem)


def test_a_large_maps_convergence_is_one_summary_panel_per_method(tmp_path):
    with SweepStore.open(build_store(tmp_path / "s.zarr", cells=60, trials=1)) as store:
        fig = convergence_figure(store)
        assert len(fig.axes) == len(store.methods) == 1
        assert fig.axes[0].get_title() == "fused: 60 of 60 cells"


@pytest.mark.slow
def test_a_thousand_cell_export_takes_under_30_s(thousand, tmp_path):
    with SweepStore.open(thousand) as store:
        assert len(store.n_haadf) * len(store.n_chem) == 1000 and store.n_committed == 2000
        t0 = time.perf_counter()
        written = export(store, tmp_path / "out")
        seconds = time.perf_counter() - t0
    assert seconds <= 30, f"export of 1,000 cells took {seconds:.1f} s"
    assert {p.name for p in written} >= {"convergence.png", "nrmse_heatmap.svg", "trials.csv", "best_params.csv"}
    assert len((tmp_path / "out" / "trials.csv").read_text().splitlines()) == 2001


@pytest.mark.slow
def test_sigterm_stops_an_export_with_exit_143_and_writes_nothing(thousand, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "tomosweep.cli", "export", str(thousand), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # into the figures: the imports take about 2 s
    process.send_signal(signal.SIGTERM)
    t0 = time.perf_counter()
    stdout, stderr = process.communicate(timeout=30)
    assert time.perf_counter() - t0 < 10
    assert process.returncode == 143, stdout + stderr
    assert (stdout + stderr).strip().splitlines() == ["terminated"]  # one line, no traceback
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []  # the staged files are gone
    assert SweepStore.open(thousand).n_committed == 2000
