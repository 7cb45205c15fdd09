"""Projector: exact intersection lengths, ASTRA agreement, adjoint, cache, errors."""

from __future__ import annotations

import numpy as np
import pytest

from tomosweep.errors import InputError, TomosweepError
from tomosweep.solvers import Projector
from tomosweep.solvers import projector as projector_module


def _exact_length(n: int, theta_deg: float, t: float, iy: int, iz: int) -> float:
    """Length of the ray ``y cosθ − z sinθ = t`` inside pixel (iy, iz), by slab clipping."""
    th = np.deg2rad(theta_deg)
    direction = np.array([np.sin(th), np.cos(th)])  # along the ray in (y, z)
    point = t * np.array([np.cos(th), -np.sin(th)])
    lo = np.array([iy - n / 2, iz - n / 2])
    hi = lo + 1.0
    s_min, s_max = -np.inf, np.inf
    for k in range(2):
        if abs(direction[k]) < 1e-15:
            if not lo[k] <= point[k] <= hi[k]:
                return 0.0
            continue
        a, b = (lo[k] - point[k]) / direction[k], (hi[k] - point[k]) / direction[k]
        s_min, s_max = max(s_min, min(a, b)), min(s_max, max(a, b))
    return max(0.0, s_max - s_min)


@pytest.mark.parametrize(("n", "angles"), [(7, [0.0, 17.0, 45.0, -63.5, 90.0]), (10, [-90.0, 30.0, 89.0])])
def test_matrix_is_exact_intersection_length(n, angles):
    proj = Projector(n, angles, cache_dir=False)
    dense = proj.matrix.toarray()
    t = np.arange(n) + 0.5 - n / 2
    expected = np.array(
        [[_exact_length(n, a, ti, iy, iz) for iy in range(n) for iz in range(n)] for a in angles for ti in t]
    )
    np.testing.assert_allclose(dense, expected, atol=1e-12)


def _astra_projector(n, angles_deg):
    astra = pytest.importorskip("astra", reason="astra-toolbox (test extra) is not installed")
    vol = astra.create_vol_geom(n, n)
    geom = astra.create_proj_geom("parallel", 1.0, n, np.deg2rad(angles_deg))
    return astra, astra.create_projector("line", geom, vol)


ASTRA_CASES = [
    (32, np.linspace(-70, 70, 29)),
    (33, np.sort(np.random.default_rng(3).uniform(-90, 90, 23))),  # odd n, irregular angles
    (64, np.linspace(-90, 90, 45)),
    (65, np.array([-72.0, -51.3, -20.0, -3.7, 0.0, 12.9, 44.4, 45.0, 60.1, 88.0])),
]


@pytest.mark.parametrize(("n", "angles"), ASTRA_CASES, ids=lambda v: str(v) if np.isscalar(v) else "")
def test_forward_and_back_agree_with_astra(n, angles):
    """ASTRA's 'line' kernel on slice.T equals ours.

    Forward projections agree to 1e-4 relative max error. ASTRA walks each ray in
    float32 (``c += deltac`` per pixel line), so its error grows with n; its back
    projection sums those weights over every ray through a pixel, hence 2e-4 there.
    Our weights are exact in float64 (``test_matrix_is_exact_intersection_length``).
    """
    astra, pid = _astra_projector(n, angles)
    proj = Projector(n, angles, cache_dir=False)
    rng = np.random.default_rng(n)
    try:
        for _ in range(2):
            image = rng.random((n, n)).astype(np.float32)
            sid, sino = astra.create_sino(np.ascontiguousarray(image.T), pid)
            astra.data2d.delete(sid)
            ours = proj.forward(image.astype(np.float64))
            assert np.abs(ours - sino).max() / np.abs(sino).max() < 1e-4

            sino_in = rng.random(sino.shape).astype(np.float32)
            bid, back = astra.create_backprojection(sino_in, pid)
            astra.data2d.delete(bid)
            ours_back = proj.back(sino_in.astype(np.float64))
            assert np.abs(ours_back - back.T).max() / np.abs(back).max() < 2e-4
    finally:
        astra.projector.delete(pid)


def test_volume_stack_equals_slice_by_slice():
    rng = np.random.default_rng(0)
    proj = Projector(24, np.linspace(-60, 60, 13), cache_dir=False)
    volume = rng.random((24, 24, 5))
    stack = proj.forward(volume)
    assert stack.shape == (13, 24, 5)
    for x in range(5):
        np.testing.assert_allclose(stack[:, :, x], proj.forward(volume[:, :, x]), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adjoint_dot_test(dtype):
    rng = np.random.default_rng(1)
    proj = Projector(37, np.sort(rng.uniform(-80, 80, 19)), n_det=41, cache_dir=False)
    x = rng.standard_normal((37, 37, 6)).astype(dtype)
    y = rng.standard_normal((19, 41, 6)).astype(dtype)
    lhs = float(np.vdot(proj.forward(x).astype(np.float64), y))
    rhs = float(np.vdot(x, proj.back(y).astype(np.float64)))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(lhs - rhs) <= tol * max(abs(lhs), abs(rhs))
    assert proj.forward(x).dtype == dtype


def test_zero_degree_projection_sums_along_z():
    proj = Projector(16, [0.0], cache_dir=False)
    volume = np.random.default_rng(2).random((16, 16, 3))
    np.testing.assert_allclose(proj.forward(volume)[0], volume.sum(axis=1), rtol=1e-12)


def test_disk_cache_round_trip(tmp_path, monkeypatch):
    angles = np.linspace(-45, 45, 7)
    first = Projector(20, angles, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    projector_module._cached_matrix.cache_clear()
    calls = []
    monkeypatch.setattr(projector_module, "build_system_matrix", lambda *a: calls.append(a))
    second = Projector(20, angles, cache_dir=tmp_path)
    assert calls == []  # loaded from disk, not rebuilt
    assert (first.matrix != second.matrix).nnz == 0


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    angles = [0.0, 30.0]
    Projector(12, angles, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a matrix")
    projector_module._cached_matrix.cache_clear()
    proj = Projector(12, angles, cache_dir=tmp_path)
    assert proj.matrix.nnz > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 16, "angles_deg": [0, 95]}, r"within \[-90, 90\]"),
        ({"n": 16, "angles_deg": [0, np.nan]}, "NaN"),
        ({"n": 16, "angles_deg": []}, "non-empty"),
        ({"n": 1, "angles_deg": [0]}, "integer ≥ 2"),
        ({"n": 16.0, "angles_deg": [0]}, "integer ≥ 2"),
        ({"n": 16, "angles_deg": [0], "n_det": 0}, "n_det"),
    ],
)
def test_bad_geometry_is_a_clear_error(kwargs, message):
    with pytest.raises(InputError, match=message):
        Projector(**kwargs, cache_dir=False)


def test_shape_mismatch_is_a_clear_error():
    proj = Projector(16, [0.0, 45.0], cache_dir=False)
    with pytest.raises(TomosweepError, match=r"volume must have shape \(16, 16\)"):
        proj.forward(np.zeros((15, 16, 2)))
    with pytest.raises(TomosweepError, match="tilt_series must have shape"):
        proj.back(np.zeros((3, 16, 2)))
