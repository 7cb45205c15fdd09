"""The store contract: round trip, commit point, lock, maps, grid growth, bad paths."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import zarr

from tomosweep.errors import StoreError, StoreLockedError
from tomosweep.results import FAILED, OK, SweepStore, TrialRecord

ELEMENTS = ("Co", "O")


def new_store(path, **kw) -> SweepStore:
    args = {
        "spec": {"name": "t"},
        "spec_hash": "abc",
        "methods": ["fused", "sirt"],
        "param_names": ["lambda_tv", "n_iter"],
        "elements": ELEMENTS,
        "n_haadf": [5, 9],
        "n_chem": [3],
    }
    args.update(kw)
    return SweepStore.create(path, **args)


def record(method="sirt", h=5, c=3, nrmse=0.5, status=OK, **kw) -> TrialRecord:
    params = {"n_iter": 7.0} if method == "sirt" else {"lambda_tv": 0.3, "n_iter": 40.0}
    return TrialRecord(
        method=method,
        n_haadf=h,
        n_chem=c,
        params=params,
        status=status,
        nrmse=nrmse if status == OK else math.nan,
        nrmse_elements=(nrmse, nrmse) if status == OK else (),
        iterations=7,
        wall_time_s=0.25,
        worker="w1",
        device="cpu",
        error="" if status == OK else "DivergenceError: NaN",
        info={"final_costs": {"data": 1.5, "nan": math.nan}},
        **kw,
    )


def test_round_trip_and_maps(tmp_path):
    path = tmp_path / "s.zarr"
    with new_store(path) as store:
        assert store.append(record(nrmse=0.6)) == 0
        assert store.append(record(nrmse=0.4)) == 1
        store.append(record(nrmse=0.9))
        store.append(record(status=FAILED))
        store.append(record("fused", 9, 3, nrmse=0.2))
    reopened = SweepStore.open(path)
    assert not reopened.writable and len(reopened) == 5
    records = reopened.records()
    assert [r.trial_id for r in records] == [0, 1, 2, 3, 4]
    assert records[1].nrmse == 0.4 and records[1].params == {"n_iter": 7.0}
    assert records[1].nrmse_elements == (0.4, 0.4) and records[1].worker == "w1"
    assert records[3].status == FAILED and records[3].error == "DivergenceError: NaN"
    assert records[4].params == {"lambda_tv": 0.3, "n_iter": 40.0}
    assert records[0].info == {"final_costs": {"data": 1.5, "nan": None}}  # NaN is not JSON
    sirt = reopened.maps("sirt")
    assert sirt["best_nrmse"][0, 0] == 0.4 and np.isnan(sirt["best_nrmse"][1, 0])
    assert sirt["n_trials"].tolist() == [[4], [0]] and sirt["n_failed"].tolist() == [[1], [0]]
    np.testing.assert_array_equal(sirt["best_params"][0, 0], [np.nan, 7.0])
    fused = reopened.maps("fused")
    assert fused["best_nrmse"][1, 0] == 0.2
    # the arrays on disk say the same (export and status read them)
    group = zarr.open_group(path, mode="r")
    assert group["maps/sirt/best_nrmse"][0, 0] == 0.4
    assert group.attrs["n_committed"] == 5
    assert group["trials/params"].shape[1] == 2


def test_uncommitted_row_is_invisible_and_overwritten(tmp_path):
    path = tmp_path / "s.zarr"
    with new_store(path) as store:
        store.append(record(nrmse=0.5))
    # a driver that died after writing a row's columns but before the commit counter
    group = zarr.open_group(path, mode="r+")
    group["trials/nrmse"][1] = 0.01
    group["trials/method"][1] = 1
    with SweepStore.open(path, writable=True) as store:
        assert len(store) == 1 and len(store.records()) == 1
        store.rebuild_maps()
        assert store.maps("sirt")["best_nrmse"][0, 0] == 0.5
        store.append(record(nrmse=0.7))
        assert store.records()[1].nrmse == 0.7


def test_rebuild_maps_repairs_stale_maps(tmp_path):
    path = tmp_path / "s.zarr"
    with new_store(path) as store:
        store.append(record(nrmse=0.5))
        store.append(record(nrmse=0.3))
    group = zarr.open_group(path, mode="r+")
    group["maps/sirt/best_nrmse"][...] = np.nan  # as if the driver died before its map update
    with SweepStore.open(path, writable=True) as store:
        store.rebuild_maps()
    assert SweepStore.open(path).maps("sirt")["best_nrmse"][0, 0] == 0.3


def test_second_driver_is_refused_and_lock_released_on_close(tmp_path):
    path = tmp_path / "s.zarr"
    store = new_store(path)
    with pytest.raises(StoreLockedError, match=r"being written by another driver \(pid \d+ on .*\)"):
        SweepStore.open(path, writable=True)
    SweepStore.open(path)  # readers are never refused
    store.close()
    SweepStore.open(path, writable=True).close()


def test_read_only_store_refuses_writes(tmp_path):
    path = tmp_path / "s.zarr"
    new_store(path).close()
    with pytest.raises(StoreError, match="opened read-only"):
        SweepStore.open(path).append(record())


def test_bad_paths_and_records(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        SweepStore.open(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a tomosweep store"):
        SweepStore.open(tmp_path / "plain")
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["x"] = 1
    with pytest.raises(StoreError, match="zarr group but not a tomosweep store"):
        SweepStore.open(tmp_path / "other.zarr")
    path = tmp_path / "s.zarr"
    with new_store(path) as store:
        with pytest.raises(StoreError, match="already exists"):
            new_store(path)
        with pytest.raises(StoreError, match=r"cell \(7, 3\) is not on this store's grid"):
            store.append(record(h=7))
        with pytest.raises(StoreError, match="method 'hebt' is not in this store"):
            store.append(record("hebt"))
        assert len(store) == 0


def test_grid_growth_keeps_trials(tmp_path):
    path = tmp_path / "s.zarr"
    with new_store(path) as store:
        store.append(record(h=9, nrmse=0.4))
        store.update_study(spec={"name": "t2"}, spec_hash="def", n_haadf=[5, 9, 12], n_chem=[3, 6])
        assert store.maps("sirt")["best_nrmse"].shape == (3, 2)
        assert store.maps("sirt")["best_nrmse"][1, 0] == 0.4
        store.append(record(h=12, c=6, nrmse=0.1))
        with pytest.raises(StoreError, match="a grid may only grow"):
            store.update_study(spec={}, spec_hash="x", n_haadf=[5], n_chem=[3, 6])
    reopened = SweepStore.open(path)
    assert reopened.n_haadf == (5, 9, 12) and reopened.spec_hash == "def" and len(reopened) == 2


def test_optimiser_state_commits_with_its_trial_and_the_proposer_is_kept(tmp_path):
    with new_store(tmp_path / "s.zarr") as store:
        store.append(replace(record(), proposed_by="EI"), optimiser={"sirt/5/3": {"gains": [0.0, -1.5, 2.0]}})
        store.append(record(nrmse=0.4), optimiser={"fused/9/3": {"gains": [1.0, 0.0, 0.0]}})
    reopened = SweepStore.open(tmp_path / "s.zarr")
    assert reopened.optimiser_state() == {
        "sirt/5/3": {"gains": [0.0, -1.5, 2.0]},
        "fused/9/3": {"gains": [1.0, 0.0, 0.0]},
    }
    assert [r.proposed_by for r in reopened.records()] == ["EI", ""]


def test_a_format_2_store_is_read_and_upgraded_when_opened_for_writing(tmp_path):
    path = tmp_path / "old.zarr"
    with new_store(path) as store:
        store.append(record())
    group = zarr.open_group(path, mode="r+")
    group.attrs["format_version"] = 2
    del group.attrs["optimiser"]
    assert SweepStore.open(path).optimiser_state() == {}  # read-only: as it is
    assert zarr.open_group(path, mode="r").attrs["format_version"] == 2
    with SweepStore.open(path, writable=True) as store:
        assert len(store.records()) == 1
    assert zarr.open_group(path, mode="r").attrs["format_version"] == 3
    group.attrs["format_version"] = 1
    with pytest.raises(StoreError, match="format 1.*absolute weight"):
        SweepStore.open(path)


def test_a_pruned_trial_is_never_a_cells_best_and_its_saving_is_counted(tmp_path):
    from tomosweep.results import PRUNED, pruning_summary

    with new_store(tmp_path / "s.zarr") as store:
        store.append(record(nrmse=0.5))
        store.append(
            replace(
                record(nrmse=0.2, status=OK),
                status=PRUNED,
                wall_time_s=2.0,
                info={"pruned": {"at": 20, "of": 100, "threshold": 0.3}},
            )
        )
        assert store.maps("sirt")["best_nrmse"][0, 0] == 0.5
        assert store.maps("sirt")["n_trials"][0, 0] == 2 and store.maps("sirt")["n_failed"][0, 0] == 0
        store.rebuild_maps()
        assert store.maps("sirt")["best_nrmse"][0, 0] == 0.5
        records = store.records()
    assert records[1].status == PRUNED and not records[1].ok
    assert pruning_summary(records) == {("sirt", 5, 3): {"n_pruned": 1, "saved_s": pytest.approx(8.0)}}


def test_a_store_that_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch):
    import os as _os

    with new_store(tmp_path / "s.zarr") as store:
        store.append(record())
    real_open = _os.open

    def read_only(path, flags, *args):
        if str(path).endswith(".tomosweep.lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr("tomosweep.results.store.os.open", read_only)
    with pytest.raises(StoreError, match=r"cannot be written \(Permission denied\): resuming needs write access"):
        SweepStore.open(tmp_path / "s.zarr", writable=True)
    assert SweepStore.open(tmp_path / "s.zarr").n_committed == 1  # reading still works


def test_a_damaged_store_is_one_message_naming_the_damage(tmp_path):
    import shutil

    path = tmp_path / "s.zarr"
    with new_store(path) as store:
        for k in range(3):
            store.append(record(nrmse=0.5 - 0.1 * k))
    group = zarr.open_group(path, mode="r+")
    for bad in (-1, 300, "3"):
        group.attrs["n_committed"] = bad
        with pytest.raises(StoreError, match="is damaged: n_committed"):
            SweepStore.open(path)
    group.attrs["n_committed"] = 3
    shutil.rmtree(path / "trials" / "meta" / "c")  # the committed rows' metadata chunk is gone
    with pytest.raises(StoreError, match="is damaged: trial 0's metadata is missing"):
        SweepStore.open(path).records()


def test_a_truncated_chunk_is_one_damaged_message(tmp_path):
    path = tmp_path / "s.zarr"
    with new_store(path) as store:
        for k in range(3):
            store.append(record(nrmse=0.5 - 0.1 * k))
    chunk = path / "trials" / "nrmse" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    with pytest.raises(StoreError, match="is damaged: its committed trials cannot be read"):
        SweepStore.open(path).records()
    maps_chunk = next((path / "maps" / "sirt" / "best_nrmse" / "c").rglob("*"))
    maps_chunk = maps_chunk if maps_chunk.is_file() else next(maps_chunk.rglob("*"))
    maps_chunk.write_bytes(b"\x00\x01")
    opened = SweepStore.open(path)  # the maps are derived data: a reader gets them from the intact trials
    assert "Zstd" in opened.map_damage or opened.map_damage
    assert any("the maps cannot be read" in f for f in opened.audit().findings)
    assert any("trials/nrmse chunk 0 (trials 0–2) cannot be read" in f for f in opened.audit().findings)
