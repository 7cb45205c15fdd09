"""Helpers for the cluster tests: a study factory, SLURM settings on loopback, SLURM state.

A module of its own (not conftest) so tests import it by a name no other test folder uses.
"""

from __future__ import annotations

import copy
import gc
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).parent


def small_study(**cluster) -> dict:
    """16³ nanocubes, a 2 × 1 grid, fused + SIRT, 4 trials per (method, cell), on the given cluster."""
    return copy.deepcopy(
        {
            "name": "cluster-test",
            "seed": 5,
            "phantom": {"name": "nanocubes", "size": 16},
            "acquisition": {"n_haadf": [5, 9], "n_chem": [3]},
            "methods": {
                "fused": {"lambda_haadf": {"low": 0.1, "high": 10.0, "prior": "log"}, "lambda_tv": 1.0, "n_iter": 4},
                "sirt": {"n_iter": {"low": 2, "high": 30, "prior": "log"}},
            },
            "budget": {"trials_per_cell": 4, "initial_points": 2},
            "cluster": cluster,
        }
    )


def slurm_settings(tmp_path, **extra) -> dict:
    """One-core SLURM worker jobs on loopback, logs under ``tmp_path``."""
    return {
        "backend": "slurm",
        "cores": 1,
        "memory": "2GB",
        "walltime": "00:10:00",
        "interface": "lo",
        "log_directory": str(tmp_path / "slurm-logs"),
        "shared_temp_directory": str(tmp_path / "shared"),  # the study's certificates, one folder below
        "start_timeout": 60,
        **extra,
    }


def slurm_up() -> str | None:
    """None when a SLURM controller answers and a node is up; else why not."""
    if not shutil.which("sbatch"):
        return "sbatch not found (start one with `bash .ci/slurm.sh start`)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0 or not any(s in out.stdout for s in ("idle", "mixed", "allocated")):
        return f"no SLURM node is up: {(out.stderr or out.stdout).strip()[:200]}"
    return None


def my_jobs(name: str = "dask-worker") -> list[str]:
    """Ids of queued or running jobs with this name."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def assert_only_the_study_certificate_gets_in(address: str, folder: Path) -> None:
    """A client without the study's certificate cannot reach the scheduler at ``address``; one with it can."""
    import pytest
    from distributed import Client
    from distributed.security import Security

    assert address.startswith("tls://")
    # A refused Client is left half-started; if the garbage collector runs its __del__ while the
    # next Client starts its event loop, distributed's LoopRunner waits on a lock its own thread
    # holds (seen as a hang, or "assert loop is not None"). So each is collected right away, and
    # no collection may interrupt the next Client's start.
    with pytest.raises(TypeError, match="TLS expects a `ssl_context`"):
        Client(address, timeout=5)  # no TLS at all
    gc.collect()
    with pytest.raises(OSError):
        Client(address.replace("tls://", "tcp://"), timeout=5)  # plain tcp to the same port
    gc.collect()
    with pytest.raises(OSError, match="TLS certificate does not match"):
        Client(address, security=Security.temporary(), timeout=5)  # a certificate of one's own
    gc.collect()
    study = Security(
        tls_ca_file=str(folder / "ca.pem"),
        tls_client_cert=str(folder / "cert.pem"),
        tls_client_key=str(folder / "key.pem"),
        require_encryption=True,
    )
    gc.disable()
    try:
        client = Client(address, security=study, timeout=10)
    finally:
        gc.enable()
    with client:
        assert client.scheduler_info()["address"] == address
