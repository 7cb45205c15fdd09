"""Fixtures for the sweep tests: one 2-process local Dask cluster."""

from __future__ import annotations

import cloudpickle
import pytest
import trial_hooks


@pytest.fixture(scope="session")
def client():
    """The product's own local cluster with two single-threaded worker processes."""
    from tomosweep.cluster import open_client

    cloudpickle.register_pickle_by_value(trial_hooks)  # workers cannot import the tests folder
    with open_client("local", n_workers=2) as c:
        yield c
