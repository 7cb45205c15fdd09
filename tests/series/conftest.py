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


# ETSpy's real STEM-HAADF needle (77 tilts, NIST public licence): what the realdata tests read
ETSPY_FILES = ("HAADF.mrc", "HAADF.rawtlt", "HAADF_Aligned.hspy", "HAADF.dm3")


@pytest.fixture(scope="package")
def etspy_data(tmp_path_factory):
    """ETSpy's test data: a folder named in ``TOMOSWEEP_ETSPY_DATA``, or extracted from the wheel in
    ``TOMOSWEEP_ETSPY_WHEEL`` (``.ci/run`` fetches it); without either the test skips and says why."""
    import os
    import zipfile
    from pathlib import Path

    folder = os.environ.get("TOMOSWEEP_ETSPY_DATA")
    if folder and all((Path(folder) / f).is_file() for f in ETSPY_FILES):
        return Path(folder)
    wheel = os.environ.get("TOMOSWEEP_ETSPY_WHEEL")
    if not wheel or not Path(wheel).is_file():
        pytest.skip("ETSpy's test data are not here: set TOMOSWEEP_ETSPY_WHEEL to the etspy wheel (.ci/run fetches it)")
    out = tmp_path_factory.mktemp("etspy")
    with zipfile.ZipFile(wheel) as archive:
        for name in ETSPY_FILES:
            member = f"etspy/tests/test_data/{name}"
            if member not in archive.namelist():
                pytest.skip(f"{wheel} does not carry {member}")
            (out / name).write_bytes(archive.read(member))
    return out
