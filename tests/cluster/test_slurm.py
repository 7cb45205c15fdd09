"""The slurm backend against a real SLURM (started by .ci/slurm.sh): runs, lost jobs, refusals, time-outs."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
import time
import tomllib
from collections import Counter

import cluster_hooks
import dask
import pytest
from cluster_support import HERE, assert_only_the_study_certificate_gets_in, my_jobs, slurm_settings, small_study

from tomosweep.errors import ClusterError
from tomosweep.results import SweepStore
from tomosweep.sweep.api import run_study
from tomosweep.sweep.methods import METHODS
from tomosweep.sweep.spec import study_from_dict

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _wait_no_jobs(timeout: float = 20.0) -> list[str]:
    end = time.monotonic() + timeout
    while (jobs := my_jobs()) and time.monotonic() < end:
        time.sleep(0.5)
    return jobs


def _while_running(seen: dict, tmp_path):
    """on_client hook: while the study runs, only a client holding its certificate reaches the scheduler."""

    def check(conn) -> None:
        seen["conn"] = conn
        folders = list((tmp_path / "shared").iterdir())
        assert len(folders) == 1 and stat.S_IMODE(folders[0].stat().st_mode) == 0o700
        assert {stat.S_IMODE(p.stat().st_mode) for p in folders[0].iterdir()} == {0o600}
        address = conn.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:") and conn.dashboard.startswith("http://127.0.0.1:")
        assert_only_the_study_certificate_gets_in(address, folders[0])
        print(f"first worker after {conn.first_worker_s:.2f} s on {conn.description}")

    return check


def test_small_study_completes_on_slurm_jobs(slurm, tmp_path):
    study = study_from_dict(small_study(**slurm_settings(tmp_path, min_jobs=2, max_jobs=2)))
    seen = {}
    summary = run_study(study, tmp_path / "s.zarr", on_client=_while_running(seen, tmp_path))
    assert list((tmp_path / "shared").iterdir()) == []  # the certificates went with the study
    conn = seen["conn"]
    assert conn.backend == "slurm" and conn.slots == 2
    assert conn.description.startswith("SLURM: 2–2 job(s) of 1 cores")
    assert summary.complete and summary.n_new == 16 and summary.n_failed == 0
    with SweepStore.open(tmp_path / "s.zarr") as store:
        records = store.records()
        assert all(r.ok for r in records)
        assert all(0 < r.nrmse < 2 for r in records)
    logs = list((tmp_path / "slurm-logs").glob("dask-worker-*.err"))
    assert len(logs) >= 2  # two jobs ran, each wrote its worker log
    assert _wait_no_jobs() == []  # the driver cancelled its jobs on the way out


class _KillOneJob:
    """Progress hook: after ``at`` stored trials, scancel one worker job; note every job id seen."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.conn = None
        self.killed: str | None = None
        self.job_ids: set[str] = set()

    def on_client(self, conn) -> None:
        self.conn = conn

    def _jobs(self) -> set[str]:
        return {str(j.job_id) for j in self.conn.cluster.workers.values() if getattr(j, "job_id", None)}

    def start(self, **_) -> None:
        self.job_ids |= self._jobs()

    def update(self, record, *, done, **_) -> None:
        self.job_ids |= self._jobs()
        if done == self.at and self.killed is None:
            self.killed = sorted(self._jobs())[0]
            subprocess.run(["scancel", self.killed], check=True)

    def close(self) -> None:
        pass


def test_a_killed_job_is_replaced_and_every_trial_is_recorded_once(slurm, tmp_path):
    # the job prologue puts this folder on the workers' path, so they can import cluster_hooks
    prologue = [f"export PYTHONPATH={HERE}${{PYTHONPATH:+:$PYTHONPATH}}"]
    raw = small_study(**slurm_settings(tmp_path, min_jobs=2, max_jobs=2, prologue=prologue))
    raw["budget"]["trials_per_cell"] = 6
    hook = _KillOneJob(at=5)
    # SpecCluster forgets a lost job after this long; then the adaptive loop submits a new one.
    # distributed's defaults first: set() on a section that is not there yet removes it on exit,
    # with every default distributed added to it meanwhile (TLS settings included)
    import distributed  # noqa: F401

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        summary = run_study(
            study_from_dict(raw),
            tmp_path / "s.zarr",
            progress=hook,
            on_client=hook.on_client,
            trial_fn=cluster_hooks.slow_trial,
        )
    assert hook.killed is not None
    assert summary.complete and summary.n_new == 24
    with SweepStore.open(tmp_path / "s.zarr") as store:
        records = store.records()
    assert len(records) == 24
    keys = [r.task_key for r in records]
    assert len(set(keys)) == 24  # no task stored twice
    per_cell = Counter((r.method, r.n_haadf, r.n_chem) for r in records)
    assert set(per_cell.values()) == {6}
    assert all(r.ok for r in records)
    assert len(hook.job_ids) >= 3, f"the killed job {hook.killed} was not replaced: saw {sorted(hook.job_ids)}"
    assert _wait_no_jobs() == []


def test_unknown_partition_is_a_clear_error_and_no_store(slurm, tmp_path):
    study = study_from_dict(small_study(**slurm_settings(tmp_path, queue="no-such-partition")))
    with pytest.raises(ClusterError, match=r"SLURM refused the worker job: .*invalid partition specified"):
        run_study(study, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_a_job_that_never_starts_times_out_cleanly(slurm, tmp_path):
    # --begin holds the job in the queue for an hour: it never starts within the time-out
    settings = slurm_settings(tmp_path, start_timeout=4, job_directives=["--begin=now+1hour"])
    study = study_from_dict(small_study(**settings))
    t0 = time.monotonic()
    told = r"The workers were told to connect to tls://127\.0\.0\.1:\d+ \(interface lo\); .* set \[cluster\] interface"
    with pytest.raises(
        ClusterError, match=r"no Dask worker joined within 4 s: job\(s\) \d+ .*PENDING BeginTime.*" + told
    ):
        run_study(study, tmp_path / "s.zarr")
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "s.zarr").exists()
    assert _wait_no_jobs() == []  # the pending job was cancelled


def test_cli_runs_on_slurm_through_the_cluster_flag_and_dask_config(slurm, tmp_path):
    """`--cluster slurm` with every setting from the Dask config (jobqueue.slurm.*), as on a real site."""
    import json
    import os
    import sys

    study_file = tmp_path / "study.toml"
    study_file.write_text(
        # the study says local; the flag and the Dask config say SLURM
        'name = "flag"\n[phantom]\nname = "nanocubes"\nsize = 16\n'
        "[acquisition]\nn_haadf = [5, 9]\nn_chem = [3]\n"
        "[methods.sirt]\nn_iter = {low = 2, high = 30, prior = 'log'}\n"
        "[budget]\ntrials_per_cell = 2\ninitial_points = 1\n"
        '[cluster]\nbackend = "local"\nn_workers = 1\n'
    )
    config = {"jobqueue": {"slurm": {"cores": 1, "memory": "2GB", "interface": "lo", "walltime": "00:10:00"}}}
    (tmp_path / "dask").mkdir()
    (tmp_path / "dask" / "jobqueue.yaml").write_text(json.dumps(config))  # JSON is YAML
    env = {**os.environ, "DASK_CONFIG": str(tmp_path / "dask")}
    cli = [sys.executable, "-m", "tomosweep.cli"]
    script = subprocess.run(
        [*cli, "job-script", str(study_file), "--cluster", "slurm"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert script.returncode == 0, script.stderr
    assert "#SBATCH --mem=2G" in script.stdout and "--interface lo" in script.stdout
    done = subprocess.run(
        [*cli, "run", str(study_file), "--store", str(tmp_path / "s.zarr"), "--cluster", "slurm", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # worker jobs without a log_directory write slurm-<id>.out where they were submitted
    )
    assert done.returncode == 0, done.stderr
    assert "SLURM: 1–1 job(s) of 1 cores, 2GB" in done.stderr
    with SweepStore.open(tmp_path / "s.zarr") as store:
        assert store.n_committed == 4


def test_tls_false_is_plain_tcp_with_a_warning(slurm, tmp_path, caplog):
    raw = small_study(**slurm_settings(tmp_path, tls=False))
    raw["methods"] = {"sirt": raw["methods"]["sirt"]}
    raw["budget"] = {"trials_per_cell": 1, "initial_points": 1}
    seen = {}

    def hook(conn) -> None:
        seen.update(conn=conn, address=conn.client.scheduler.address)

    with caplog.at_level(logging.WARNING, logger="tomosweep.cluster"):
        summary = run_study(study_from_dict(raw), tmp_path / "s.zarr", on_client=hook)
    assert summary.complete and seen["address"].startswith("tcp://127.0.0.1:")
    warning = (
        "[cluster] tls = false: the SLURM workers reach the scheduler over plain tcp://, "
        "and anyone who can reach its port can run code on them as you"
    )
    assert seen["conn"].warnings == (warning,)
    assert warning in caplog.messages
    assert not (tmp_path / "shared").exists()  # no certificates made


def test_plugin_methods_run_on_slurm_worker_jobs(slurm, tmp_path, monkeypatch):
    """A distribution's method (entry point) and a [plugins] module's, found by fresh worker jobs."""
    monkeypatch.syspath_prepend(str(HERE.parent / "sweep"))
    import plugin_support

    env = plugin_support.plugin_environment(tmp_path)
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])  # what sbatch passes on to the jobs
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    before = set(METHODS)
    try:
        import tomosweep_plugin_example  # noqa: F401  (this process read its entry points before the install)

        raw = tomllib.loads(plugin_support.STUDY_TOML)
        raw["cluster"] = slurm_settings(tmp_path, min_jobs=2, max_jobs=2)
        seen = {}
        summary = run_study(study_from_dict(raw), tmp_path / "s.zarr", on_client=lambda conn: seen.update(conn=conn))
        assert summary.complete and seen["conn"].backend == "slurm"
        plugin_support.check_plugin_store(tmp_path / "s.zarr", tmp_path, monkeypatch)
    finally:
        for name in set(METHODS) - before:
            del METHODS[name]
        for name in ("tomosweep_plugin_example", "my_plugin_module"):
            sys.modules.pop(name, None)
    assert _wait_no_jobs() == []
