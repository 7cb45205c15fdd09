"""The live page's reading side: what it computes from a store a driver may be writing, and its server."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request

import numpy as np
import pytest
import zarr

from tomosweep.errors import StoreError, TomosweepError
from tomosweep.results import FAILED, OK, PRUNED, SweepStore, TrialRecord
from tomosweep.view import serve
from tomosweep.view.heartbeat import driver_state, live_file_is_ours, live_path, read_live, write_live
from tomosweep.view.page import status_html
from tomosweep.view.snapshot import StoreReader, cell_table, colour_scale, heat_label, progress

SPEC = {
    "name": "view-test",
    "methods": {
        "fused": {"lambda_haadf": {"low": 0.1, "high": 10.0, "prior": "log"}, "n_iter": 4},
        "sirt": {"n_iter": {"low": 2, "high": 30, "prior": "log"}},
    },
    "budget": {"trials_per_cell": 5},
}


def new_store(path) -> SweepStore:
    return SweepStore.create(
        path,
        spec=SPEC,
        spec_hash="abc",
        methods=["fused", "sirt"],
        param_names=["lambda_haadf", "n_iter"],
        elements=("Co", "O"),
        n_haadf=[5, 9],
        n_chem=[3, 6],
    )


def trial(method="sirt", h=5, c=3, nrmse=0.5, status=OK, weight=7.0, at=None) -> TrialRecord:
    params = {"n_iter": weight} if method == "sirt" else {"lambda_haadf": weight, "n_iter": 4.0}
    return TrialRecord(
        method=method,
        n_haadf=h,
        n_chem=c,
        params=params,
        status=status,
        nrmse=nrmse if status != FAILED else math.nan,
        nrmse_elements=(nrmse, nrmse) if status != FAILED else (),
        iterations=4,
        wall_time_s=0.1,
        worker="w1",
        error="" if status != FAILED else "DivergenceError: NaN",
        finished_at=time.time() if at is None else at,
    )


@pytest.fixture()
def filled(tmp_path):
    """A store still held by its 'driver' (locked), with ok, failed and pruned trials."""
    store = new_store(tmp_path / "s.zarr")
    for r in (
        trial("sirt", 5, 3, 0.61, weight=4),
        trial("sirt", 5, 3, 0.42, weight=9),
        trial("sirt", 5, 3, 0.42, weight=12),  # a tie keeps the earlier trial's weights, as the maps do
        trial("sirt", 5, 3, status=FAILED),
        trial("sirt", 9, 6, 0.31, weight=20),
        trial("sirt", 9, 6, 0.05, status=PRUNED),  # never a cell's best
        trial("fused", 9, 3, 0.222, weight=0.5),
        trial("fused", 9, 3, 0.19, weight=2.5),
        trial("fused", 5, 6, 0.35, weight=1.0),
    ):
        store.append(r)
    yield store
    store.close()


def by_cell(table: dict, column: str) -> dict:
    """``{(method, n_haadf, n_chem): value}`` of one column of :func:`cell_table`."""
    keys = zip(table["method"], table["n_haadf"], table["n_chem"], strict=True)
    return dict(zip(keys, table[column], strict=True))


def test_cells_agree_with_the_stores_maps(filled):
    snap = StoreReader(filled.path).read()
    table = cell_table(snap)
    assert table["method"][:4] == ["fused"] * 4 and table["method"][4:] == ["sirt"] * 4
    for method in filled.methods:
        maps = filled.maps(method)
        rows = [k for k, m in enumerate(table["method"]) if m == method]
        np.testing.assert_array_equal(np.array([table["best_nrmse"][k] for k in rows]), maps["best_nrmse"].ravel())
        assert [table["done"][k] for k in rows] == maps["n_trials"].ravel().tolist()
        assert [table["failed"][k] for k in rows] == maps["n_failed"].ravel().tolist()
    k = table["method"].index("sirt")  # sirt at 5 × 3
    assert (table["n_haadf"][k], table["n_chem"][k]) == (5, 3)
    assert table["best_weights"][k] == "n_iter 9" and table["budget"][k] == 5
    pruned = by_cell(table, "pruned")
    assert pruned[("sirt", 9, 6)] == 1 and sum(pruned.values()) == 1
    assert by_cell(table, "best_nrmse")[("fused", 9, 3)] == 0.19
    assert by_cell(table, "best_weights")[("fused", 9, 3)] == "lambda_haadf 2.5"


def test_scale_and_labels_are_the_exports(filled):
    """The page's colour scale and cell texts are those of the exported heatmap."""
    from tomosweep.results.export import heatmap_figure

    table = cell_table(StoreReader(filled.path).read())
    fig = heatmap_figure(filled)
    axes = [ax for ax in fig.axes if ax.get_title() in filled.methods]
    assert colour_scale(table["best_nrmse"]) == pytest.approx(axes[0].images[0].get_clim())
    for ax in axes:
        method = ax.get_title()
        exported = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
        for k, m in enumerate(table["method"]):
            if m == method:
                at = (filled.n_haadf.index(table["n_haadf"][k]), filled.n_chem.index(table["n_chem"][k]))
                assert heat_label(table["best_nrmse"][k]) == exported[at]
    assert colour_scale([math.nan]) == (0.0, 1.0) and colour_scale([0.3, 0.3]) == (0.3, 0.3 + 1e-3)


def test_reading_takes_no_lock_and_the_driver_goes_on(filled):
    lock = filled.path / ".tomosweep.lock"
    before = lock.read_bytes()
    reader = StoreReader(filled.path, min_interval_s=0.0)
    assert reader.read().n_committed == 9
    filled.append(trial("sirt", 9, 3, 0.5))  # the driver still holds the lock and writes
    assert reader.read().n_committed == 10
    assert lock.read_bytes() == before
    assert not filled.path.with_name("s.zarr.live.json").exists()  # the page writes nothing


def test_rows_beyond_the_commit_point_are_not_shown(filled):
    """A driver killed between a row's columns and its commit leaves a row that counts nowhere."""
    group = zarr.open_group(filled.path, mode="r+")
    n = group.attrs["n_committed"]
    group["trials/method"][n] = 0
    group["trials/n_haadf"][n] = 5
    group["trials/n_chem"][n] = 3
    group["trials/nrmse"][n] = 0.001
    snap = StoreReader(filled.path).read()
    assert snap.n_committed == n and len(snap.meta) == n
    assert min(v for v in cell_table(snap)["best_nrmse"] if math.isfinite(v)) == 0.19


def test_columns_caught_mid_growth_are_read_again(filled):
    """Growing the trial columns is one resize per column: a reader can see them of unequal length."""
    reader = StoreReader(filled.path, min_interval_s=0.0)
    first = reader.read()
    group = zarr.open_group(filled.path, mode="r+")
    length = group["trials/status"].shape[0]
    group["trials/status"].resize((length + 256,))  # the driver has grown one column so far
    with pytest.raises(StoreError, match="differ in length"):
        SweepStore.open(filled.path)
    kept = reader.read_or_last()
    assert kept is first and "differ in length" in kept.note  # the page keeps the view before, and says why
    assert "reading the store failed just now" in status_html(kept)

    def finish_growing():
        time.sleep(0.08)
        for name in ("method", "n_haadf", "n_chem", "nrmse", "iterations", "wall_time_s", "meta"):
            group[f"trials/{name}"].resize((length + 256,))
        for name in ("params", "nrmse_elements"):
            group[f"trials/{name}"].resize((length + 256, group[f"trials/{name}"].shape[1]))

    grower = threading.Thread(target=finish_growing)
    grower.start()
    snap = reader.read()  # retried until the driver is done growing
    grower.join()
    assert snap.n_committed == 9 and not snap.note


def test_progress_from_the_trials_and_the_heartbeat(filled):
    now = time.time()
    write_live(
        filled.path,
        {
            "pid": 1,
            "host": "h",
            "started": now - 120,
            "updated": now - 1,
            "state": "running",
            "workers": 3,
            "threads": 6,
            "running": {"sirt/5/3": 2, "fused/9/6": 1},
            "budget": 40,
            "dashboard": "http://127.0.0.1:8787/status",
        },
    )
    assert live_file_is_ours(filled.path) and read_live(filled.path)["workers"] == 3
    snap = StoreReader(filled.path).read()
    p = progress(snap, now)
    assert (p["done"], p["budget"], p["failed"], p["pruned"], p["running"]) == (9, 40, 1, 1, 3)
    assert (p["state"], p["workers"], p["threads"]) == ("running", 3, 6)
    assert p["rate_per_min"] == pytest.approx(9 / 2, rel=0.02)  # 9 trials in the 2 minutes since the start
    assert p["eta_s"] == pytest.approx((40 - 9) / (9 / 2) * 60, rel=0.02)
    table = cell_table(snap)
    running = by_cell(table, "running")
    assert running[("sirt", 5, 3)] == 2 and running[("fused", 9, 6)] == 1 and sum(running.values()) == 3
    text = status_html(snap, now)
    assert '<span data-ts="workers">3</span>' in text and "Dask dashboard" in text
    # a heartbeat that stopped long ago: no driver, nothing running, no workers
    stale = {**read_live(filled.path), "updated": now - 3600}
    write_live(filled.path, stale)
    snap = StoreReader(filled.path).read()
    assert driver_state(snap.live, now) == "gone"
    assert progress(snap, now)["workers"] == 0 and sum(cell_table(snap)["running"]) == 0
    assert "no driver: its last heartbeat was 1 h 00 min ago" in status_html(snap, now)


def test_a_foreign_file_where_the_heartbeat_goes_is_not_ours(tmp_path):
    store = tmp_path / "s.zarr"
    live_path(store).write_text("my notes")
    assert not live_file_is_ours(store) and read_live(store) is None
    live_path(store).write_text(json.dumps({"format": "tomosweep-live", "state": "finished"}))
    assert live_file_is_ours(store) and driver_state(read_live(store), time.time()) == "finished"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_the_server_serves_the_page_and_refuses_a_missing_store(filled, tmp_path):
    with serve(filled.path, refresh_s=1.0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        page = _get(server.url)
        assert "<title>tomosweep view — view-test</title>" in page and "bokeh" in page
    with pytest.raises(StoreError, match="no store at"):
        serve(tmp_path / "missing.zarr")
    with serve(tmp_path / "coming.zarr", wait=True) as server:  # `run --view` starts before the store exists
        assert "<title>tomosweep view</title>" in _get(server.url)
    with pytest.raises(TomosweepError, match="--port must be"):
        serve(filled.path, port=70000)
    with serve(filled.path) as server, pytest.raises(TomosweepError, match="cannot serve the view on 127.0.0.1"):
        serve(filled.path, port=server.port)


def test_cells_that_stopped_early_say_why_in_the_table_the_tooltip_and_the_cell(filled):
    import concurrent.futures

    from bokeh.document import Document

    from tomosweep.view.page import Page

    reason = "converged: expected improvement below 1 % of its best for 3 asks in a row"
    filled.append(trial("sirt", 9, 6, 0.30, weight=25), optimiser={"sirt/9/6": {"stopped": reason}, "sirt/5/3": {}})
    reader = StoreReader(filled.path)
    stopped = by_cell(cell_table(reader.read()), "stopped")
    assert stopped[("sirt", 9, 6)] == reason
    assert [v for k, v in stopped.items() if k != ("sirt", 9, 6)] == [""] * 7  # as the exports' `stopped` column

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        page = Page(Document(), reader, refresh_s=60.0, landscape=None, executor=executor)
        cells = page.cells_source.data
        row = [k for k, key in enumerate(zip(cells["method"], cells["cell"], strict=True)) if key == ("sirt", "9 × 6")]
        assert [cells["stopped"][k] for k in row] == [reason]
        heat = page.heat_sources["sirt"].data  # the heatmap's tooltip field
        tips = {(y, x): s for y, x, s in zip(heat["y"], heat["x"], heat["stopped"], strict=True)}
        assert tips[("9", "6")] == reason and tips[("5", "3")] == "no"
        page._select((9, 6))
        assert f"stopped before its cap: {reason}" in page.cell_div.text
        page._select((5, 3))
        assert "stopped before its cap" not in page.cell_div.text
