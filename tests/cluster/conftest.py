"""Fixtures for the cluster tests: the local SLURM started by ``.ci/slurm.sh``."""

from __future__ import annotations

import os

import pytest
from cluster_support import slurm_up


@pytest.fixture(scope="session")
def slurm():
    """Skip without a running SLURM, unless .ci/run demands one (TOMOSWEEP_REQUIRE_SLURM=1): then fail."""
    reason = slurm_up()
    if reason is not None:
        if os.environ.get("TOMOSWEEP_REQUIRE_SLURM") == "1":
            pytest.fail(f"TOMOSWEEP_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
