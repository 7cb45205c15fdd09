"""A user's own ground truth from a file: ``.npz``, ``.h5``/``.hdf5`` or ``.zarr``.

This is how a scientist plans an experiment on a specimen like theirs. Every format
holds the same names:

* ``volumes`` — ``(n_elements, n, n, n)`` (3D) or ``(n_elements, n, n)`` (one slice),
  square slices, finite, ≥ 0; axes ``(y, z, x)`` with the tilt axis x last;
* ``elements`` — chemical symbols, one per volume (in ``.zarr`` also accepted as a JSON
  list in the group's ``attrs["elements"]``);
* ``z`` — optional atomic numbers (looked up from the symbols when absent);
* ``units`` — optional text (default ``"atomic fraction"``).

Every problem raises :class:`~tomosweep.errors.InputError` naming the file and what is
wrong; no raw ``KeyError``/``OSError`` reaches the user.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import InputError, TomosweepError
from tomosweep.phantoms.specimen import Specimen
from tomosweep.solvers.elements import atomic_number

_SUFFIXES = {".npz": "npz", ".h5": "h5", ".hdf5": "h5", ".zarr": "zarr"}


def _format(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unsupported file type {path.suffix!r}; use .npz, .h5/.hdf5 or .zarr")
    return fmt


def _read_npz(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _read_h5(path: Path) -> dict[str, Any]:
    import h5py

    with h5py.File(path, "r") as f:
        out = {key: f[key][()] for key in f.keys() if isinstance(f[key], h5py.Dataset)}
        for key in ("elements", "units"):
            if key not in out and key in f.attrs:
                out[key] = f.attrs[key]
    return out


def _read_zarr(path: Path) -> dict[str, Any]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    out = {key: np.asarray(array[...]) for key, array in group.arrays()}
    if "elements" not in out and "elements" in group.attrs:
        out["elements"] = group.attrs["elements"]
    if "units" not in out and "units" in group.attrs:
        out["units"] = group.attrs["units"]
    return out


_READERS = {"npz": _read_npz, "h5": _read_h5, "zarr": _read_zarr}


def _symbols(path: Path, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = [raw]
    values = np.atleast_1d(np.asarray(raw))
    symbols = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist())
    for s in symbols:
        try:
            atomic_number(s)
        except TomosweepError as exc:
            raise InputError(f"{path}: {exc}") from None
    return symbols


def load_specimen(path: str | Path) -> Specimen:
    """Read a ground-truth specimen (see module docstring for the format)."""
    path = Path(path)
    fmt = _format(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        data = _READERS[fmt](path)
    except TomosweepError:
        raise
    except Exception as exc:  # corrupt or foreign files surface as many exception types
        raise InputError(f"{path}: cannot be read as {fmt} ({type(exc).__name__}: {exc})") from None

    for key in ("volumes", "elements"):
        if key not in data:
            raise InputError(f"{path}: missing {key!r} (found {sorted(data) or 'nothing'})")
    volumes = np.asarray(data["volumes"])
    if volumes.dtype.kind not in "fiu":
        raise InputError(f"{path}: 'volumes' must be numeric, got dtype {volumes.dtype}")
    volumes = volumes.astype(np.float64)
    if volumes.ndim == 3:
        volumes = volumes[..., None]  # one slice: n_x = 1
    elif volumes.ndim != 4:
        raise InputError(
            f"{path}: 'volumes' must be (n_elements, n, n, n) or (n_elements, n, n), got shape {volumes.shape}"
        )
    if volumes.shape[1] != volumes.shape[2]:
        raise InputError(f"{path}: slices must be square (n × n in y, z), got {volumes.shape[1]} × {volumes.shape[2]}")
    if not np.all(np.isfinite(volumes)):
        raise InputError(f"{path}: 'volumes' contains NaN or infinite values")
    if volumes.min() < 0:
        raise InputError(f"{path}: 'volumes' must be non-negative concentrations; minimum is {volumes.min():g}")
    elements = _symbols(path, data["elements"])
    if len(elements) != volumes.shape[0]:
        raise InputError(f"{path}: {len(elements)} element symbols for {volumes.shape[0]} volumes")
    if "z" in data:
        z = np.atleast_1d(np.asarray(data["z"], dtype=np.float64))
        if z.shape != (len(elements),) or not np.all(z > 0):
            raise InputError(f"{path}: 'z' must hold one positive atomic number per element, got {z.tolist()}")
        z_values = tuple(z.tolist())
    else:
        z_values = tuple(float(atomic_number(e)) for e in elements)
    units = data.get("units", "atomic fraction")
    units = (
        units.decode() if isinstance(units, bytes) else str(np.asarray(units).item() if np.ndim(units) == 0 else units)
    )
    try:
        return Specimen(
            name=f"file:{path}", elements=elements, volumes=volumes, z=z_values, units=units, info={"path": str(path)}
        )
    except TomosweepError as exc:
        raise InputError(f"{path}: {exc}") from None


def save_specimen(specimen: Specimen, path: str | Path) -> Path:
    """Write ``specimen`` in the format :func:`load_specimen` reads (by the suffix)."""
    path = Path(path)
    fmt = _format(path)
    elements = list(specimen.elements)
    if fmt == "npz":
        np.savez_compressed(
            path,
            volumes=specimen.volumes,
            elements=np.array(elements),
            z=np.array(specimen.z),
            units=np.array(specimen.units),
        )
    elif fmt == "h5":
        import h5py

        with h5py.File(path, "w") as f:
            f.create_dataset("volumes", data=specimen.volumes, compression="gzip")
            f.create_dataset("elements", data=np.array(elements, dtype="S"))
            f.create_dataset("z", data=np.array(specimen.z))
            f.attrs["units"] = specimen.units
    else:
        import zarr

        group = zarr.open_group(str(path), mode="w")
        group.create_array("volumes", data=specimen.volumes)
        group.create_array("z", data=np.array(specimen.z))
        group.attrs["elements"] = elements
        group.attrs["units"] = specimen.units
    return path
