"""A user's own ground truth: load and save specimens as .npz, .h5/.hdf5, .zarr or .hspy.

File format (the same names in every container)
-----------------------------------------------
``volumes``
    float array ``(n_elements, n, n, n_x)`` in the solver layout ``(y, z, x)`` with
    the tilt axis along x, or ``(n_elements, n, n)`` for a single 2D slice (read as
    ``n_x = 1``). Finite and ≥ 0.
``elements``
    1-D array of chemical symbols, one per volume (``["Co", "O"]``). In HDF5 they
    may be stored as bytes; in zarr either as a string array or as a JSON list in
    the group attribute ``elements``.
``z`` (optional)
    Atomic numbers, one per element; looked up from the symbols when absent.
``units`` (optional)
    ``"atomic fraction"`` (default) or ``"g/cm^3"``.
``weight_fractions``, ``density`` (optional)
    Weight-fraction maps (shape of ``volumes``) and a density map ``(n, n, n_x)``.
``info`` (optional)
    A JSON object with provenance.

In ``.npz`` these are arrays (``units`` and ``info`` 0-d strings); in HDF5 datasets at
the file root (``units`` and ``info`` may also be root attributes); in zarr v3 arrays
of a root group (``units``, ``info`` and ``elements`` may also be group attributes).

A ``.hspy`` file is one HyperSpy signal (written and read through RosettaSciIO) that
HyperSpy and ETSpy open as it is (:func:`write_hspy`): the volumes in the order
``(element, z, y, x)``, axes named so (z along the beam at 0°, x along the tilt axis),
the elements in ``metadata.Sample.elements`` and the title, and the other entries under
``metadata.Tomosweep`` (``weight_fractions`` and ``density`` in the signal's order).
:func:`save_specimen` writes exactly this, so a saved built-in specimen is a template.

Every problem with a file raises :class:`~tomosweep.errors.InputError` naming the
file and what is wrong — never a raw ``KeyError`` or ``OSError``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import InputError, TomosweepError
from tomosweep.phantoms.specimen import Specimen
from tomosweep.solvers.elements import ATOMIC_NUMBER

SUFFIXES = (".npz", ".h5", ".hdf5", ".zarr", ".hspy")
_ARRAY_KEYS = ("volumes", "elements", "z", "weight_fractions", "density")
_TEXT_KEYS = ("units", "info")
_LAYOUT = "volumes (n_elements, n, n, n_x) or (n_elements, n, n), elements (symbols), optional z"


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"specimen file {path}: unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(SUFFIXES)}"
        )
    return suffix


# ---------------------------------------------------------------- readers: container → dict of raw values


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files if key in _ARRAY_KEYS + _TEXT_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"specimen file {path}: cannot be read as npz ({exc})") from None


def _read_h5(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw: dict[str, Any] = {key: f.attrs[key] for key in _TEXT_KEYS if key in f.attrs}
            for key in _ARRAY_KEYS + _TEXT_KEYS:
                if key in f:
                    node = f[key]
                    if not isinstance(node, h5py.Dataset):
                        raise InputError(f"specimen file {path}: {key!r} is a group, expected a dataset")
                    raw[key] = node[()]
            return raw
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"specimen file {path}: cannot be read as {path.suffix.lower()[1:]} (HDF5: {exc})") from None


def _read_zarr(path: Path) -> dict[str, Any]:
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
        raw: dict[str, Any] = {key: group.attrs[key] for key in (*_TEXT_KEYS, "elements") if key in group.attrs}
        arrays = dict(group.arrays())
        for key in _ARRAY_KEYS + _TEXT_KEYS:
            if key in arrays:
                raw[key] = arrays[key][...]
        return raw
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"specimen file {path}: cannot be read as zarr (a zarr v3 group: {exc})") from None


#: the axes of a ``.hspy`` signal, in array order: a stack of beam-normal images (HyperSpy's Signal2D)
HSPY_AXES = ("element", "z", "y", "x")


def _read_hspy(path: Path) -> dict[str, Any]:
    from rsciio.hspy import file_reader  # deferred: RosettaSciIO, for .hspy only

    try:
        signals = file_reader(str(path))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"specimen file {path}: cannot be read as hspy ({exc})") from None
    if len(signals) != 1:
        raise InputError(f"specimen file {path}: holds {len(signals)} signals, expected one")
    signal = signals[0]
    names = tuple(axis.get("name") for axis in signal["axes"])
    if names != HSPY_AXES:
        raise InputError(
            f"specimen file {path}: a signal with axes {names}, expected {HSPY_AXES} (the layout write_hspy writes)"
        )
    metadata = signal["metadata"]
    own = dict(metadata.get("Tomosweep", {}))
    raw: dict[str, Any] = {key: own[key] for key in (*_TEXT_KEYS, "z", _MARK) if key in own}
    raw["volumes"] = np.asarray(signal["data"]).transpose(0, 2, 1, 3)
    if "elements" in metadata.get("Sample", {}):
        raw["elements"] = metadata["Sample"]["elements"]
    if "weight_fractions" in own:
        raw["weight_fractions"] = np.asarray(own["weight_fractions"]).transpose(0, 2, 1, 3)
    if "density" in own:
        raw["density"] = np.asarray(own["density"]).transpose(1, 0, 2)
    return raw


# ---------------------------------------------------------------- validation: raw dict → Specimen


def _text(value: Any) -> str:
    """A scalar string that may arrive as bytes, a 0-d array or a 1-element array."""
    value = np.asarray(value)
    item = value.reshape(-1)[0] if value.size == 1 else value.item()
    return item.decode("utf-8") if isinstance(item, bytes) else str(item)


def _symbols(path: Path, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = [raw]
    values = np.asarray(raw, dtype=object)
    if values.ndim != 1 or values.size == 0:
        raise InputError(f"specimen file {path}: 'elements' must be a 1-D list of chemical symbols, got {raw!r}")
    symbols = []
    for item in values:
        if isinstance(item, bytes):
            item = item.decode("utf-8")
        if not isinstance(item, str):
            raise InputError(f"specimen file {path}: 'elements' must hold chemical symbols (text), got {item!r}")
        symbols.append(item.strip())
    return tuple(symbols)


def _float_array(path: Path, key: str, raw: Any) -> np.ndarray:
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"specimen file {path}: {key!r} must be numeric, got dtype {np.asarray(raw).dtype}") from None
    if not np.all(np.isfinite(array)):
        raise InputError(f"specimen file {path}: {key!r} contains NaN or infinite values")
    if array.size and array.min() < 0:
        raise InputError(f"specimen file {path}: {key!r} must be non-negative, has values down to {array.min():g}")
    return array


def _volumes(path: Path, raw: Any) -> np.ndarray:
    shape = np.shape(raw)
    if len(shape) not in (3, 4):
        raise InputError(
            f"specimen file {path}: 'volumes' must be (n_elements, n, n, n) for a 3D specimen (any length "
            f"n_x along the tilt axis x) or (n_elements, n, n) for a 2D slice; got {len(shape)}-D shape {shape}"
        )
    if shape[1] != shape[2]:
        raise InputError(
            f"specimen file {path}: 'volumes' slices must be square (n_y = n_z), got shape {shape}; "
            "the layout is (n_elements, y, z, x) with the tilt axis along x"
        )
    if 0 in shape:
        raise InputError(f"specimen file {path}: 'volumes' is empty, shape {shape}")
    volumes = _float_array(path, "volumes", raw)
    return volumes[..., None] if volumes.ndim == 3 else volumes


def _optional_map(path: Path, key: str, raw: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if raw is None:
        return None
    array = _float_array(path, key, raw)
    if array.shape == shape[:-1]:
        array = array[..., None]
    if array.shape != shape:
        raise InputError(f"specimen file {path}: {key!r} has shape {np.shape(raw)}, expected {shape}")
    return array


def _specimen(path: Path, raw: dict[str, Any]) -> Specimen:
    missing = [key for key in ("volumes", "elements") if key not in raw]
    if missing:
        raise InputError(f"specimen file {path}: missing {', '.join(repr(k) for k in missing)}; expected {_LAYOUT}")
    volumes = _volumes(path, raw["volumes"])
    elements = _symbols(path, raw["elements"])
    if len(elements) != volumes.shape[0]:
        raise InputError(
            f"specimen file {path}: {len(elements)} element symbols for {volumes.shape[0]} volumes "
            f"({list(elements)}); give one symbol per volume"
        )
    info: dict[str, Any] = {}
    if "info" in raw:
        try:
            info = dict(json.loads(_text(raw["info"])))
        except (ValueError, TypeError):
            raise InputError(f"specimen file {path}: 'info' must be a JSON object") from None
    info["source_file"] = str(path)
    kwargs: dict[str, Any] = {
        "units": _text(raw["units"]) if "units" in raw else "atomic fraction",
        "weight_fractions": _optional_map(path, "weight_fractions", raw.get("weight_fractions"), volumes.shape),
        "density": _optional_map(path, "density", raw.get("density"), volumes.shape[1:]),
        "info": info,
    }
    name = f"file:{path}"
    try:
        if "z" not in raw:
            return Specimen.from_symbols(name, elements, volumes, **kwargs)
        z = np.asarray(raw["z"], dtype=object).reshape(-1)
        if z.size != len(elements):
            raise InputError(
                f"'z' must hold one positive atomic number per element: {z.size} given for {len(elements)} elements"
            )
        try:
            z_values = np.asarray(z, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"'z' must hold one positive atomic number per element, got {raw['z']!r}") from None
        if not np.all(np.isfinite(z_values)) or np.any(z_values <= 0):
            raise InputError(f"'z' must hold one positive atomic number per element, got {z_values.tolist()}")
        return Specimen(name=name, elements=elements, volumes=volumes, z=tuple(z_values), **kwargs)
    except InputError as exc:
        raise InputError(f"specimen file {path}: {exc}") from None


def load_specimen(path: str | os.PathLike[str]) -> Specimen:
    """Load a user's ground truth from ``.npz``, ``.h5``/``.hdf5``, ``.zarr`` or ``.hspy``.

    See the module docstring for the format; :func:`save_specimen` writes a template.

    Parameters
    ----------
    path : str or path-like
        The file (or, for zarr, the directory).

    Returns
    -------
    Specimen
        Named ``"file:<path>"``; ``info["source_file"]`` holds the path.

    Raises
    ------
    InputError
        Naming the file and the problem: not found, unsupported extension, unreadable,
        missing ``volumes``/``elements``, wrong dimensions, non-square slices,
        negative or non-finite values, unknown element symbols, a count mismatch
        between elements, volumes and ``z``.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise InputError(f"specimen file {path}: no such file")
    reader = {".npz": _read_npz, ".h5": _read_h5, ".hdf5": _read_h5, ".zarr": _read_zarr, ".hspy": _read_hspy}[suffix]
    return _specimen(path, reader(path))


# ---------------------------------------------------------------- writers


def _payload(specimen: Specimen) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays = {
        "volumes": np.asarray(specimen.volumes),
        "elements": np.asarray(specimen.elements, dtype=str),
        "z": np.asarray(specimen.z, dtype=np.float64),
    }
    if specimen.weight_fractions is not None:
        arrays["weight_fractions"] = np.asarray(specimen.weight_fractions, dtype=np.float64)
    if specimen.density is not None:
        arrays["density"] = np.asarray(specimen.density, dtype=np.float64)
    text = {"units": specimen.units, "info": json.dumps(specimen.info, default=str), _MARK: "tomosweep"}
    return arrays, text


# a text entry every specimen file written by save_specimen carries, so overwrite=True
# replaces only such files, never a sweep store or a user's own data
_MARK = "written_by"


def _what_is_there(path: Path) -> str | None:
    """``None`` when ``path`` is a specimen file that tomosweep wrote; else what it is."""
    try:
        if path.is_dir():
            import zarr

            attrs = dict(zarr.open_group(path, mode="r").attrs)
            if attrs.get("format") == "tomosweep-sweep-store":
                return "a tomosweep sweep store"
            return None if attrs.get(_MARK) == "tomosweep" else "a directory that tomosweep did not write"
        suffix = path.suffix.lower()
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                marked = _MARK in archive.files and str(archive[_MARK]) == "tomosweep"
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                marked = str(f.attrs.get(_MARK, "")) == "tomosweep"
        elif suffix == ".hspy":
            import h5py

            with h5py.File(path, "r") as f:
                experiments = f.get("Experiments")
                names = list(experiments) if isinstance(experiments, h5py.Group) else []
                own = f.get(f"Experiments/{names[0]}/metadata/Tomosweep") if len(names) == 1 else None
                marked = isinstance(own, h5py.Group) and str(own.attrs.get(_MARK, "")) == "tomosweep"
        else:
            marked = False
    except Exception:  # unreadable as a specimen container: not ours
        marked = False
    return None if marked else "a file that tomosweep did not write"


def _write_npz(path: Path, arrays: dict[str, np.ndarray], text: dict[str, str]) -> None:
    with open(path, "wb") as f:
        # one dict of members: numpy's stubs would read an unpacked dict of arrays as its allow_pickle
        members: dict[str, Any] = {**arrays, **{k: np.asarray(v) for k, v in text.items()}}
        np.savez_compressed(f, **members)


def _write_h5(path: Path, arrays: dict[str, np.ndarray], text: dict[str, str]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if key == "elements":
                f.create_dataset(key, data=value.astype(object), dtype=h5py.string_dtype())
            else:
                f.create_dataset(key, data=value, compression="gzip" if value.ndim > 1 else None)
        f.attrs.update(text)


def _write_zarr(path: Path, arrays: dict[str, np.ndarray], text: dict[str, str]) -> None:
    import zarr

    group = zarr.open_group(path, mode="w")
    for key, value in arrays.items():
        if key == "elements":
            # variable-length UTF-8 is the zarr v3 string type with a stable spec
            group.create_array(key, shape=value.shape, dtype=str)[...] = value
        else:
            group.create_array(key, data=value)
    group.attrs.update(text)


def _write_hspy(path: Path, arrays: dict[str, np.ndarray], text: dict[str, str]) -> None:
    own: dict[str, Any] = {**text, "z": arrays["z"]}
    if "weight_fractions" in arrays:
        own["weight_fractions"] = arrays["weight_fractions"].transpose(0, 2, 1, 3)
    if "density" in arrays:
        own["density"] = arrays["density"].transpose(1, 0, 2)
    write_hspy(path, arrays["volumes"], tuple(str(e) for e in arrays["elements"]), tomosweep=own)


def write_hspy(
    path: str | os.PathLike[str],
    volumes: np.ndarray,
    elements: tuple[str, ...],
    *,
    pixel_size_nm: float | None = None,
    tomosweep: dict[str, Any] | None = None,
) -> Path:
    """Write element volumes as one HyperSpy signal (``.hspy``, through RosettaSciIO).

    HyperSpy opens it as a Signal2D: a stack of beam-normal ``(y, x)`` images navigated
    by ``z`` and ``element``. ETSpy's and HyperSpy's tools read the axes and units.

    Parameters
    ----------
    path : str or path-like
        The file to write (replaced if it exists: check first).
    volumes : numpy.ndarray
        ``(n_elements, n_y, n_z, n_x)`` in the solver layout; written as
        ``(element, z, y, x)`` (:data:`HSPY_AXES`), z along the beam at 0°, x along the
        tilt axis.
    elements : tuple of str
        One label per volume, a chemical symbol or ``"HAADF"``: ``metadata.General.title``
        (``"Co, O"``); the chemical symbols also ``metadata.Sample.elements``.
    pixel_size_nm : float, optional
        The voxel size: the scale of the z, y and x axes in nm. Without it the axes are
        in pixels, with no unit.
    tomosweep : dict, optional
        More entries for ``metadata.Tomosweep`` (beside ``written_by`` and ``version``).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from rsciio.hspy import file_writer  # deferred: RosettaSciIO, for .hspy only

    from tomosweep import __version__

    data = np.ascontiguousarray(np.asarray(volumes).transpose(0, 2, 1, 3))
    if data.shape[0] != len(elements):
        raise InputError(f"{path}: {len(elements)} element symbols for {data.shape[0]} volumes")
    spatial = {"units": "nm", "scale": float(pixel_size_nm)} if pixel_size_nm else {"scale": 1.0}
    axes = [
        {"name": name, "size": size, "offset": 0.0, "navigate": name in ("element", "z"), "is_binned": False}
        | ({"scale": 1.0} if name == "element" else spatial)
        for name, size in zip(HSPY_AXES, data.shape, strict=True)
    ]
    own = {_MARK: "tomosweep", "version": __version__, "layout": ", ".join(HSPY_AXES), **(tomosweep or {})}
    signal = {
        "data": data,
        "axes": axes,
        "metadata": {
            "General": {"title": ", ".join(elements)},
            "Signal": {"signal_type": ""},
            "Tomosweep": own,
        },
        "original_metadata": {},
        # what HyperSpy's own signal dictionary carries beside (RosettaSciIO's writer reads them)
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "learning_results": {},
        "models": {},
        "package_info": {},
    }
    symbols = [e for e in elements if e in ATOMIC_NUMBER]  # a HAADF volume is no element of the sample
    if symbols:
        signal["metadata"]["Sample"] = {"elements": symbols}
    file_writer(str(path), signal, show_progressbar=False)
    return Path(path)


def check_output(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse an output path :func:`save_specimen` must not write (call it before the work).

    An existing path is refused without ``overwrite``; with it, only a specimen file
    that tomosweep wrote may be replaced — never a sweep store, a user's own data or a
    foreign directory.
    """
    path = Path(path)
    _suffix(path)
    if path.exists() and not overwrite:
        raise InputError(f"specimen file {path}: already exists; pass overwrite=True to replace it")
    if path.exists():
        found = _what_is_there(path)
        if found is not None:
            raise InputError(
                f"{path} is {found}; overwrite replaces only a specimen file written by tomosweep. "
                "Choose another output path, or remove it yourself if it really should go"
            )
    return path


def save_specimen(specimen: Specimen, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a specimen as ``.npz``, ``.h5``/``.hdf5``, ``.zarr`` or ``.hspy`` in the format
    :func:`load_specimen` reads (a template for your own ground truth).

    Parameters
    ----------
    specimen : Specimen
        What to write (volumes, elements, z, units, optional weight fractions and
        density, and ``info`` as JSON).
    path : str or path-like
        Destination; the extension picks the container.
    overwrite : bool, optional
        Replace an existing specimen file that tomosweep wrote (it carries a
        ``written_by`` mark); anything else at ``path`` — a sweep store, a user's
        own data, a foreign directory — is refused even then.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(specimen, Specimen):
        raise InputError(f"save_specimen needs a Specimen, got {type(specimen).__name__}")
    path = Path(path)
    suffix = _suffix(path)
    check_output(path, overwrite=overwrite)
    writer = {".npz": _write_npz, ".h5": _write_h5, ".hdf5": _write_h5, ".zarr": _write_zarr, ".hspy": _write_hspy}[
        suffix
    ]
    arrays, text = _payload(specimen)
    try:
        writer(path, arrays, text)
    except TomosweepError:
        raise
    except OSError as exc:
        raise InputError(f"specimen file {path}: cannot be written ({exc})") from None
    return path
