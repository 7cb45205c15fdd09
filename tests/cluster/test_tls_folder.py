"""The folder a batch study's certificates go to: the user's own, writable by nobody else (or sticky);
and certificates a killed driver left there are removed by the next study and by `tomosweep check`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tomosweep.cluster import ClusterSettings, tls
from tomosweep.cluster.jobqueue import make_certificates
from tomosweep.errors import ClusterError
from tomosweep.results import SweepStore
from tomosweep.sweep.spec import study_from_dict


def settings(base) -> ClusterSettings:
    return ClusterSettings(backend="slurm", cores=2, memory="4GB", shared_temp_directory=str(base))


def dead_pid() -> int:
    """The id of a process of this host that has exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def leftover(base, name: str, note: dict | None):
    folder = base / f"{tls.PREFIX}{name}"
    folder.mkdir(mode=0o700)
    (folder / "key.pem").write_text("a private key")
    if note is not None:
        (folder / tls.NOTE).write_text(json.dumps(note))
    return folder


def test_a_world_writable_base_without_the_sticky_bit_is_refused(tmp_path):
    base = tmp_path / "shared"
    base.mkdir()
    base.chmod(0o777)
    with pytest.raises(ClusterError) as info:
        make_certificates(settings(base))
    message = str(info.value)
    assert "is writable by everyone without the sticky bit (mode drwxrwxrwx)" in message
    assert "shared_temp_directory to a folder of your own" in message and "\n" not in message
    assert not [p for p in base.iterdir()]  # no certificate was written there


def test_a_group_writable_base_is_refused_and_a_sticky_one_is_used(tmp_path):
    base = tmp_path / "group"
    base.mkdir()
    base.chmod(0o770)
    with pytest.raises(ClusterError, match="is writable by its group without the sticky bit"):
        make_certificates(settings(base))
    base.chmod(0o1777)  # as /tmp: others add entries, never move or remove the user's
    _, folder = make_certificates(settings(base))
    assert folder.parent == base and (folder / "key.pem").stat().st_mode & 0o077 == 0


def test_a_base_of_another_user_or_a_link_to_one_is_refused(tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(theirs)
    me = os.geteuid() + 4242  # everything made here belongs to someone else now
    monkeypatch.setattr(os, "geteuid", lambda: me)
    with pytest.raises(ClusterError, match=r"belongs to .*, not to you \(it is a symbolic link to .*theirs\)"):
        make_certificates(settings(link))
    with pytest.raises(ClusterError, match=r"the TLS folder .*theirs belongs to"):
        make_certificates(settings(theirs))


def test_a_base_that_is_a_file_is_refused(tmp_path):
    base = tmp_path / "file"
    base.write_text("")
    with pytest.raises(ClusterError, match="cannot make the TLS folder"):
        make_certificates(settings(base))


def test_each_certificate_folder_notes_its_driver(tmp_path):
    _, folder = make_certificates(settings(tmp_path / "tls"))
    note = json.loads((folder / tls.NOTE).read_text())
    assert note["host"] == socket.gethostname() and note["pid"] == os.getpid() and note["started"] > 0
    assert (folder / tls.NOTE).stat().st_mode & 0o077 == 0
    assert tls.remove_leftovers(folder.parent) == []  # its driver (this process) runs


def test_the_next_study_removes_only_the_certificates_of_dead_drivers_of_this_host(tmp_path):
    base = tmp_path / "tls"
    base.mkdir(mode=0o700)
    here = socket.gethostname()
    dead = leftover(base, "dead", {"host": here, "pid": dead_pid(), "started": 1.0})
    reused = leftover(base, "reused", {"host": here, "pid": os.getpid(), "started": 1.0})  # the id, reused since
    alive = leftover(base, "alive", {"host": here, "pid": os.getpid(), "started": tls._process_start(os.getpid())})
    elsewhere = leftover(base, "elsewhere", {"host": here + "-other-node", "pid": dead_pid(), "started": 1.0})
    unnoted = leftover(base, "unnoted", None)
    mine = base / "notes.txt"
    mine.write_text("a file of the user's own")
    _, folder = make_certificates(settings(base))
    assert not dead.exists() and not reused.exists()
    assert alive.exists() and elsewhere.exists() and unnoted.exists() and mine.exists() and folder.exists()


def test_check_removes_certificates_a_killed_driver_left(tmp_path, monkeypatch, capsys):
    from test_job_script_values import TINY, run_cli

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    study = study_from_dict({**TINY, "cluster": {"backend": "slurm", "cores": 2, "memory": "4GB"}})
    SweepStore.create(
        tmp_path / "s.zarr",
        spec=study.to_json(),
        spec_hash=study.content_hash(),
        methods=list(study.methods),
        param_names=list(study.param_names),
        elements=("Co", "Cu", "O", "Au"),
        n_haadf=[5],
        n_chem=[3],
    ).close()
    base = tls.default_base()
    base.mkdir(parents=True, mode=0o700)
    dead = leftover(base, "dead", {"host": socket.gethostname(), "pid": dead_pid(), "started": 1.0})
    code, out, err = run_cli(["check", tmp_path / "s.zarr"], capsys)
    assert code == 0 and not dead.exists()
    assert f"removed {dead}: TLS certificates left by a driver that is gone" in out
    assert "healthy" in out and "Traceback" not in out + err
