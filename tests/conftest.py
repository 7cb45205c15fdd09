"""Shared test settings: projector matrices cache into a per-session temp folder; one 2-process local
Dask cluster for the tests that run studies (``client``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_projector_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TOMOSWEEP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _tomosweep_logger_restored():
    """Every test starts with the ``tomosweep`` logger as it found it: a CLI command run in-process
    (typer's test runner) sets it to stop propagating, which would hide later tests' records from
    caplog, so whether a test sees a warning would depend on the tests that ran before it."""
    import logging

    logger = logging.getLogger("tomosweep")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    yield
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    for handler in list(logger.handlers):
        if handler not in saved[2]:
            logger.removeHandler(handler)
            handler.close()


@pytest.fixture(scope="session")
def client():
    """The product's own local cluster with two single-threaded worker processes."""
    import cloudpickle
    import trial_hooks

    from tomosweep.cluster import open_client

    cloudpickle.register_pickle_by_value(trial_hooks)  # workers cannot import the tests folder
    with open_client("local", n_workers=2) as c:
        yield c
