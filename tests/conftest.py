"""Shared test settings: projector matrices cache into a per-session temp folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_projector_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TOMOSWEEP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()
