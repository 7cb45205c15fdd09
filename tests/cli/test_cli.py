"""The ``tomosweep`` command as a user runs it: real subprocesses, real signals."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from tomosweep.results import SweepStore
from tomosweep.sweep.api import create_store

STUDY = """
name = "cli"
seed = 1
[phantom]
name = "nanocubes"
size = 16
[acquisition]
n_haadf = [5, 9]
n_chem = [3]
[methods.fused]
lambda_haadf = { low = 0.1, high = 10, prior = "log" }
n_iter = 4
[methods.sirt]
n_iter = { low = 2, high = 30, prior = "log" }
[budget]
trials_per_cell = BUDGET
initial_points = 3
[cluster]
n_workers = 1
"""


def tomosweep(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", *args], capture_output=True, text=True, timeout=300, **kw
    )


def write_study(tmp_path, budget: int) -> str:
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace("BUDGET", str(budget)))
    return str(path)


@pytest.mark.slow
def test_resume_after_sigkill_of_the_driver_gives_exactly_the_budget(tmp_path):
    study, store = write_study(tmp_path, 9), tmp_path / "s.zarr"
    log = tmp_path / "driver.log"
    with log.open("w") as stderr:
        driver = subprocess.Popen(
            [sys.executable, "-m", "tomosweep.cli", "run", study, "--store", str(store), "-q"],
            start_new_session=True,  # its Dask workers share the group, so the whole crash is simulated
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and driver.poll() is None:
        try:
            committed = SweepStore.open(store).n_committed
        except Exception:
            committed = 0
        if committed >= 8:
            break
        time.sleep(0.02)
    assert driver.poll() is None, f"driver ended before it could be killed: {log.read_text()}"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    killed_at = SweepStore.open(store).n_committed
    assert 8 <= killed_at < 36

    result = tomosweep("resume", str(store), "-q")
    assert result.returncode == 0, result.stderr
    records = SweepStore.open(store).records()
    assert len(records) == 36
    counts = collections.Counter((r.method, r.n_haadf, r.n_chem) for r in records)
    assert set(counts.values()) == {9}
    assert len({r.task_key for r in records}) == 36  # no task recorded twice
    # no point is evaluated twice in a cell (a neighbouring cell may start from the same point)
    points = collections.Counter((r.method, r.cell, json.dumps(r.params, sort_keys=True)) for r in records)
    assert max(points.values()) == 1
    assert "holds 36 trials" in " ".join(result.stderr.split())


@pytest.mark.slow
def test_run_status_export_reconstruct(tmp_path):
    study, store, out = write_study(tmp_path, 3), tmp_path / "s.zarr", tmp_path / "export"
    result = tomosweep("run", study, "--store", str(store))
    assert result.returncode == 0, result.stderr
    assert "12 new trials" in result.stderr and "complete" in result.stderr
    assert "distributed." not in result.stderr and "Traceback" not in result.stderr  # Dask's logs stay out
    driver_log = Path(f"{store}.log").read_text()  # ... and the driver's own log lands beside the store
    assert "tomosweep.sweep.api INFO: created" in driver_log
    assert driver_log.count("tomosweep.sweep.runner INFO: fused/") == 6, driver_log

    again = tomosweep("run", study, "--store", str(store))
    assert again.returncode == 2 and "already exists. Resume it with `tomosweep resume" in again.stderr

    own_log = tmp_path / "plan.log"
    planned = tomosweep("-v", "--log-file", str(own_log), "plan", str(store), "--target", "5", "--method", "sirt")
    assert planned.returncode == 0, planned.stderr
    assert own_log.is_file()

    status = tomosweep("status", str(store))
    assert status.returncode == 0 and "3/3" in status.stdout and "9×3" in status.stdout

    export = tomosweep("export", str(store), "--out", str(out))
    assert export.returncode == 0, export.stderr
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 12 and set(trials["method"]) == {"fused", "sirt"}
    assert set(trials["status"]) == {"ok"} and trials["nrmse"].between(0, 2).all()
    assert {"nrmse_Co", "nrmse_Au", "lambda_haadf", "n_iter", "worker", "error"} <= set(trials.columns)
    parquet = pd.read_parquet(out / "trials.parquet")
    pd.testing.assert_series_equal(parquet["nrmse"], trials["nrmse"])
    best = pd.read_csv(out / "best_params.csv")
    assert len(best) == 4 and (best["n_trials"] == 3).all()
    stored = SweepStore.open(store).maps("sirt")["best_nrmse"]
    assert best.query("method == 'sirt'")["best_nrmse"].to_numpy() == pytest.approx(stored[:, 0])
    for png in ("nrmse_heatmap.png", "convergence.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = ET.parse(out / "nrmse_heatmap.svg").getroot()
    assert svg.tag.endswith("svg")

    rec = tomosweep("reconstruct", str(store), "--cell", "9,3", "--method", "fused", "--out", str(tmp_path / "v.npz"))
    assert rec.returncode == 0, rec.stderr
    assert (tmp_path / "v.npz").exists() and "NRMSE" in rec.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("status", "nowhere.zarr"), "no store at nowhere.zarr"),
        (("reconstruct", "nowhere.zarr", "--cell", "9x", "--out", "v.npz"), "--cell must be H,C"),
        (("run", "missing.toml", "--store", "s.zarr"), "study file missing.toml does not exist"),
        (("run", "latin1.toml", "--store", "s.zarr"), "study file latin1.toml is not UTF-8 text"),
        (
            ("run", "ok.toml", "--store", "a_file/s.zarr"),
            "cannot create the store a_file/s.zarr:",
        ),
        (("export", "nowhere.zarr", "--out", "x"), "no store at nowhere.zarr"),
    ],
)
def test_user_mistakes_are_one_clear_line(tmp_path, args, expected):
    (tmp_path / "latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    (tmp_path / "ok.toml").write_text(STUDY.replace("BUDGET", "3"))
    (tmp_path / "a_file").write_text("not a folder")
    result = tomosweep(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


def test_bad_study_file_message(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(STUDY.replace("BUDGET", "0").replace('prior = "log" }\nn_iter = 4', 'prior = "cubic" }'))
    result = tomosweep("run", str(path), "--store", str(tmp_path / "s.zarr"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert "invalid study file" in text and "budget.trials_per_cell" in text and "methods.fused.lambda_haadf" in text
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_an_interrupted_run_exits_non_zero_and_names_the_resume_command(tmp_path, signum, code, word):
    study, store = write_study(tmp_path, 40), tmp_path / "s.zarr"
    driver = subprocess.Popen(
        [sys.executable, "-m", "tomosweep.cli", "run", study, "--store", str(store), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        try:
            if SweepStore.open(store).n_committed >= 3:
                break
        except Exception:
            pass
        time.sleep(0.05)
    assert driver.poll() is None, driver.stderr.read()
    if signum == signal.SIGINT:
        os.killpg(driver.pid, signum)  # Ctrl-C in a terminal: the whole process group, workers too
    else:
        driver.send_signal(signum)  # the driver alone, as a batch system's walltime or a `kill` does
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == code, stderr
    assert f"{word}: every finished trial is stored; continue with `tomosweep resume {store}`" in " ".join(
        stderr.split()
    )
    assert "Traceback" not in stderr
    committed = SweepStore.open(store).n_committed
    assert 3 <= committed < 80


def test_reconstruct_with_overwrite_onto_the_store_itself_is_refused_and_the_store_kept(tmp_path):
    store = tmp_path / "S.zarr"
    SweepStore.create(
        store,
        spec={},
        spec_hash="x",
        methods=["sirt"],
        param_names=["n_iter"],
        elements=["Co"],
        n_haadf=[5],
        n_chem=[3],
    ).close()
    before = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    result = tomosweep("reconstruct", str(store), "--cell", "5,3", "--out", str(store), "--overwrite")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "is a tomosweep sweep store" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr and "wrote" not in result.stdout
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*")) == before


def test_resume_shows_the_stored_cluster_settings_and_asks_before_using_them(tmp_path):
    from sweep_support import tiny_study

    from tomosweep.sweep import study_from_dict

    study = study_from_dict(
        tiny_study(cluster={"backend": "address", "address": "tcp://127.0.0.1:9", "start_timeout": 1})
    )
    store = tmp_path / "received.zarr"
    create_store(study, store).close()
    result = tomosweep("resume", str(store), "-q")
    text = " ".join(result.stderr.split())
    assert f"{store} stores a cluster beyond this machine:" in text, text
    assert "backend='address'" in text and "address='tcp://127.0.0.1:9'" in text
    assert text.index("beyond this machine") < text.index("error:")
    assert "not used without consent: pass --trust-stored-cluster" in text  # no terminal to ask on
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_signal_inside_a_garbage_collector_callback_waits_until_it_returns():
    """The scheduler of an embedded cluster registers a gc callback; a KeyboardInterrupt raised in
    it would be printed as "Exception ignored" with a traceback and dropped, so Ctrl-C and SIGTERM
    are delivered again once the callback has returned."""
    import gc
    import sys

    from tomosweep.cli import _swallows

    seen = []

    def callback(phase, info):
        seen.append(_swallows(sys._getframe()))

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert seen and all(seen)
    assert not _swallows(sys._getframe())


def test_ctrl_c_inside_a_long_garbage_collector_callback_arrives_once_it_returns():
    """A Ctrl-C that lands while a gc callback runs for a while is neither dropped nor re-raised
    inside it over and over (that recursed to Python's limit and printed a traceback): it arrives
    as one KeyboardInterrupt after the callback."""
    import gc
    import sys

    from tomosweep.cli import _on_sigint

    inside = []

    def callback(phase, info):
        if phase != "start" or inside:
            return
        inside.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # bytecode runs: the handler is called in here
            pass
        inside.append(time.monotonic())

    previous = signal.signal(signal.SIGINT, _on_sigint)
    gc.callbacks.append(callback)
    arrived = None
    try:
        try:
            gc.collect()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            arrived = time.monotonic()
    finally:
        gc.callbacks.remove(callback)
        signal.signal(signal.SIGINT, previous)
    assert len(inside) == 2, "the callback was cut short"
    assert arrived is not None and arrived >= inside[1], "the interrupt was dropped or raised inside the callback"
    assert sys.getrecursionlimit() > 0


def test_ctrl_c_swallowed_in_any_callback_is_delivered_again():
    """A callback :func:`_swallows` cannot know (any function can be a weak reference's callback;
    importlib's module locks have one, seen in CI): Python swallows the KeyboardInterrupt raised in it
    and reports it to ``sys.unraisablehook``, which sends the signal again; it arrives after."""
    import functools
    import sys
    import weakref

    from tomosweep.cli import _on_sigint, _on_unraisable

    class Thing:
        pass

    ran = []

    def callback(_ref):  # an ordinary function: nothing in its frame says it is a callback
        ran.append("start")
        os.kill(os.getpid(), signal.SIGINT)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
        ran.append("end")  # not reached: the interrupt was raised in here, and swallowed

    previous_signal = signal.signal(signal.SIGINT, _on_sigint)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_on_unraisable, previous_hook)
    arrived = False
    try:
        thing = Thing()
        ref = weakref.ref(thing, callback)
        try:
            del thing  # the callback runs here, and its KeyboardInterrupt is swallowed
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            arrived = True
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, previous_signal)
    assert ref() is None and ran == ["start"]
    assert arrived, "the interrupt swallowed in the callback was lost"
