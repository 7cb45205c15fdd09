"""Worker jobs on other hosts: two SLURM compute nodes in network namespaces (started by .ci/slurm_nodes.sh).

The driver and its scheduler stay in the host's namespace; each node reaches it only across
the bridge of a private test subnet. A study runs its workers on both nodes over TLS, one
node's job is cancelled mid-run and replaced, and every trial is stored exactly once.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import cluster_hooks
import dask
import psutil
import pytest
from cluster_support import HERE, my_jobs, slurm_settings, slurm_up, small_study

from tomosweep.cluster.jobqueue import interface_addresses
from tomosweep.results import SweepStore
from tomosweep.sweep.api import run_study
from tomosweep.sweep.spec import study_from_dict

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# what .ci/slurm_nodes.sh makes
INTERFACE = "tsnet0"  # the bridge on the host, the veth end in each namespace
BRIDGE = "10.213.57.1"
SUBNET = ipaddress.ip_network("10.213.57.0/24")
NODES = {"node1": "10.213.57.11", "node2": "10.213.57.12"}
STATE = Path(os.environ.get("TOMOSWEEP_SLURM_STATE", "/tmp/tomosweep-slurm"))


def _nodes_up() -> str | None:
    """None when both namespace nodes are idle in SLURM and the bridge has its address; else why not."""
    reason = slurm_up()
    if reason is not None:
        return reason
    if BRIDGE not in interface_addresses().get(INTERFACE, []):
        return f"no interface {INTERFACE} with {BRIDGE} (start the nodes with `bash .ci/slurm_nodes.sh start`)"
    out = subprocess.run(["sinfo", "-h", "-N", "-p", "nodes", "-o", "%N %T"], capture_output=True, text=True)
    states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    if states != dict.fromkeys(NODES, "idle"):
        return f"the namespace nodes are not idle in partition `nodes`: {states or out.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def slurm_nodes():
    """Skip without the namespace nodes, unless .ci/run made them (TOMOSWEEP_REQUIRE_SLURM_NODES=1): then fail."""
    reason = _nodes_up()
    if reason is not None:
        if os.environ.get("TOMOSWEEP_REQUIRE_SLURM_NODES") == "1":
            pytest.fail(f"TOMOSWEEP_REQUIRE_SLURM_NODES=1 but {reason}")
        pytest.skip(reason)


def _allowed(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback or address in SUBNET


class _AcrossNodes:
    """Progress hook: where each worker runs and what the driver's sockets touch; scancel node1's job after ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.conn = None
        self.workers: dict[str, str] = {}  # worker name -> its address
        self.job_ids: set[str] = set()
        self.killed: str | None = None
        self.outside: set[tuple] = set()  # driver sockets bound to or talking to an address not allowed
        self.listening: set[tuple[str, int]] = set()
        self.dashboard_port: int | None = None

    def on_client(self, conn) -> None:
        self.conn = conn

    def _look(self) -> None:
        info = self.conn.client.scheduler_info(n_workers=-1)
        self.workers |= {w["name"]: address for address, w in info["workers"].items()}
        self.dashboard_port = info["services"].get("dashboard")
        self.job_ids |= {str(j.job_id) for j in self.conn.cluster.workers.values() if getattr(j, "job_id", None)}
        for c in psutil.Process().net_connections(kind="inet"):
            ends = [c.laddr.ip] + ([c.raddr.ip] if c.raddr else [])
            # a listening socket on 0.0.0.0 would take connections on every interface
            if not all(_allowed(ip) for ip in ends):
                self.outside.add((c.status, c.laddr, c.raddr))
            if c.status == psutil.CONN_LISTEN:
                self.listening.add((c.laddr.ip, c.laddr.port))

    def start(self, **_) -> None:
        self._look()

    def update(self, record, *, done, **_) -> None:
        self._look()
        if done == self.at and self.killed is None:
            running = subprocess.run(
                ["squeue", "-h", "-p", "nodes", "-w", "node1", "-t", "R", "-o", "%i"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            assert len(running) == 1, f"expected one job running on node1, squeue says {running}"
            self.killed = running[0]
            subprocess.run(["scancel", self.killed], check=True)

    def close(self) -> None:
        pass


def _namespace_pids(node: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", f"ts{node}"], capture_output=True, text=True, check=True)
    return {int(p) for p in out.stdout.split()}


def _only_slurmd_left(timeout: float = 20.0) -> dict[str, set[int]]:
    """What still runs in each node's namespace besides its slurmd, after waiting up to ``timeout``."""
    slurmd = {node: int((STATE / f"slurmd-{node}.pid").read_text()) for node in NODES}
    end = time.monotonic() + timeout
    while True:
        left = {node: _namespace_pids(node) - {slurmd[node]} for node in NODES}
        if not any(left.values()) or time.monotonic() > end:
            return {node: pids for node, pids in left.items() if pids}
        time.sleep(0.5)


def test_a_node_reaches_loopback_and_the_subnet_only(slurm_nodes):
    for node, address in NODES.items():
        ip = ["ip", "-n", f"ts{node}", "-4"]
        routes = subprocess.run([*ip, "route", "show"], capture_output=True, text=True, check=True).stdout
        assert routes.split() == [
            "10.213.57.0/24",
            "dev",
            INTERFACE,
            "proto",
            "kernel",
            "scope",
            "link",
            "src",
            address,
        ]
        addrs = subprocess.run([*ip, "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
        assert [line.split()[3] for line in addrs.splitlines()] == ["127.0.0.1/8", f"{address}/24"]
        assert subprocess.run([*ip[:3], "-6", "-o", "addr", "show"], capture_output=True, text=True).stdout == ""


def test_workers_on_two_nodes_over_tls_survive_a_cancelled_job(slurm_nodes, tmp_path):
    # the job prologue puts this folder on the workers' path, so they can import cluster_hooks
    prologue = [f"export PYTHONPATH={HERE}${{PYTHONPATH:+:$PYTHONPATH}}"]
    settings = slurm_settings(tmp_path, queue="nodes", interface=INTERFACE, min_jobs=2, max_jobs=2, prologue=prologue)
    raw = small_study(**settings)
    raw["budget"]["trials_per_cell"] = 6
    hook = _AcrossNodes(at=5)
    # SpecCluster forgets a lost job after this long; then the adaptive loop submits a new one
    # (distributed's defaults loaded first, as in test_slurm)
    import distributed  # noqa: F401

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        summary = run_study(
            study_from_dict(raw),
            tmp_path / "s.zarr",
            progress=hook,
            on_client=hook.on_client,
            trial_fn=cluster_hooks.slow_trial,
        )
    conn = hook.conn
    print(f"first worker across the bridge after {conn.first_worker_s:.2f} s; jobs {sorted(hook.job_ids)}")

    # the scheduler listened on the bridge, over TLS; every worker reached it from a node's address
    scheduler = conn.cluster.scheduler_address
    assert scheduler.startswith(f"tls://{BRIDGE}:")
    hosts = {name: address.removeprefix("tls://").rsplit(":", 1)[0] for name, address in hook.workers.items()}
    assert all(address.startswith("tls://") for address in hook.workers.values()), hook.workers
    assert set(hosts.values()) <= set(NODES.values()), hosts
    logs = sorted((tmp_path / "slurm-logs").glob("dask-worker-*.err"))
    assert len(logs) >= 3  # two jobs and the replacement
    registered = [log for log in logs if re.search(rf"Registered to:\s+{re.escape(scheduler)}$", log.read_text(), re.M)]
    assert len(registered) >= 3, [log.read_text()[-500:] for log in logs]

    # the killed job was replaced, and nothing was lost or done twice
    assert hook.killed is not None
    assert len(hook.job_ids) >= 3, f"the cancelled job {hook.killed} was not replaced: saw {sorted(hook.job_ids)}"
    assert summary.complete and summary.n_new == 24
    with SweepStore.open(tmp_path / "s.zarr") as store:
        records = store.records()
    assert len(records) == 24
    assert len({r.task_key for r in records}) == 24
    assert set(Counter((r.method, r.n_haadf, r.n_chem) for r in records).values()) == {6}
    assert all(r.ok and 0 < r.nrmse < 2 for r in records)
    # trials ran on both nodes (a record names its worker; the scheduler named the worker's address)
    ran_on = Counter(hosts[r.worker] for r in records)
    assert set(ran_on) == set(NODES.values()), ran_on

    # the driver bound and talked to loopback and the test subnet only: the scheduler on the
    # bridge, its dashboard on loopback (reached through an ssh tunnel)
    assert hook.outside == set()
    port = int(scheduler.rsplit(":", 1)[1])
    assert (BRIDGE, port) in hook.listening
    assert {ip for ip, _ in hook.listening} <= {BRIDGE, "127.0.0.1"}, hook.listening
    assert ("127.0.0.1", hook.dashboard_port) in hook.listening
    assert (BRIDGE, hook.dashboard_port) not in hook.listening

    # everything stopped: no job queued, nothing but slurmd left in either namespace
    end = time.monotonic() + 20
    while my_jobs() and time.monotonic() < end:
        time.sleep(0.5)
    assert my_jobs() == []
    assert _only_slurmd_left() == {}
    assert list((tmp_path / "shared").iterdir()) == []  # the study's certificates went with it
