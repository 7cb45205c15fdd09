r"""Parallel-beam line-integral projector for a stack of slices.

Geometry and layout
-------------------
The tilt axis is x. A volume is ``(n_y, n_z, n_x)``: ``n_x`` slices, each a square
``n × n`` image indexed ``[y, z]``, the beam along +z at 0° tilt. A tilt series is
``(n_angles, n_det, n_x)``: for every tilt, one detector row of ``n_det`` pixels
(default ``n``) along y for each slice x. Pixels and detector bins are unit sized and
centred on the rotation axis.

At tilt θ the ray through detector bin *i* is the set of points with

.. math:: y\cos\theta - z\sin\theta = t_i,\qquad t_i = i + \tfrac12 - \tfrac{n_{det}}2 .

The system matrix ``A`` (rays × pixels, rows ordered (angle, bin), columns ordered
(y, z)) holds the exact length of every ray inside every pixel — Yuan 2021 §2.1
eq. 9, the weights :math:`w_{ij}` "determined by the volume intersected between the
electron beam and the j-th voxel". It equals ASTRA's ``line`` projector for a
``parallel`` geometry applied to the transposed slice (``slice.T``), which the tests
check to 1e-4.

Because all slices share one matrix, the whole volume is projected by one
sparse × dense product: the volume viewed as a matrix ``(n_y·n_z, n_x)`` (one column
per slice, no copy) — so forward and back projection of a full stack cost one SpMM
each, on CPU (scipy) or GPU (cupyx / cuSPARSE).

The matrix is built by vectorised code (no Python loop over rays), cached in memory
and on disk (``$TOMOSWEEP_CACHE_DIR`` or ``~/.cache/tomosweep/projectors``), keyed by
geometry.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import scipy.sparse

from tomosweep.errors import InputError
from tomosweep.solvers import backend, validation

_FORMAT_VERSION = 1  # bump when the matrix definition changes, to invalidate disk caches
_ANGLE_CHUNK = 8  # angles built at once: bounds the temporary memory to ~8·n_det·n entries


def default_cache_dir() -> Path:
    """Where projector matrices are cached on disk."""
    env = os.environ.get("TOMOSWEEP_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "tomosweep"
    return base / "projectors"


def validate_angles(angles_deg: Any) -> np.ndarray:
    """Tilt angles in degrees as a 1-D float64 array, each finite and within ±90°."""
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.ndim != 1 or angles.size == 0:
        raise InputError(f"angles_deg must be a non-empty 1-D list of tilt angles in degrees, got shape {angles.shape}")
    if not np.all(np.isfinite(angles)):
        raise InputError("angles_deg contains NaN or infinite values")
    bad = angles[np.abs(angles) > 90.0]
    if bad.size:
        raise InputError(
            f"tilt angles must lie within [-90, 90] degrees; got {bad[:5].tolist()}" + (" …" if bad.size > 5 else "")
        )
    return angles


def _line_weights(
    coord: np.ndarray, ratio: np.ndarray, length: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Intersection lengths of rays with the pixels of one pixel line (row or column).

    ``coord`` is where each ray crosses the centre line of the pixel line, in pixel
    index units; ``ratio`` (≤ 1) is how far it drifts across one pixel line, and
    ``length`` the ray length inside the pixel line. The ray's footprint
    ``[coord - ratio/2, coord + ratio/2]`` overlaps at most two pixels; the length is
    split between them in proportion to the overlap.

    Returns ``(index_a, weight_a, index_b, weight_b)``.
    """
    col = np.floor(coord + 0.5)
    offset = coord - col
    half_flat = 0.5 - 0.5 * ratio  # |offset| ≤ half_flat: the footprint lies in one pixel
    half_full = 0.5 + 0.5 * ratio
    safe_ratio = np.where(ratio > 0, ratio, 1.0)
    left = offset < -half_flat
    right = offset > half_flat
    share_left = np.where(left, (offset + half_full) / safe_ratio, 1.0)
    share_right = np.where(right, (offset - half_flat) / safe_ratio, 0.0)
    weight_a = length * np.where(left, share_left, 1.0 - share_right)
    weight_b = length * np.where(left, 1.0 - share_left, share_right)
    index_b = np.where(left, col - 1, col + 1)
    return col.astype(np.int64), weight_a, index_b.astype(np.int64), weight_b


def build_system_matrix(n: int, angles_deg: Any, n_det: int | None = None) -> scipy.sparse.csr_matrix:
    """Assemble the ``(n_angles·n_det, n·n)`` float64 system matrix (see module docstring)."""
    n, n_det = _validate_sizes(n, n_det)
    angles = validate_angles(angles_deg)
    theta = np.deg2rad(angles)
    sin, cos = np.sin(theta), np.cos(theta)
    det = np.arange(n_det, dtype=np.float64) + 0.5 - n_det / 2
    centre = np.arange(n, dtype=np.float64) + 0.5 - n / 2
    line = np.arange(n, dtype=np.int64)

    rows_out, cols_out, vals_out = [], [], []
    for start in range(0, angles.size, _ANGLE_CHUNK):
        sl = slice(start, start + _ANGLE_CHUNK)
        s, c = sin[sl, None, None], cos[sl, None, None]
        t = det[None, :, None]
        m = centre[None, None, :]
        # Rays mostly along z are walked one z-line (fixed iz) at a time and cross
        # y = (t + z sinθ)/cosθ; rays mostly along y are walked one y-line at a time
        # and cross z = (y cosθ - t)/sinθ. Same split as ASTRA's line kernel.
        along_z = np.abs(s) < np.abs(c)
        safe_c = np.where(along_z, c, 1.0)
        safe_s = np.where(along_z, 1.0, s)
        cross = np.where(along_z, (t + m * s) / safe_c, (m * c - t) / safe_s)
        coord = cross + n / 2 - 0.5
        ratio = np.where(along_z, np.abs(s / safe_c), np.abs(c / safe_s))
        length = np.where(along_z, 1.0 / np.abs(safe_c), 1.0 / np.abs(safe_s))
        coord, ratio, length = np.broadcast_arrays(coord, ratio, length)
        lines = np.broadcast_to(line[None, None, :], coord.shape)
        ray = np.arange(start, start + coord.shape[0])[:, None, None] * n_det + np.arange(n_det)[None, :, None]
        ray = np.broadcast_to(ray, coord.shape)
        az = np.broadcast_to(along_z, coord.shape)
        for index, weight in _pairs(*_line_weights(coord, ratio, length, n)):
            keep = (index >= 0) & (index < n) & (weight > 0)
            iy = np.where(az, index, lines)[keep]
            iz = np.where(az, lines, index)[keep]
            rows_out.append(ray[keep])
            cols_out.append(iy * n + iz)
            vals_out.append(weight[keep])
    # a coo_matrix converts to a csr_matrix; scipy's inferred types say csr_array
    matrix = cast(
        scipy.sparse.csr_matrix,
        scipy.sparse.coo_matrix(
            (np.concatenate(vals_out), (np.concatenate(rows_out), np.concatenate(cols_out))),
            shape=(angles.size * n_det, n * n),
        ).tocsr(),
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def _pairs(ia, wa, ib, wb):
    return ((ia, wa), (ib, wb))


def _validate_sizes(n: Any, n_det: Any) -> tuple[int, int]:
    n = validation.positive_int(n, "slice size n", minimum=2)
    return n, n if n_det is None else validation.positive_int(n_det, "n_det")


def _cache_key(n: int, n_det: int, angles: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"tomosweep-line-v{_FORMAT_VERSION}:{n}:{n_det}:".encode())
    h.update(np.ascontiguousarray(angles, dtype="<f8").tobytes())
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=16)
def _cached_matrix(n: int, n_det: int, angles_key: tuple[float, ...], cache_dir: str | None) -> scipy.sparse.csr_matrix:
    angles = np.asarray(angles_key, dtype=np.float64)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_cache_key(n, n_det, angles)}.npz"
        if path.exists():
            try:
                return scipy.sparse.load_npz(path).tocsr()
            except (OSError, ValueError):
                pass  # a truncated or foreign file: rebuild and overwrite it
    matrix = build_system_matrix(n, angles, n_det)
    if path is not None:
        _atomic_save(path, matrix)
    return matrix


def _atomic_save(path: Path, matrix: scipy.sparse.csr_matrix) -> None:
    """Write through a temporary file so concurrent workers never read half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            scipy.sparse.save_npz(fh, matrix)
        os.replace(tmp, path)
    except OSError:
        pass  # caching is an optimisation; a read-only home must not stop a reconstruction


class Projector:
    """Forward/back projection of whole volumes for one tilt geometry.

    Parameters
    ----------
    n : int
        Slice size: every slice is ``n × n`` (y, z).
    angles_deg : sequence of float
        Tilt angles in degrees, each within ±90°, in acquisition order (any spacing).
    n_det : int, optional
        Detector bins per slice, default ``n``.
    cache_dir : str or Path or False, optional
        Disk cache for the system matrix; default :func:`default_cache_dir`,
        ``False`` disables it.

    Examples
    --------
    >>> import numpy as np
    >>> from tomosweep.solvers import Projector
    >>> proj = Projector(64, np.linspace(-70, 70, 29))
    >>> tilt_series = proj.forward(np.ones((64, 64, 10)))   # (29, 64, 10)
    >>> volume = proj.back(tilt_series)                      # (64, 64, 10)
    """

    def __init__(
        self,
        n: int,
        angles_deg: Any,
        *,
        n_det: int | None = None,
        cache_dir: str | os.PathLike | bool | None = None,
    ) -> None:
        self.n, self.n_det = _validate_sizes(n, n_det)
        self.angles_deg = validate_angles(angles_deg)
        self.angles_deg.setflags(write=False)
        if cache_dir is False:
            cache = None
        elif cache_dir is None or cache_dir is True:
            cache = str(default_cache_dir())
        else:
            cache = str(cache_dir)
        self.matrix = _cached_matrix(self.n, self.n_det, tuple(self.angles_deg.tolist()), cache)
        self._ops: dict[tuple[str, str], tuple[Any, Any]] = {}

    @property
    def n_angles(self) -> int:
        """Number of tilts."""
        return int(self.angles_deg.size)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the system matrix: ``(n_angles·n_det, n·n)``."""
        return self.n_angles * self.n_det, self.n * self.n

    def __repr__(self) -> str:
        a = self.angles_deg
        return (
            f"Projector(n={self.n}, n_angles={a.size} in [{a.min():g}°, {a.max():g}°], "
            f"n_det={self.n_det}, nnz={self.matrix.nnz})"
        )

    # -- operators on a device ------------------------------------------------------
    def operators(self, xp: ModuleType = np, dtype: Any = np.float32) -> tuple[Any, Any]:
        """``(A, Aᵀ)`` as CSR matrices on ``xp``'s device in ``dtype`` (cached)."""
        key = (xp.__name__, np.dtype(dtype).str)
        if key not in self._ops:
            a = self.matrix.astype(dtype)
            at = a.T.tocsr()
            if backend.is_gpu(xp):
                sp = backend.sparse_module(xp)
                a, at = sp.csr_matrix(a), sp.csr_matrix(at)
            self._ops[key] = (a, at)
        return self._ops[key]

    def forward_matrix(self, volume_matrix: Any) -> Any:
        """``A @ X`` for ``X`` of shape ``(n·n, k)`` → ``(n_angles·n_det, k)``."""
        xp = backend.get_array_module(volume_matrix)
        a, _ = self.operators(xp, _float_dtype(volume_matrix))
        return a @ volume_matrix

    def back_matrix(self, sino_matrix: Any) -> Any:
        """``Aᵀ @ Y`` for ``Y`` of shape ``(n_angles·n_det, k)`` → ``(n·n, k)``."""
        xp = backend.get_array_module(sino_matrix)
        _, at = self.operators(xp, _float_dtype(sino_matrix))
        return at @ sino_matrix

    # -- public volume API ----------------------------------------------------------
    def forward(self, volume: Any) -> Any:
        """Project a volume ``(n, n, n_x)`` (or one slice ``(n, n)``) to a tilt series.

        Returns ``(n_angles, n_det, n_x)`` (or a sinogram ``(n_angles, n_det)``) on the
        volume's device, in its float dtype (float32 for integer input).
        """
        volume = self._check(volume, (self.n, self.n), "volume")
        xp = backend.get_array_module(volume)
        trailing = volume.shape[2:]
        x = xp.ascontiguousarray(volume, dtype=_float_dtype(volume)).reshape(self.n * self.n, -1)
        return self.forward_matrix(x).reshape((self.n_angles, self.n_det) + trailing)

    def back(self, tilt_series: Any) -> Any:
        """Back-project (apply ``Aᵀ``) a tilt series ``(n_angles, n_det, n_x)`` or sinogram."""
        tilt_series = self._check(tilt_series, (self.n_angles, self.n_det), "tilt_series")
        xp = backend.get_array_module(tilt_series)
        trailing = tilt_series.shape[2:]
        y = xp.ascontiguousarray(tilt_series, dtype=_float_dtype(tilt_series))
        y = y.reshape(self.n_angles * self.n_det, -1)
        return self.back_matrix(y).reshape((self.n, self.n) + trailing)

    def row_sums(self, xp: ModuleType = np, dtype: Any = np.float32) -> Any:
        """Σ_j a_ij per ray, shape ``(n_angles·n_det,)`` (SIRT's R⁻¹)."""
        return backend.asarray(np.asarray(self.matrix.sum(axis=1)).ravel(), xp, dtype)

    def col_sums(self, xp: ModuleType = np, dtype: Any = np.float32) -> Any:
        """Σ_i a_ij per pixel, shape ``(n·n,)`` (SIRT's C⁻¹)."""
        return backend.asarray(np.asarray(self.matrix.sum(axis=0)).ravel(), xp, dtype)

    def row_sq_sums(self, xp: ModuleType = np, dtype: Any = np.float32) -> Any:
        """Σ_j a_ij² per ray, shape ``(n_angles·n_det,)``: tr(Aᵀ W A) = Σ_i w_i Σ_j a_ij²."""
        return backend.asarray(np.asarray(self.matrix.multiply(self.matrix).sum(axis=1)).ravel(), xp, dtype)

    def col_sq_sums(self, xp: ModuleType = np, dtype: Any = np.float32) -> Any:
        """Σ_i a_ij² per pixel, shape ``(n·n,)``: the diagonal of AᵀA."""
        return backend.asarray(np.asarray(self.matrix.multiply(self.matrix).sum(axis=0)).ravel(), xp, dtype)

    def _check(self, arr: Any, lead: tuple[int, int], name: str) -> Any:
        xp = backend.get_array_module(arr)
        arr = arr if xp is not np else np.asarray(arr)
        if arr.ndim not in (2, 3) or tuple(arr.shape[:2]) != lead:
            want = f"({lead[0]}, {lead[1]}) or ({lead[0]}, {lead[1]}, n_x)"
            raise InputError(f"{name} must have shape {want} for {self!r}; got {tuple(arr.shape)}")
        return arr


def _float_dtype(arr: Any) -> np.dtype:
    dt = np.dtype(arr.dtype)
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float32)
