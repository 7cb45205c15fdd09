"""The sge backend against a real Son of Grid Engine (started by .ci/sge.sh): a CLI run, a qdel'ed job survived."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter

import cluster_hooks
import dask
import pytest
from cluster_support import HERE, small_study

from tomosweep.results import SweepStore
from tomosweep.sweep.api import run_study
from tomosweep.sweep.spec import study_from_dict

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

log = logging.getLogger(__name__)

QUEUE = "all.q"  # the one queue .ci/sge.sh makes


def sge_up() -> str | None:
    """None when an SGE qmaster answers and the queue has a live execution host; else why not."""
    if not shutil.which("qsub"):
        return "qsub not found (start Son of Grid Engine with `bash .ci/sge.sh start`)"
    try:
        out = subprocess.run(["qstat", "-f", "-q", QUEUE], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"qstat failed: {exc}"
    line = next((row for row in out.stdout.splitlines() if row.startswith(f"{QUEUE}@")), None)
    if out.returncode != 0 or line is None:
        said = " ".join((out.stderr or out.stdout).split())  # one line for the skip reason
        return f"`qstat -f -q {QUEUE}` found no usable queue: {said[:200]}"
    fields = line.split()
    if fields[3] == "-NA-" or len(fields) > 5:
        return f"the SGE queue instance is not usable (no load report or state {fields[5:]}): {line.strip()}"
    return None


@pytest.fixture(scope="module")
def sge():
    """Skip without a running SGE, unless .ci/run demands one (TOMOSWEEP_REQUIRE_SGE=1): then fail."""
    reason = sge_up()
    if reason is not None:
        if os.environ.get("TOMOSWEEP_REQUIRE_SGE") == "1":
            pytest.fail(f"TOMOSWEEP_REQUIRE_SGE=1 but {reason}")
        pytest.skip(reason)


def sge_settings(tmp_path, **extra) -> dict:
    """One-core SGE worker jobs in all.q on loopback; logs and the study's certificates under ``tmp_path``."""
    return {
        "backend": "sge",
        "queue": QUEUE,
        "cores": 1,
        "memory": "2GB",
        "walltime": "00:10:00",
        "interface": "lo",
        "log_directory": str(tmp_path / "sge-logs"),
        "shared_temp_directory": str(tmp_path / "tls"),
        "start_timeout": 60,
        **extra,
    }


def worker_jobs() -> list[str]:
    """Ids of this machine's queued, running or ending SGE jobs named dask-worker (qstat cuts names at 10)."""
    out = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True, check=True, timeout=10)
    rows = (line.split() for line in out.stdout.splitlines()[2:])
    return [row[0] for row in rows if len(row) > 2 and row[2].startswith("dask-work")]


def _wait_no_jobs(timeout: float = 20.0) -> list[str]:
    end = time.monotonic() + timeout
    while (jobs := worker_jobs()) and time.monotonic() < end:
        time.sleep(0.5)
    return jobs


def test_cli_runs_a_study_on_sge_jobs_through_the_cluster_flag(sge, tmp_path):
    """`--cluster sge`, settings from the Dask config (jobqueue.sge.*): every trial stored with a real NRMSE."""
    study_file = tmp_path / "study.toml"
    study_file.write_text(
        # the study says local; the flag and the Dask config say SGE
        'name = "flag"\nseed = 5\n[phantom]\nname = "nanocubes"\nsize = 16\n'
        "[acquisition]\nn_haadf = [5, 9]\nn_chem = [3]\n"
        "[methods.sirt]\nn_iter = {low = 2, high = 30, prior = 'log'}\n"
        "[budget]\ntrials_per_cell = 3\ninitial_points = 2\n"
        '[cluster]\nbackend = "local"\nn_workers = 1\n'
    )
    config = {
        "jobqueue": {
            "sge": {
                "cores": 1,
                "memory": "2GB",
                "queue": QUEUE,
                "interface": "lo",
                "walltime": "00:10:00",
                "log-directory": str(tmp_path / "sge-logs"),
                "shared-temp-directory": str(tmp_path / "tls"),
            }
        }
    }
    (tmp_path / "dask").mkdir()
    (tmp_path / "dask" / "jobqueue.yaml").write_text(json.dumps(config))  # JSON is YAML
    env = {**os.environ, "DASK_CONFIG": str(tmp_path / "dask")}
    cli = [sys.executable, "-m", "tomosweep.cli"]
    script = subprocess.run(
        [*cli, "job-script", str(study_file), "--cluster", "sge"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert script.returncode == 0, script.stderr
    assert f"#$ -q {QUEUE}" in script.stdout and "#$ -l h_rt=00:10:00" in script.stdout
    assert "--interface lo" in script.stdout and "--protocol tls://" in script.stdout
    done = subprocess.run(
        [*cli, "run", str(study_file), "--store", str(tmp_path / "s.zarr"), "--cluster", "sge", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())  # rich wraps the line at the terminal width
    assert f"SGE: 1–1 job(s) of 1 cores, 2GB, queue {QUEUE}, walltime 00:10:00; scheduler tls://127.0.0.1:" in said
    first = re.search(r"first worker after ([\d.]+) s", said)
    assert first is not None, said
    log.info("SGE, CLI: first worker after %s s", first.group(1))
    with SweepStore.open(tmp_path / "s.zarr") as store:
        records = store.records()
    assert len(records) == 6 and len({r.task_key for r in records}) == 6
    assert all(r.ok and r.method == "sirt" for r in records)
    assert all(0 < r.nrmse < 2 for r in records)  # a real reconstruction scored against the phantom
    assert Counter((r.n_haadf, r.n_chem) for r in records) == {(5, 3): 3, (9, 3): 3}
    assert list((tmp_path / "sge-logs").glob("dask-worker.o*")), "the worker job wrote no log"
    assert not list((tmp_path / "tls").iterdir()), "the study's certificates were left behind"
    assert _wait_no_jobs() == []  # the driver deleted its job on the way out


class _DeleteOneJob:
    """Progress hook: after ``at`` stored trials, qdel one worker job; then see its replacement connect.

    Notes every job id and every worker address (a replacement worker may reuse the
    deleted one's name, never its address) and when the scheduler first listed it.
    """

    def __init__(self, at: int, *, wait_for_replacement: float) -> None:
        self.at = at
        self.wait_for_replacement = wait_for_replacement
        self.conn = None
        self.deleted: str | None = None
        self.deleted_at = 0.0
        self.job_ids: set[str] = set()
        self.workers: dict[str, float] = {}  # worker address -> when the scheduler first listed it

    def on_client(self, conn) -> None:
        self.conn = conn

    def _seen(self) -> None:
        self.job_ids |= {str(j.job_id) for j in self.conn.cluster.workers.values() if getattr(j, "job_id", None)}
        now = time.monotonic()
        for address in self.conn.client.scheduler_info()["workers"]:
            self.workers.setdefault(address, now)

    def start(self, **_) -> None:
        self._seen()

    def update(self, record, *, done, **_) -> None:
        self._seen()
        if done == self.at and self.deleted is None:
            running = {str(j.job_id) for j in self.conn.cluster.workers.values() if getattr(j, "job_id", None)}
            self.deleted = sorted(running)[0]
            self.deleted_at = time.monotonic()
            subprocess.run(["qdel", self.deleted], check=True, capture_output=True, timeout=30)

    def close(self) -> None:
        # the study may finish on the surviving worker first: give the replacement time to connect
        end = time.monotonic() + self.wait_for_replacement
        while self.deleted is not None and self.replacement_joined_after() is None and time.monotonic() < end:
            time.sleep(0.5)
            self._seen()

    def replacement_joined_after(self) -> float | None:
        """Seconds from the qdel to the first worker the scheduler listed after it (None: none did)."""
        later = [t for t in self.workers.values() if t > self.deleted_at]
        return min(later) - self.deleted_at if later else None


def test_a_qdeleted_job_is_replaced_and_every_trial_is_recorded_once(sge, tmp_path):
    # the job prologue puts this folder on the workers' path, so they can import cluster_hooks
    prologue = [f"export PYTHONPATH={HERE}${{PYTHONPATH:+:$PYTHONPATH}}"]
    raw = small_study(**sge_settings(tmp_path, min_jobs=2, max_jobs=2, prologue=prologue))
    hook = _DeleteOneJob(at=4, wait_for_replacement=30)
    # SpecCluster forgets a lost job after this long; then the adaptive loop submits a new one
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        summary = run_study(
            study_from_dict(raw),
            tmp_path / "s.zarr",
            progress=hook,
            on_client=hook.on_client,
            trial_fn=cluster_hooks.slow_trial,
        )
    with SweepStore.open(tmp_path / "s.zarr") as store:
        records = store.records()
    conn = hook.conn
    assert conn.backend == "sge" and conn.slots == 2
    assert conn.description.startswith(f"SGE: 2–2 job(s) of 1 cores, 2GB, queue {QUEUE}")
    joined = hook.replacement_joined_after()
    log.info(
        "SGE, run_study: first worker after %.1f s; job %s deleted, replacement worker %s; trials ran on %s",
        conn.first_worker_s,
        hook.deleted,
        "never joined" if joined is None else f"joined {joined:.1f} s later",
        dict(Counter(r.worker for r in records)),
    )
    assert hook.deleted is not None
    assert summary.complete and summary.n_new == 16 and summary.n_failed == 0
    assert len(records) == 16
    assert len({r.task_key for r in records}) == 16  # no task stored twice
    assert set(Counter((r.method, r.n_haadf, r.n_chem) for r in records).values()) == {4}  # none lost
    assert all(r.ok and 0 < r.nrmse < 2 for r in records)
    assert len(hook.job_ids) >= 3, f"the deleted job {hook.deleted} was not replaced: saw {sorted(hook.job_ids)}"
    assert joined is not None, f"no replacement worker connected: {hook.workers}"
    assert _wait_no_jobs() == []
