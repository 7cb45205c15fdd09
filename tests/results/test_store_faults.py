"""The store under faults: a crash at every write of a change, a full disk, a second driver.

A crash is simulated by making the k-th write to the store (and every later one) raise,
as if the process had died there, then dropping the store object the way a dead process
drops it (its lock released by the kernel); the store is then opened, checked and used
again. A few crashes are real SIGKILLs of a subprocess at a chosen write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from tomosweep.errors import StoreError, StoreLockedError, TomosweepError
from tomosweep.results import OK, SweepStore, TrialRecord
from tomosweep.results.lock import UNLOCKED_ENV

ELEMENTS = ("Co", "O")
OLD_GRID = ([5, 9], [3])
NEW_GRID = ([5, 9, 12], [3, 6])


def new_store(path) -> SweepStore:
    return SweepStore.create(
        path,
        spec={"name": "t", "grid": "old"},
        spec_hash="old",
        methods=["fused", "sirt"],
        param_names=["lambda_tv", "n_iter"],
        elements=ELEMENTS,
        n_haadf=OLD_GRID[0],
        n_chem=OLD_GRID[1],
    )


def record(method="sirt", h=5, c=3, nrmse=0.5) -> TrialRecord:
    params = {"n_iter": 7.0} if method == "sirt" else {"lambda_tv": 0.3, "n_iter": 40.0}
    return TrialRecord(
        method=method, n_haadf=h, n_chem=c, params=params, status=OK, nrmse=nrmse, nrmse_elements=(nrmse, nrmse)
    )


def filled(path, n=6) -> list[tuple]:
    """A store with ``n`` committed trials over both methods and cells; returns them as tuples."""
    with new_store(path) as store:
        for k in range(n):
            store.append(record("sirt" if k % 2 else "fused", 5 if k % 3 else 9, nrmse=0.5 - 0.03 * k))
        return rows(store)


def rows(store: SweepStore) -> list[tuple]:
    return [(r.method, r.n_haadf, r.n_chem, r.nrmse, tuple(sorted(r.params.items()))) for r in store.records()]


class Crash(Exception):
    """The process 'dies' at this write."""


@pytest.fixture
def crash_at(monkeypatch):
    """``crash_at(k)``: the k-th write (set or delete) to any local zarr store, and every later one, crashes.
    Returns a counter whose ``writes`` says how many writes were attempted."""

    class Counter:
        writes = 0
        at = math.inf

    counter = Counter()
    real_set, real_delete, real_delete_dir = LocalStore._set, LocalStore.delete, LocalStore.delete_dir

    def gate():
        counter.writes += 1
        if counter.writes >= counter.at:
            raise Crash(f"killed at write {counter.writes}")

    async def _set(self, key, value, exclusive=False):
        gate()
        return await real_set(self, key, value, exclusive=exclusive)

    async def delete(self, key):
        gate()
        return await real_delete(self, key)

    async def delete_dir(self, prefix):
        gate()
        return await real_delete_dir(self, prefix)

    monkeypatch.setattr(LocalStore, "_set", _set)
    monkeypatch.setattr(LocalStore, "delete", delete)
    monkeypatch.setattr(LocalStore, "delete_dir", delete_dir)

    def arm(k=math.inf):
        counter.writes = 0
        counter.at = k
        return counter

    return arm


def assert_old_or_new_and_intact(path, before):
    """The store opens (writable: leftovers go), holds every committed trial, and is wholly old or wholly new."""
    with SweepStore.open(path, writable=True) as store:
        assert rows(store) == before
        grid = (list(store.n_haadf), list(store.n_chem))
        assert grid in (OLD_GRID, NEW_GRID)
        assert store.spec["grid"] == ("old" if grid == OLD_GRID else "new")
        assert store.spec_hash == store.spec["grid"]
        assert store.maps("sirt")["best_nrmse"].shape == (len(grid[0]), len(grid[1]))
        assert store.audit().findings == ()
        return grid


@pytest.mark.slow
def test_growing_the_grid_killed_at_every_write_loses_nothing(tmp_path, crash_at):
    path = tmp_path / "s.zarr"
    before = filled(path)
    seen = set()
    k = 1
    while True:
        counter = crash_at(k)
        store = SweepStore.open(path, writable=True)
        try:
            store.update_study(
                spec={"name": "t", "grid": "new"}, spec_hash="new", n_haadf=NEW_GRID[0], n_chem=NEW_GRID[1]
            )
            done = True
        except Crash:
            done = False
        finally:
            store._lock.release()  # the kernel's part when a process dies: nothing else runs
        crash_at()  # the next process writes normally
        grid = assert_old_or_new_and_intact(path, before)
        seen.add(tuple(map(tuple, grid)))
        if done:
            break
        if grid == NEW_GRID:  # switched: restore the old study to kill the next write
            path_copy = tmp_path / f"s{k}.zarr"
            os.rename(path, path_copy)
            before = filled(path)
        k += 1
        assert k < 200, "the change never completed"
    assert counter.writes < k  # the last run went through untouched
    assert seen == {tuple(map(tuple, OLD_GRID)), tuple(map(tuple, NEW_GRID))}
    # and the grown store takes trials in its new cells, and resumes the old ones
    with SweepStore.open(path, writable=True) as store:
        store.append(record(h=12, c=6, nrmse=0.1))
        assert store.maps("sirt")["best_nrmse"][2, 1] == 0.1
        assert len(store) == len(before) + 1
    assert not [p.name for p in path.iterdir() if p.name.startswith("g") and p.name != "g1"]


@pytest.mark.slow
def test_an_append_killed_at_every_write_never_loses_a_committed_trial(tmp_path, crash_at):
    path = tmp_path / "s.zarr"
    before = filled(path, n=3)
    k = 1
    while True:
        crash_at(k)
        store = SweepStore.open(path, writable=True)
        try:
            store.append(record(nrmse=0.05))
            done = True
        except Crash:
            done = False
        finally:
            store._lock.release()
        crash_at()
        with SweepStore.open(path, writable=True) as reopened:
            now = rows(reopened)
            assert now[: len(before)] == before and len(now) in (len(before), len(before) + 1)
            reopened.rebuild_maps()  # what resume does first
            reopened.append(record(nrmse=0.04))
            assert rows(reopened)[: len(before)] == before
        before = rows(SweepStore.open(path))
        if done:
            break
        k += 1
        assert k < 100


def test_a_grid_change_that_fails_mid_batch_leaves_no_write_running(tmp_path, monkeypatch):
    """A refused write of the new generation's batch fails the change only once the batch's other
    writes have ended, as a dead process's have: before, they went on in zarr's loop and wrote
    into the leftover the next open was removing (or recreated it after)."""
    import asyncio
    import time

    path = tmp_path / "s.zarr"
    before = filled(path)
    real_set = LocalStore._set

    async def slow_or_refused(self, key, value, exclusive=False):
        if self.root.name == "g1" and key.startswith("maps/"):  # the new generation's maps
            # zarr writes an array's zarr.json and its new parents' together: the first map's is
            # refused, its parents' (maps/, maps/<method>/) are written a moment later
            if key.count("/") == 3 and key.endswith("/zarr.json"):
                raise OSError(errno.ENOSPC, "No space left on device")
            await asyncio.sleep(0.3)
        return await real_set(self, key, value, exclusive=exclusive)

    monkeypatch.setattr(LocalStore, "_set", slow_or_refused)
    with SweepStore.open(path, writable=True) as store, pytest.raises(StoreError, match="no space left"):
        store.update_study(spec={"name": "t", "grid": "new"}, spec_hash="new", n_haadf=NEW_GRID[0], n_chem=NEW_GRID[1])
    monkeypatch.setattr(LocalStore, "_set", real_set)
    files = lambda: sorted(str(p.relative_to(path)) for p in (path / "g1").rglob("*"))  # noqa: E731
    now = files()
    time.sleep(0.6)
    assert files() == now, "writes of the failed change went on after it returned"
    assert assert_old_or_new_and_intact(path, before) == OLD_GRID
    assert not (path / "g1").exists()


def test_columns_left_uneven_by_a_crash_while_growing_are_evened_out(tmp_path):
    path = tmp_path / "s.zarr"
    before = filled(path, n=3)
    group = zarr.open_group(path, mode="r+")
    group["trials/method"].resize((512,))  # a driver killed after growing one column of ten
    with SweepStore.open(path, writable=True) as store:
        assert rows(store) == before
        store.append(record(nrmse=0.3))
    group = zarr.open_group(path, mode="r")
    assert {group[f"trials/{name}"].shape[0] for name in ("method", "nrmse", "params", "meta")} == {512}
    assert len(SweepStore.open(path)) == 4 and SweepStore.open(path).audit().findings == ()


def test_a_format_upgrade_killed_at_its_write_leaves_the_old_format(tmp_path, crash_at):
    path = tmp_path / "s.zarr"
    before = filled(path, n=2)
    group = zarr.open_group(path, mode="r+")
    group.attrs["format_version"] = 2
    crash_at(1)
    with pytest.raises(Crash):
        SweepStore.open(path, writable=True)
    crash_at()
    assert zarr.open_group(path, mode="r").attrs["format_version"] == 2
    assert rows(SweepStore.open(path)) == before
    with SweepStore.open(path, writable=True) as store:  # the lock was released with the failed open
        assert rows(store) == before
    assert zarr.open_group(path, mode="r").attrs["format_version"] == 3


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_while_appending_is_one_message_and_nothing_committed_is_lost(tmp_path, monkeypatch, code):
    path = tmp_path / "s.zarr"
    before = filled(path, n=3)
    real_set = LocalStore._set

    async def full(self, key, value, exclusive=False):
        raise OSError(code, os.strerror(code))

    store = SweepStore.open(path, writable=True)
    monkeypatch.setattr(LocalStore, "_set", full)
    word = "no space left" if code == errno.ENOSPC else "disk quota exceeded"
    message = (
        rf"^{word} on the disk of {path}: the 3 committed trials are safe; free some space and run "
        rf"`tomosweep resume {path}`$"
    )
    with pytest.raises(StoreError, match=message):
        store.append(record(nrmse=0.01))
    with pytest.raises(StoreError, match=word):
        store.update_study(spec={"grid": "new"}, spec_hash="new", n_haadf=NEW_GRID[0], n_chem=NEW_GRID[1])
    assert len(store) == 3
    monkeypatch.setattr(LocalStore, "_set", real_set)  # space freed
    store.append(record(nrmse=0.01))
    store.close()
    assert rows(SweepStore.open(path))[:3] == before and len(SweepStore.open(path)) == 4


def test_removing_the_lock_file_lets_no_second_writer_in(tmp_path):
    path = tmp_path / "s.zarr"
    filled(path, n=1)
    first = SweepStore.open(path, writable=True)
    (path / ".tomosweep.lock").unlink()
    with pytest.raises(StoreLockedError, match=r"being written by another driver \(holder unknown\)"):
        SweepStore.open(path, writable=True)
    first.close()
    SweepStore.open(path, writable=True).close()


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    path = tmp_path / "s.zarr"
    filled(path, n=1)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (path / ".tomosweep.lock").unlink()
    (path / ".tomosweep.lock").symlink_to(target)
    with pytest.raises(TomosweepError, match=r"\.tomosweep\.lock is a symbolic link; tomosweep never writes through"):
        SweepStore.open(path, writable=True)
    assert target.read_text() == "keep me"
    (path / ".tomosweep.lock").unlink()
    SweepStore.open(path, writable=True).close()  # the failed open left no lock behind


def test_the_lock_of_a_killed_driver_is_taken_over(tmp_path):
    path = tmp_path / "s.zarr"
    filled(path, n=1)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom tomosweep.results import SweepStore\n"
            f"s = SweepStore.open({str(path)!r}, writable=True)\nprint('locked', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    with holder:
        try:
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(StoreLockedError, match=rf"pid {holder.pid} on"):
                SweepStore.open(path, writable=True)
        finally:
            holder.kill()
    with SweepStore.open(path, writable=True) as store:  # the kernel released the dead driver's lock
        store.append(record())
    assert json.loads((path / ".tomosweep.lock").read_text())["pid"] == os.getpid()


def test_a_file_system_without_locks_is_refused_unless_the_user_vouches(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    filled(path, n=1)

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(StoreError, match=rf"has no file locks \(No locks available\).*set {UNLOCKED_ENV}=1$"):
        SweepStore.open(path, writable=True)
    monkeypatch.setenv(UNLOCKED_ENV, "1")
    with SweepStore.open(path, writable=True) as store:
        store.append(record())
    assert len(SweepStore.open(path)) == 2


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from zarr.storage import LocalStore
    from tomosweep.results import SweepStore

    path, at = sys.argv[1], int(sys.argv[2])
    store = SweepStore.open(path, writable=True)
    real, count = LocalStore._set, [0]

    async def _set(self, key, value, exclusive=False):
        count[0] += 1
        if count[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return await real(self, key, value, exclusive=exclusive)

    LocalStore._set = _set
    store.update_study(spec={"name": "t", "grid": "new"}, spec_hash="new", n_haadf=[5, 9, 12], n_chem=[3, 6])
    print("completed")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("at", [1, 5, 11, 200])
def test_growing_the_grid_sigkilled_at_a_write_loses_nothing(tmp_path, at):
    path = tmp_path / "s.zarr"
    before = filled(path)
    done = subprocess.run([sys.executable, "-c", _KILLER, str(path), str(at)], capture_output=True, text=True)
    assert done.returncode == (0 if at == 200 else -signal.SIGKILL), done.stderr
    grid = assert_old_or_new_and_intact(path, before)
    assert grid == (NEW_GRID if at == 200 else OLD_GRID) or at > 1
    with SweepStore.open(path, writable=True) as store:  # and it takes trials again
        store.append(record(nrmse=0.2))
    assert rows(SweepStore.open(path))[: len(before)] == before


def test_unreadable_maps_are_rebuilt_for_readers_and_by_a_writer(tmp_path):
    path = tmp_path / "s.zarr"
    filled(path, n=4)
    best = SweepStore.open(path).maps("fused")["best_nrmse"].copy()
    chunk = next(p for p in (path / "maps" / "fused" / "best_nrmse" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"\x00\x01")
    reader = SweepStore.open(path)
    assert reader.map_damage and np.array_equal(reader.maps("fused")["best_nrmse"], best, equal_nan=True)
    with SweepStore.open(path, writable=True) as store:
        store.rebuild_maps()
    reopened = SweepStore.open(path)
    assert not reopened.map_damage and np.array_equal(reopened.maps("fused")["best_nrmse"], best, equal_nan=True)


def _as_older_store(path):
    """Rewrite trials/method as stores before sentinel fill values had it: fill value 0, so a
    chunk of method-0 trials only is never stored."""
    group = zarr.open_group(path, mode="r+")
    values = np.maximum(group["trials/method"][:], 0)
    group.create_array("trials/method", data=values, chunks=(256,), fill_value=0, overwrite=True)


def test_an_older_store_whose_method_chunk_holds_only_fill_values_is_healthy(tmp_path):
    path = tmp_path / "s.zarr"
    with new_store(path) as store:
        for k in range(3):
            store.append(record("fused", nrmse=0.3 + 0.01 * k))  # method index 0: the old fill value
    _as_older_store(path)
    assert not (path / "trials" / "method" / "c" / "0").exists()  # legitimately absent
    assert SweepStore.open(path).audit().findings == ()


def test_an_older_store_with_its_method_chunk_deleted_is_found_by_the_maps(tmp_path):
    path = tmp_path / "s.zarr"
    filled(path, n=6)
    _as_older_store(path)
    (path / "trials" / "method" / "c" / "0").unlink()
    audit = SweepStore.open(path).audit()
    assert audit.findings[0].startswith(
        "trials/method chunk 0 (trials 0–5) is not stored and the maps disagree with the trials: those trials "
        "may read as fused values wrongly; left as they are"
    )
    assert audit.damaged_rows == frozenset(range(6)) and audit.blocks_resume
    best = SweepStore.open(path).maps("sirt")["best_nrmse"].copy()
    with SweepStore.open(path, writable=True) as store:
        store.add_to_maps(audit.damaged_rows)  # what check --repair does: nothing relabelled
    np.testing.assert_array_equal(SweepStore.open(path).maps("sirt")["best_nrmse"], best)
