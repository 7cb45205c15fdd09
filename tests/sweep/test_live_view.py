"""`tomosweep view` from the sweep side: the driver's heartbeat, the landscape, the commands."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import trial_hooks
from sweep_support import TINY_SIRT_TOML, tiny_study

from tomosweep.results import SweepStore
from tomosweep.sweep import run_study, study_from_dict
from tomosweep.sweep.landscape import landscape_pngs
from tomosweep.view.heartbeat import read_live
from tomosweep.view.snapshot import StoreReader, progress

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_running_driver_publishes_its_workers_and_trials_in_flight(tmp_path, client, monkeypatch):
    monkeypatch.setattr("tomosweep.view.heartbeat.HEARTBEAT_S", 0.2)
    path = tmp_path / "s.zarr"
    study = study_from_dict(tiny_study())
    done = threading.Event()
    beats = []

    def watch():
        while not done.is_set():
            live = read_live(path)
            if live is not None:
                beats.append(live)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = run_study(study, path, client=client, trial_fn=trial_hooks.sleepy_trial)
    finally:
        done.set()
        watcher.join()
    assert summary.complete
    running = [b for b in beats if b["state"] == "running"]
    assert running and all((b["workers"], b["threads"]) == (2, 2) for b in running)
    assert all(b["budget"] == 16 and b["pid"] > 0 for b in running)
    in_flight = [b["running"] for b in running if b["running"]]
    assert in_flight and max(sum(r.values()) for r in in_flight) <= 3  # 2 threads + 1 queued
    assert {k.split("/")[0] for r in in_flight for k in r} <= {"fused", "sirt"}
    final = read_live(path)
    assert final["state"] == "finished" and final["running"] == {}
    # what the page makes of it after the run: the study's rate, no workers, no time to budget
    shown = progress(StoreReader(path).read())
    assert (shown["state"], shown["done"], shown["workers"]) == ("finished", 16, 0) and shown["rate_per_min"] > 0

    images = landscape_pngs(path, (5, 3))  # what a selected cell shows below its trials
    assert [caption.split(":")[0] for caption, _ in images] == ["fused", "sirt"]
    assert all(png.startswith(PNG) for _, png in images)


def _store(path) -> None:
    SweepStore.create(
        path,
        spec={"name": "cli-view", "budget": {"trials_per_cell": 2}},
        spec_hash="x",
        methods=["sirt"],
        param_names=["n_iter"],
        elements=("Co",),
        n_haadf=[5],
        n_chem=[3],
    ).close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_view_prints_its_address_serves_the_page_and_stops_on_ctrl_c(tmp_path):
    store = tmp_path / "s.zarr"
    _store(store)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    view = subprocess.Popen(
        [sys.executable, "-m", "tomosweep.cli", "view", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = view.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        assert "<title>tomosweep view — cli-view</title>" in _get(url)
        view.send_signal(signal.SIGINT)
        _, stderr = view.communicate(timeout=30)
    finally:
        if view.poll() is None:
            view.kill()
    assert view.returncode == 0 and "Traceback" not in stderr
    assert f"serving {store} read-only" in stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, in the store or beside it
    with pytest.raises(urllib.error.URLError):
        _get(url)

    missing = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "view", str(tmp_path / "nowhere.zarr")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: no store at")
    assert "Traceback" not in missing.stderr and missing.stdout == ""


STUDY = TINY_SIRT_TOML + "[cluster]\nn_workers = 1\n"


def test_run_with_view_serves_the_page_alongside_and_stops_it_after(tmp_path):
    study, store = tmp_path / "study.toml", tmp_path / "s.zarr"
    study.write_text(STUDY)
    run = subprocess.Popen(
        [sys.executable, "-m", "tomosweep.cli", "run", str(study), "--store", str(store), "--view", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        for line in run.stderr:
            lines.append(line)
            if line.startswith("live view "):
                url = line.split()[2]
                assert "<title>tomosweep view" in _get(url)  # served while the study runs
                break
        _, rest = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, "".join(lines) + rest
    assert any(line.startswith("live view http://127.0.0.1:") for line in lines)
    assert read_live(store)["state"] == "finished"
    with pytest.raises(urllib.error.URLError):
        _get(url)  # the page stopped with the run
