"""Hostile [cluster] values: refused for their role with one line, or quoted where they land, so that
nothing in a study file or a received store runs as a command in a worker job."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from tomosweep.cluster import ClusterSettings, worker_environ
from tomosweep.cluster.jobqueue import job_script
from tomosweep.cluster.scripts import WALLTIME
from tomosweep.errors import ClusterError, SpecError
from tomosweep.results import SweepStore
from tomosweep.sweep.spec import study_from_dict

BASE = {"cores": 2, "memory": "4GB", "interface": "lo", "tls": False}
TINY = {
    "name": "tiny",
    "seed": 1,
    "phantom": {"name": "nanocubes", "size": 16},
    "acquisition": {"n_haadf": [5], "n_chem": [3]},
    "methods": {"sirt": {"n_iter": {"low": 2, "high": 30, "prior": "log"}}},
    "budget": {"trials_per_cell": 2, "initial_points": 1},
}


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``tomosweep ARGS`` in this process: (exit status, stdout, stderr)."""
    from tomosweep import cli

    code, saved = 0, sys.argv
    sys.argv = ["tomosweep", *map(str, args)]
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(backend: str = "slurm", **cluster) -> str:
    """The one-line reason a study with this [cluster] section is refused."""
    with pytest.raises(SpecError) as info:
        study_from_dict({**TINY, "cluster": {"backend": backend, **BASE, **cluster}})
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and lines[1].startswith("  - cluster."), lines  # the header and one finding
    return lines[1]


@pytest.mark.parametrize(
    "key, value",
    [
        ("queue", "batch\ntouch /tmp/owned"),
        ("account", "proj\rrm -rf ~"),
        ("walltime", "01:00:00\n#SBATCH --wrap=id"),
        ("log_directory", "/tmp/logs\ntouch X"),
        ("interface", "eth0\ntouch X"),
        ("job_directives", ["--exclusive\ntouch X"]),
        ("prologue", ["module load python\u2028touch X"]),
        ("memory", "4GB\x00"),
    ],
)
def test_a_line_break_or_control_character_in_any_value_is_refused(key, value):
    line = refused(**{key: value})
    assert line.startswith(f"  - cluster.{key}: ") and "each value must be one line" in line


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("python", "python3; touch X #", "is not an absolute path"),
        ("account", "$(touch X)", "is not an account name"),
        ("account", "`touch X`", "is not an account name"),
        ("queue", "batch; touch X", "is not a queue or partition name"),
        ("walltime", "`touch X`", "is not a slurm walltime"),
        ("walltime", "$(touch X)", "is not a slurm walltime"),
        ("shared_temp_directory", "/scratch/my tls", "has a space"),
        ("shared_temp_directory", "/scratch/$(touch X)", "'(' ')'"),
        ("log_directory", "/scratch/logs;id", "has ';'"),
        ("interface", "ib0 --preload evil", "is not a network interface name"),
    ],
)
def test_shell_syntax_in_a_value_is_refused_with_what_to_write(key, value, says):
    line = refused(**{key: value})
    assert says in line and ("e.g." in line or "choose a path" in line), line


@pytest.mark.parametrize(
    "backend, good, bad",
    [
        ("slurm", ["30", "1-12", "1-12:00:00", "02:00:00", "UNLIMITED"], ["2h", "01:00:00:00"]),
        ("pbs", ["3600", "01:30:00", "01:30:00.5"], ["1-12:00:00", "2h"]),
        ("lsf", ["90", "01:30", "01:30/hostA"], ["01:30:00", "2h"]),
        ("sge", ["3600", "01:30:00"], ["1-12:00:00", "01:30:00.5"]),
    ],
)
def test_walltime_follows_each_schedulers_grammar(backend, good, bad):
    for value in good:
        assert WALLTIME[backend][0].fullmatch(value), value
        ClusterSettings(backend=backend, **BASE, walltime=value)
    for value in bad:
        assert f"is not a {backend} walltime" in refused(backend, walltime=value)


def test_the_workers_python_must_exist_here_and_lands_quoted(tmp_path):
    with pytest.raises(ClusterError, match=r"python = '/no/such/python' is not an executable file on this host"):
        job_script(ClusterSettings(backend="slurm", **BASE, python="/no/such/python"), worker_environ())
    spaced = tmp_path / "my env" / "bin"
    spaced.mkdir(parents=True)
    (spaced / "python").symlink_to(sys.executable)
    text = job_script(ClusterSettings(backend="slurm", **BASE, python=str(spaced / "python")), worker_environ())
    command = text.strip().splitlines()[-1]
    assert shlex.split(command)[0] == str(spaced / "python")  # one word for the shell
    assert shlex.split(command)[1:3] == ["-m", "distributed.cli.dask_worker"]


def test_without_a_python_the_drivers_own_is_written_quoted():
    text = job_script(ClusterSettings(backend="pbs", **BASE), worker_environ())
    command = text.strip().splitlines()[-1]
    assert shlex.split(command)[0] == sys.executable


def test_a_shared_temp_directory_whose_variable_expands_to_a_space_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TOMOSWEEP_TEST_SCRATCH", str(tmp_path / "with space"))
    settings = ClusterSettings(backend="slurm", cores=2, memory="4GB", shared_temp_directory="$TOMOSWEEP_TEST_SCRATCH")
    with pytest.raises(ClusterError, match=r"shared_temp_directory expands to '.*with space' has a space"):
        job_script(settings, worker_environ())
    monkeypatch.setenv("TOMOSWEEP_TEST_SCRATCH", str(tmp_path / "plain"))
    assert str(tmp_path / "plain" / "tls-XXXXXXXX" / "ca.pem") in job_script(settings, worker_environ())


def test_job_script_command_refuses_a_hostile_study_in_one_line(tmp_path, capsys):
    marker = tmp_path / "X"
    study = tmp_path / "study.toml"
    study.write_text(
        f'name = "t"\n[phantom]\nname = "nanocubes"\nsize = 16\n[acquisition]\nn_haadf = [5]\nn_chem = [3]\n'
        f"[methods.sirt]\nn_iter = 5\n[budget]\ntrials_per_cell = 1\ninitial_points = 1\n"
        f'[cluster]\nbackend = "slurm"\ncores = 2\nmemory = "4GB"\npython = "python3; touch {marker} #"\n'
    )
    code, out, err = run_cli(["job-script", study], capsys)
    assert code == 2 and not marker.exists() and "Traceback" not in out + err
    assert "cluster.python: python = 'python3; touch" in out + err and "is not an absolute path" in out + err


def _received_store(path: Path, cluster: dict) -> int:
    """A store as someone else might send it: a valid study whose stored [cluster] was written by hand."""
    study = study_from_dict(TINY)
    spec = {**study.to_json(), "cluster": cluster}
    store = SweepStore.create(
        path,
        spec=spec,
        spec_hash=study.content_hash(),
        methods=list(study.methods),
        param_names=list(study.param_names),
        elements=("Co", "Cu", "O", "Au"),
        n_haadf=[5],
        n_chem=[3],
    )
    store.close()
    return SweepStore.open(path).n_committed


@pytest.mark.parametrize(
    "cluster",
    [
        {"backend": "slurm", "cores": 2, "memory": "4GB", "queue": "batch\ntouch X"},
        {"backend": "slurm", "cores": 2, "memory": "4GB", "python": "python3; touch X #"},
        {"backend": "pbs", "cores": 2, "memory": "4GB", "account": "$(touch X)"},
        {"backend": "slurm", "cores": 2, "memory": "4GB", "python": "/no/such/bin/python"},
    ],
)
def test_a_received_stores_hostile_cluster_is_refused_before_consent(tmp_path, capsys, cluster, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _received_store(tmp_path / "s.zarr", cluster)
    code, out, err = run_cli(["resume", tmp_path / "s.zarr", "--trust-stored-cluster"], capsys)
    text = out + err
    assert code == 2 and "Traceback" not in text and not (tmp_path / "X").exists()
    assert "stores a [cluster] section that cannot be used" in text and "--cluster local" in text
    assert "using it (--trust-stored-cluster)" not in text  # refused before it is shown as agreed to
    assert SweepStore.open(tmp_path / "s.zarr").n_committed == before
    assert os.listdir(tmp_path) == ["s.zarr"]
