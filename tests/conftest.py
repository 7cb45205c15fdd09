"""Shared test settings: projector matrices cache into a per-session temp folder."""

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
