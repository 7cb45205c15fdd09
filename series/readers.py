"""Readers for measured tilt series: every container a microscope writes, checked before it is read.

Formats
-------
- ``.mrc`` / ``.st`` / ``.ali`` / ``.mrcs`` / ``.preali`` / ``.rec`` (mrcfile): one section per
  tilt; angles from a SerialEM (``SERI``/``AGAR``), FEI (``FEI1``/``FEI2``) or old-style FEI
  extended header (no type tag, one 128-byte record per image with the tilt as its first
  float32, as FEI's Xplore3D and Inspect3D write it);
- ``.tif`` / ``.tiff`` (tifffile): a multi-page stack;
- ``.dm3`` / ``.dm4`` (Gatan), ``.hspy`` (HyperSpy), Velox and Berkeley (NCEM) ``.emd``
  (RosettaSciIO, the HyperSpy project's readers): the signal titled ``dataset`` (the only image
  signal when there is one); angles from ``metadata.Tomography.tilts``, the stage's
  ``tilt_alpha`` (one per image), a navigation axis calibrated in degrees or radians, or for a
  single image Gatan's ``Microscope Info › Stage Position › Stage Alpha`` tag. An EDS
  spectrum image (or a stack of them, tilt first) is reduced to one element map by summing the
  counts of the channels inside an energy window (keV);
- ``.h5`` / ``.hdf5``, and an ``.emd`` that is neither Velox nor Berkeley (h5py): the dataset
  named by ``dataset`` (the only 3-D one when there is exactly one); angles from the dataset's
  ``tilt_angles`` / ``angles`` attribute;
- ``.npz``: the array named by ``dataset`` (the only 3-D one when there is one); angles from an
  array ``angles`` in the same archive.

Nothing is read before it is checked: the size a header declares (MRC header against the file's
length, HDF5 dataset shape × type, npz member header, a lazy RosettaSciIO array) against the
memory available; HDF5 external links and virtual datasets drawing on other files are refused
(what is read must be what is hashed); complex, text and object (pickled) arrays are refused.
Every refusal is one line that starts with the file's path and quotes nothing read from it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import InputError

log = logging.getLogger(__name__)

MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali", ".preali", ".rec")
TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5")
RSCIIO_SUFFIXES = (".dm3", ".dm4", ".hspy", ".emd")
NPZ_SUFFIXES = (".npz",)
IMAGE_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES + RSCIIO_SUFFIXES + HDF5_SUFFIXES + NPZ_SUFFIXES
ANGLE_CONTAINER_SUFFIXES = (".h5", ".hdf5", ".emd", ".npz")

# the float64 copy tomosweep works on, on top of the array as stored
_WORKING_BYTES = 8


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**28 else f"{n_bytes / 2**20:.1f} MiB"


def available_memory() -> int:
    """Bytes of memory this process can still take (psutil's ``available``)."""
    import psutil  # a dependency of distributed

    return int(psutil.virtual_memory().available)


def check_memory(path: Path, shape: tuple[int, ...], itemsize: int) -> None:
    """Refuse a stack whose declared size does not fit in memory, before anything is read."""
    n_values = math.prod(int(s) for s in shape)
    need = n_values * (int(itemsize) + _WORKING_BYTES)
    available = available_memory()
    if need > available:
        dims = " × ".join(str(int(s)) for s in shape)
        raise InputError(
            f"{path}: declares a {dims} array ({_gib(n_values * itemsize)} stored); reading it needs "
            f"{_gib(need)} of memory and {_gib(available)} is available"
        )


def check_dtype(path: Path, dtype: np.dtype) -> None:
    """Only real numbers are intensities: refuse complex, text, object and structured arrays."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise InputError(
            f"{path}: holds Python objects (a pickle); tomosweep never loads pickles — save plain numeric arrays"
        )
    if dtype.kind == "c":
        raise InputError(f"{path}: holds complex numbers (an FFT or exit wave?); give real image intensities")
    if dtype.kind in "SUa":
        raise InputError(f"{path}: holds text, not numbers")
    if dtype.kind not in "biuf":
        raise InputError(f"{path}: holds {dtype.kind!r}-kind values, not plain numbers")


@contextlib.contextmanager
def _warnings_to_log() -> Iterator[None]:
    """A dependency's warnings about a file go to the log, not the terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        log.warning("%s: %s", w.category.__name__, w.message)


# --- MRC ------------------------------------------------------------------------------

# IMOD's header keeps nint and nreal (int16) at bytes 128-131, inside MRC2014's EXTRA2 field
# (bytes 112-195), which mrcfile exposes as raw bytes
_IMOD_NINT_OFFSET = 128 - 112
# old-style FEI extended header: one record of 32 float32 per image, alpha tilt first
_FEI_OLD_RECORD = 128


def _byte_order(header: Any) -> str:
    # the byte order mrcfile read the header in: its own guess where the machine stamp is
    # blank, as in files older than MRC2000 (ETSpy's FEI series has 00 00 00 00)
    order = header.nx.dtype.byteorder
    if order in ("=", "|"):
        return "<" if sys.byteorder == "little" else ">"
    return order


def _imod_nint_nreal(header: Any) -> tuple[int, int]:
    extra2 = bytes(header.extra2)
    nint, nreal = np.frombuffer(extra2[_IMOD_NINT_OFFSET : _IMOD_NINT_OFFSET + 4], dtype=f"{_byte_order(header)}i2")
    return int(nint), int(nreal)


def set_imod_nint_nreal(header: Any, nint: int, nreal: int) -> None:
    """Write IMOD's ``nint`` and ``nreal`` (the extended header's layout) into an MRC header.

    Parameters
    ----------
    header : numpy.recarray
        An mrcfile header, changed in place.
    nint, nreal : int
        Bytes of integers and number of reals per section in the extended header.
    """
    extra2 = bytearray(bytes(header.extra2))
    extra2[_IMOD_NINT_OFFSET : _IMOD_NINT_OFFSET + 4] = np.array([nint, nreal], dtype="<i2").tobytes()
    header.extra2 = bytes(extra2)


def _plausible(angles: np.ndarray) -> np.ndarray | None:
    ok = angles.size and np.all(np.isfinite(angles)) and np.all(np.abs(angles) <= 90) and np.ptp(angles) > 0
    return angles if ok else None


def _mrc_angles(mrc: Any, n_sections: int) -> np.ndarray | None:
    """Tilt angles from an MRC extended header (SerialEM, FEI, old-style FEI), or None."""
    exttyp = bytes(mrc.header.exttyp).strip(b"\x00 ")
    raw = np.frombuffer(bytes(mrc.extended_header), dtype=np.uint8)
    if exttyp in (b"FEI1", b"FEI2"):
        ext = mrc.indexed_extended_header
        if ext is not None and "Alpha tilt" in (ext.dtype.names or ()):
            return np.asarray(ext["Alpha tilt"][:n_sections], dtype=float)
        return None
    nint, nreal = _imod_nint_nreal(mrc.header)
    if exttyp in (b"SERI", b"AGAR"):
        # SerialEM: nint bytes per section; flag bit 1 of nreal = tilt angle × 100 as int16 first
        if not nreal & 1 or nint < 2 or raw.size < nint * n_sections:
            return None
        per = raw[: nint * n_sections].reshape(n_sections, nint)[:, :2].copy()
        return per.view(f"{_byte_order(mrc.header)}i2").ravel().astype(float) / 100.0
    # old FEI files leave nint/nreal blank, or say nreal = 32: the 32 float32 of each record
    if not exttyp.strip() and nint == 0 and nreal in (0, 32) and raw.size >= _FEI_OLD_RECORD * n_sections:
        records = raw[: _FEI_OLD_RECORD * n_sections].reshape(n_sections, _FEI_OLD_RECORD)[:, :4].copy()
        return _plausible(records.view(f"{_byte_order(mrc.header)}f4").ravel().astype(float))
    return None


def _read_mrc(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import mrcfile
    import mrcfile.utils

    with _warnings_to_log(), mrcfile.open(path, permissive=True, header_only=True) as mrc:
        header = mrc.header
        if header is None:
            raise InputError(f"{path}: not an MRC file (no valid header)")
        nx, ny, nz = (int(header[k]) for k in ("nx", "ny", "nz"))
        mode, n_ext = int(header.mode), int(header.nsymbt)
        try:
            dtype = mrcfile.utils.dtype_from_mode(mode)
        except ValueError:
            raise InputError(f"{path}: unknown MRC data mode {mode}") from None
        check_dtype(path, dtype)
        if min(nx, ny, nz) < 1:
            raise InputError(f"{path}: the MRC header declares {nx} × {ny} × {nz} voxels")
        declared = nx * ny * nz * dtype.itemsize
        held = path.stat().st_size - 1024 - n_ext
        if held != declared:
            raise InputError(
                f"{path}: the MRC header declares {nz} sections of {nx} × {ny} ({declared} bytes of data) "
                f"but the file holds {held} bytes of data; the header and the data disagree"
            )
    check_memory(path, (nz, ny, nx), dtype.itemsize)
    with _warnings_to_log(), mrcfile.mmap(path, mode="r", permissive=True) as mrc:
        if mrc.data is None:
            raise InputError(f"{path}: not a readable MRC file")
        data = np.array(mrc.data, dtype=np.float64)
        angles = _mrc_angles(mrc, nz)
    return data, angles


# --- TIFF -----------------------------------------------------------------------------


def _read_tiff(path: Path) -> tuple[np.ndarray, None]:
    import tifffile

    with _warnings_to_log(), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        check_dtype(path, series.dtype)
        check_memory(path, series.shape, series.dtype.itemsize)
        data = np.asarray(series.asarray(), dtype=np.float64)
    return data, None


# --- HDF5 -----------------------------------------------------------------------------


def check_hdf5_links(path: Path, f: Any) -> int:
    """Refuse external links and virtual datasets drawing on other files; the bytes every dataset declares."""
    import h5py

    total = 0
    seen: set[Any] = set()

    def walk(group: Any, prefix: str) -> None:
        nonlocal total
        for name in group:
            where = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise InputError(
                    f"{path}: {where} is an HDF5 external link to another file; tomosweep reads only what is "
                    "inside the file it names and hashes — copy the data in (h5copy) or name the other file"
                )
            if isinstance(link, h5py.SoftLink):
                continue  # it points inside this file, which is walked anyway
            node = group[name]
            if node.id in seen:
                continue
            seen.add(node.id)
            if isinstance(node, h5py.Group):
                walk(node, where)
            elif isinstance(node, h5py.Dataset):
                if node.is_virtual and any(src.file_name != "." for src in node.virtual_sources()):
                    raise InputError(
                        f"{path}: {where} is a virtual dataset drawing on other files; tomosweep reads only what "
                        "is inside the file it names and hashes — copy the data in"
                    )
                total += int(node.size or 0) * int(node.dtype.itemsize)  # size is None for an empty (null) dataspace

    walk(f, "")
    return total


def _open_hdf5(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path}: not a readable HDF5 file (corrupt, truncated or another format)") from None


def hdf5_dataset(path: Path, f: Any, name: str) -> Any:
    """The dataset ``name`` of an open file, checked to hold numbers that fit in memory."""
    import h5py

    if name not in f:
        raise InputError(f"{path}: no dataset {_quote(name)}")
    node = f[name]
    if not isinstance(node, h5py.Dataset):
        raise InputError(f"{path}: {_quote(name)} is a group, not a dataset; name the dataset inside it")
    if h5py.check_string_dtype(node.dtype) is not None:
        raise InputError(f"{path}: holds text, not numbers")
    check_dtype(path, node.dtype)
    check_memory(path, node.shape, node.dtype.itemsize)
    return node


def _quote(name: str, limit: int = 60) -> str:
    """A name the user wrote (or a container lists), shortened so that no message turns into a dump."""
    name = name.replace("\n", " ")
    return repr(name if len(name) <= limit else name[: limit - 1] + "…")


def _read_hdf5(path: Path, dataset: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    import h5py

    with _warnings_to_log(), _open_hdf5(path) as f:
        check_hdf5_links(path, f)
        if dataset is None:
            found: list[str] = []
            f.visititems(
                lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None
            )
            if len(found) != 1:
                listing = ", ".join(_quote("/" + n) for n in found[:8]) or "none"
                raise InputError(f'{path}: name the image stack with dataset = "…" (3-D datasets: {listing})')
            dataset = found[0]
        node = hdf5_dataset(path, f, dataset)
        data = np.asarray(node[()], dtype=np.float64)
        angles = None
        for key in ("tilt_angles", "angles"):
            if key in node.attrs:
                try:
                    angles = np.asarray(node.attrs[key], dtype=float).ravel()
                except (TypeError, ValueError):
                    raise InputError(f"{path}: the {key} attribute of the stack is not numbers") from None
                break
    return data, angles


# --- NPZ ------------------------------------------------------------------------------


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{array: (shape, dtype)}`` from the .npy headers of an archive, without reading any array."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise InputError(f"{path}: not a valid .npz archive (a zip of .npy arrays)") from None
    headers = {}
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            try:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(member)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError):
                raise InputError(f"{path}: not a valid .npz archive (a member is not a .npy array)") from None
            headers[info.filename[:-4]] = (tuple(shape), np.dtype(dtype))
    return headers


def npz_array(path: Path, key: str, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> np.ndarray:
    """One checked array of an archive (numeric, fits in memory), as float64."""
    shape, dtype = headers[key]
    check_dtype(path, dtype)
    check_memory(path, shape, dtype.itemsize)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return np.asarray(archive[key], dtype=np.float64)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        raise InputError(f"{path}: array {_quote(key)} is truncated or corrupt") from None


def _read_npz(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    headers = npz_headers(path)
    stacks = [k for k, (shape, _) in headers.items() if len(shape) == 3]
    if key is None:
        if len(stacks) != 1:
            listing = ", ".join(_quote(k) for k in stacks[:8]) or "none"
            raise InputError(f'{path}: name the image stack with dataset = "…" (3-D arrays: {listing})')
        key = stacks[0]
    if key not in headers:
        raise InputError(f"{path}: no array {_quote(key)}")
    data = npz_array(path, key, headers)
    angles = npz_array(path, "angles", headers).ravel() if "angles" in headers and key != "angles" else None
    return data, angles


# --- RosettaSciIO: Gatan DM, HyperSpy, Velox and Berkeley EMD --------------------------

_DEGREES = {"deg", "degree", "degrees", "°", "º"}
_RADIANS = {"rad", "radian", "radians"}
_ENERGY_SCALE = {"kev": 1.0, "ev": 1e-3}


def _axis_values(axis: dict[str, Any]) -> np.ndarray:
    if axis.get("axis") is not None:
        return np.asarray(axis["axis"], dtype=float)
    return float(axis.get("offset", 0.0)) + float(axis.get("scale", 1.0)) * np.arange(int(axis["size"]))


def _nested(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def signal_angles(signal: dict[str, Any], n_tilts: int) -> np.ndarray | None:
    """Tilt angles (degrees) a RosettaSciIO signal carries, one per image, or None."""
    metadata = signal.get("metadata") or {}
    for keys in (("Tomography", "tilts"), ("Acquisition_instrument", "TEM", "Stage", "tilt_alpha")):
        value = _nested(metadata, *keys)
        if value is not None:
            with contextlib.suppress(TypeError, ValueError):
                angles = np.atleast_1d(np.asarray(value, dtype=float)).ravel()
                if angles.size == n_tilts:
                    return angles
    if n_tilts == 1:
        # one image of a series written a file per tilt: Gatan keeps the stage tilt in its own tags
        stage = _nested(signal.get("original_metadata") or {}, "ImageList", "TagGroup0", "ImageTags", "Microscope Info")
        alpha = _nested(stage, "Stage Position", "Stage Alpha")
        with contextlib.suppress(TypeError, ValueError):
            if alpha is not None and math.isfinite(float(alpha)):
                return np.array([float(alpha)])
    axes = signal.get("axes") or []
    # the first axis of a tilt stack (a Berkeley EMD marks no axis as navigation)
    if n_tilts > 1 and len(axes) >= 3 and int(axes[0]["size"]) == n_tilts:
        units = str(axes[0].get("units") or "").strip().lower()
        if units in _DEGREES:
            return _axis_values(axes[0])
        if units in _RADIANS:
            return np.degrees(_axis_values(axes[0]))
    return None


def _energy_axis(signal: dict[str, Any]) -> tuple[np.ndarray, str] | None:
    """Channel energies in keV of a spectrum signal (its last axis), or None."""
    axes = signal.get("axes") or []
    if not axes or axes[-1].get("navigate", False):
        return None
    units = str(axes[-1].get("units") or "").strip().lower()
    if units not in _ENERGY_SCALE:
        return None
    return _axis_values(axes[-1]) * _ENERGY_SCALE[units], units


def _title(signal: dict[str, Any]) -> str:
    return str(_nested(signal.get("metadata") or {}, "General", "title") or "")


def _rsciio_signals(path: Path) -> list[dict[str, Any]]:
    """Every signal of the file, the arrays still lazy where the format allows (Gatan DM)."""
    suffix = path.suffix.lower()
    if suffix in (".dm3", ".dm4"):
        from rsciio.digitalmicrograph import file_reader

        return file_reader(str(path), lazy=True)
    # HDF5 containers: links and declared sizes checked with h5py first, then read whole
    with _open_hdf5(path) as f:
        total = check_hdf5_links(path, f)
    check_memory(path, (total,), 1)
    if suffix == ".hspy":
        from rsciio.hspy import file_reader

        return file_reader(str(path), lazy=False)
    from rsciio.emd import file_reader

    return file_reader(str(path), lazy=False)


def is_rsciio_emd(path: Path) -> bool:
    """Whether an ``.emd`` is a Velox or Berkeley (NCEM) file, rather than plain HDF5."""
    from rsciio.emd._api import is_EMD_NCEM, is_EMD_Velox  # the reader's own format test

    with _open_hdf5(path) as f:
        try:
            return bool(is_EMD_Velox(f) or is_EMD_NCEM(f))
        except (ValueError, KeyError, TypeError, AttributeError):
            return False


def _materialise(data: Any) -> np.ndarray:
    """A lazy (dask) RosettaSciIO array read into memory here, in this thread.

    Reading a file never belongs on a cluster: without an explicit scheduler, dask uses
    whatever default a ``distributed.Client`` left behind in this process ("Requested
    dask.distributed scheduler but no Client active" once that client is closed).
    """
    if hasattr(data, "compute"):
        return np.asarray(data.compute(scheduler="synchronous"))
    return np.asarray(data)


def _read_rsciio(
    path: Path, dataset: str | None, window: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    with _warnings_to_log():
        signals = _rsciio_signals(path)
        if window is not None:
            candidates = [s for s in signals if _energy_axis(s) is not None and np.ndim(s["data"]) in (3, 4)]
            kind = "EDS spectrum image"
        else:
            candidates = [
                s
                for s in signals
                if np.ndim(s["data"]) in (2, 3)
                and _energy_axis(s) is None
                and not any(a.get("navigate", False) for a in (s.get("axes") or [])[-2:])
            ]
            kind = "image signal"
        if dataset is not None:
            chosen = [s for s in candidates if _title(s) == dataset]
            if not chosen:
                titles = ", ".join(_quote(_title(s)) for s in candidates[:8]) or "none"
                raise InputError(f"{path}: no {kind} titled {_quote(dataset)} ({kind}s: {titles})")
        elif len(candidates) != 1:
            titles = ", ".join(_quote(_title(s)) for s in candidates[:8]) or "none"
            hint = "" if window is not None else " (an EDS spectrum image needs an energy window in [chem.windows])"
            raise InputError(f'{path}: name the {kind} with dataset = "…" ({kind}s: {titles}){hint}')
        else:
            chosen = candidates
        signal = chosen[0]
        data = signal["data"]
        check_dtype(path, np.dtype(data.dtype))
        if window is not None:
            axis = _energy_axis(signal)
            assert axis is not None  # with a window, only signals with an energy axis were candidates
            energies, _ = axis
            lo, hi = window
            inside = (energies >= lo) & (energies <= hi)
            if not inside.any():
                raise InputError(
                    f"{path}: the energy window {lo:g}–{hi:g} keV holds no channel of the spectrum "
                    f"({energies.min():g}–{energies.max():g} keV)"
                )
            check_memory(path, (*data.shape[:-1], int(inside.sum())), np.dtype(data.dtype).itemsize)
            image = np.asarray(_materialise(data[..., inside]).sum(axis=-1), dtype=np.float64)
        else:
            check_memory(path, data.shape, np.dtype(data.dtype).itemsize)
            image = np.asarray(_materialise(data), dtype=np.float64)
    n_tilts = image.shape[0] if image.ndim == 3 else 1
    return image, signal_angles(signal, n_tilts)


# --- angles in text and containers -----------------------------------------------------

_DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")


def read_angle_text(path: Path) -> np.ndarray:
    """Angles one per line (IMOD's ``.rawtlt``/``.tlt``; the first column of a table), in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file of angles") from None
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if _DECIMAL_COMMA.match(stripped):
            raise InputError(
                f"{path}: line {number} writes its angle with a decimal comma; write decimals with a point"
            )
        token = stripped.replace(",", " ").replace(";", " ").split()[0]
        try:
            values.append(float(token))
        except ValueError:
            # the token itself is not shown: an angle file may be anything the user pointed at
            raise InputError(f"{path}: line {number} is not a number; give one angle in degrees per line") from None
    return np.asarray(values, dtype=float)


def read_angle_container(path: Path, dataset: str | None) -> np.ndarray:
    """Angles from a dataset of an HDF5 file or an array of an npz archive."""
    suffix = path.suffix.lower()
    with _warnings_to_log():
        if suffix == ".npz":
            headers = npz_headers(path)
            key = dataset or "angles"
            if key not in headers:
                raise InputError(f"{path}: no array {_quote(key)}")
            return npz_array(path, key, headers).ravel()
        if dataset is None:
            raise InputError(f'{path}: name the dataset of angles, {{ file = "{path.name}", dataset = "/tilts" }}')
        with _open_hdf5(path) as f:
            check_hdf5_links(path, f)
            node = hdf5_dataset(path, f, dataset)
            return np.asarray(node[()], dtype=float).ravel()


def read_stack(
    path: str | Path, dataset: str | None = None, *, window: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image stack ``(n_tilts, rows, cols)`` as float64, and the angles its file holds (or None).

    ``window`` (keV) reduces an EDS spectrum image to the counts inside it (RosettaSciIO formats).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: unknown image format {suffix!r} (known: {', '.join(IMAGE_SUFFIXES)})")
    if window is not None and suffix not in RSCIIO_SUFFIXES:
        raise InputError(
            f"{path}: an energy window needs a spectrum image with a calibrated energy axis "
            f"({', '.join(RSCIIO_SUFFIXES)}); a {suffix} file holds maps already"
        )
    try:
        if suffix in MRC_SUFFIXES:
            data, angles = _read_mrc(path)
        elif suffix in TIFF_SUFFIXES:
            data, angles = _read_tiff(path)
        elif suffix in NPZ_SUFFIXES:
            data, angles = _read_npz(path, dataset)
        elif suffix in HDF5_SUFFIXES or (suffix == ".emd" and window is None and not is_rsciio_emd(path)):
            data, angles = _read_hdf5(path, dataset)
        else:
            data, angles = _read_rsciio(path, dataset, window)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path}: does not fit in memory") from None
    except Exception as exc:  # a corrupt or foreign file: say which, not a traceback (and not its content)
        log.debug("reading %s failed", path, exc_info=True)
        raise InputError(f"{path}: cannot be read as {suffix} ({type(exc).__name__})") from None
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a stack of 2-D images, got an array of shape {data.shape}")
    return data, angles


def write_mrc(path: str | os.PathLike[str], stack: np.ndarray, angles: Sequence[float] | None = None) -> Path:
    """Write a stack as MRC (float32), with the angles in a SerialEM extended header if given."""
    import mrcfile

    path = Path(path)
    stack = np.asarray(stack, dtype=np.float32)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(stack)
        if angles is not None:
            nint = 4  # int16 tilt × 100, then an unused int16: SerialEM's layout with flag 1
            ext = np.zeros((stack.shape[0], 2), dtype="<i2")
            ext[:, 0] = np.round(np.asarray(angles, dtype=float) * 100).astype("<i2")
            mrc.set_extended_header(np.frombuffer(ext.tobytes(), dtype="V1"))
            header = mrc.header
            assert header is not None  # set_data made it
            header.exttyp = b"SERI"
            set_imod_nint_nreal(header, nint, 1)
    return path
