"""Fixtures for the measured-series tests: a small isolated specimen and its simulated series."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def isolated():
    """Nanocubes (16³) in a 28³ field of view, blurred by a probe-like σ = 1 voxel: an isolated,
    band-limited specimen, as a real particle on a support film is (sharp single-voxel features
    would make every sub-pixel shift lossy)."""
    from dataclasses import replace

    import numpy as np
    from scipy.ndimage import gaussian_filter

    from tomosweep.phantoms import nanocubes

    base = nanocubes(16, rng=2)
    padded = np.pad(base.volumes, ((0, 0), (6, 6), (6, 6), (6, 6)))
    return replace(base, volumes=np.stack([gaussian_filter(v, 1.0) for v in padded]))
