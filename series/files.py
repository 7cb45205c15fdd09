"""Measured tilt series: the data file, the readers, and one validation pass over everything.

A data file (TOML, commented example in ``examples/measured_data.toml``) names the HAADF
tilt series, one chemical map series per element and the tilt angles of each. Images
are read from

- ``.mrc`` / ``.st`` / ``.ali`` / ``.mrcs`` (mrcfile): a stack of sections, one per tilt;
  angles from a SerialEM (``SERI``/``AGAR``) or FEI (``FEI1``/``FEI2``) extended header;
- ``.tif`` / ``.tiff`` (tifffile): a multi-page stack;
- ``.h5`` / ``.hdf5`` / ``.emd`` (h5py): the dataset named by ``dataset`` (the only
  3-D dataset when there is exactly one); angles from a dataset or from the image
  dataset's ``tilt_angles`` / ``angles`` attribute;
- ``.npz``: the array named by ``dataset`` (the only array when there is one); angles
  from an array of the same archive;

and angles from the file's header (``angles = "header"``), from a ``.rawtlt`` / ``.tlt``
/ text file (one angle per line, IMOD's format), or as a list in the TOML.

Layout. tomosweep's tilt axis is x: a series is ``(n_tilts, n_det, n_x)``, the tilt axis
along the last (column) axis of each image. IMOD and most microscopes show the axis
vertical; ``tilt_axis = "vertical"`` transposes every image, and ``tilt_axis_angle``
turns images whose axis is off by a few degrees (counter-clockwise, degrees) before that.
``bin = 2`` sums 2 × 2 pixels (counts stay Poisson), as Yuan 2021 §4 re-binned their maps.

Validation collects every problem — counts against angles, shapes, angle ranges,
known and distinct elements, finite values, non-negative chemical counts — and raises
one :class:`~tomosweep.errors.InputError` that lists them all, one per line.
"""

from __future__ import annotations

import hashlib
import math
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tomosweep.errors import InputError

MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali", ".preali", ".rec")
TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".emd")
NPZ_SUFFIXES = (".npz",)
ANGLE_TEXT_SUFFIXES = (".rawtlt", ".tlt", ".txt", ".csv")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AngleFile(_Model):
    """Angles in a container: ``{file = "series.h5", dataset = "/tilts"}``."""

    file: str
    dataset: str | None = None


Angles = Annotated[list[float] | str | AngleFile, Field(union_mode="left_to_right")]


class SeriesFile(_Model):
    """One image stack: the file, the dataset inside it (HDF5/EMD/NPZ) and its angles."""

    file: str
    dataset: str | None = None
    angles: Angles | None = None


class HaadfSection(SeriesFile):
    angles: Angles = "header"
    background: float | Literal["auto"] = "auto"
    # HAADF counts per unit of Σ (Z x)^γ per voxel, with x in the units the sensitivities define;
    # "auto" fits it to the chemical start (tomosweep.solvers.fused, haadf_scale)
    scale: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"


class ChemSection(_Model):
    angles: Angles = "header"
    background: float | Literal["auto"] | dict[str, float] = "auto"
    # counts per unit concentration and voxel length (k-factors, or cross-section × detector
    # efficiency; relative values suffice while haadf.scale is "auto"); equal when not given
    sensitivity: dict[str, float] | None = None
    elements: dict[str, str | SeriesFile]

    @field_validator("elements")
    @classmethod
    def _some(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError('name at least one element map series, e.g. Co = "co.mrc"')
        return value


class AlignSection(_Model):
    method: Literal["xcorr", "com", "none"] = "xcorr"
    max_shift: float | None = Field(None, gt=0)


class DataFile(_Model):
    """The schema of a data file (see ``examples/measured_data.toml``)."""

    haadf: HaadfSection | None = None
    chem: ChemSection
    tilt_axis: Literal["horizontal", "vertical"] = "horizontal"
    tilt_axis_angle: float = Field(0.0, ge=-45, le=45)
    bin: int = Field(1, ge=1, le=16)
    gamma: float | None = Field(None, ge=1, le=3)
    pixel_size_nm: float | None = Field(None, gt=0)
    align: AlignSection = AlignSection()
    weights: dict[str, float | str] | None = None


@dataclass(frozen=True)
class MeasuredSeries:
    """A measured multi-modal tilt series in tomosweep's layout (module docstring).

    ``haadf`` and ``chem`` are float64, the HAADF with its vacuum level subtracted
    (clipped at 0), the chemical maps in counts as recorded (their flat background is
    ``chem_background``, counts per pixel, passed to the solvers as ε).
    """

    haadf: np.ndarray | None  # (n_haadf, n_det, n_x)
    haadf_angles: np.ndarray
    chem: np.ndarray  # (n_elements, n_chem, n_det, n_x)
    chem_angles: np.ndarray
    elements: tuple[str, ...]
    chem_background: tuple[float, ...]
    haadf_background: float = 0.0
    sensitivity: tuple[float, ...] | None = None  # counts per unit concentration, per element
    haadf_scale: float | str = "auto"
    gamma: float | None = None
    pixel_size_nm: float | None = None
    align: AlignSection = field(default_factory=AlignSection)
    weights: dict[str, float | str] | None = None
    sources: dict[str, str] = field(default_factory=dict)  # file -> SHA-256

    @property
    def n_haadf(self) -> int:
        return 0 if self.haadf is None else int(self.haadf.shape[0])

    @property
    def n_chem(self) -> int:
        return int(self.chem.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_det, n_x)`` of every projection."""
        return int(self.chem.shape[2]), int(self.chem.shape[3])


class _Problems:
    """Collects what is wrong with a data file, to report it all at once."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)

    def raise_if_any(self) -> None:
        if self.items:
            lines = "\n".join(f"  - {item}" for item in self.items)
            n = len(self.items)
            raise InputError(f"data file {self.source}: {n} problem{'s' if n > 1 else ''}\n{lines}")


def _resolve(base: Path, name: str) -> Path:
    path = Path(os.path.expanduser(name))
    return path if path.is_absolute() else base / path


# --- readers --------------------------------------------------------------------


# IMOD's header keeps nint and nreal (int16) at bytes 128-131, inside MRC2014's EXTRA2 field
# (bytes 112-195), which mrcfile exposes as raw bytes
_IMOD_NINT_OFFSET = 128 - 112


def _imod_nint_nreal(header: Any) -> tuple[int, int]:
    extra2 = bytes(header.extra2)
    order = "<" if bytes(header.machst)[:1] in (b"\x44", b"\x41") else ">"
    nint, nreal = np.frombuffer(extra2[_IMOD_NINT_OFFSET : _IMOD_NINT_OFFSET + 4], dtype=f"{order}i2")
    return int(nint), int(nreal)


def _set_imod_nint_nreal(header: Any, nint: int, nreal: int) -> None:
    extra2 = bytearray(bytes(header.extra2))
    extra2[_IMOD_NINT_OFFSET : _IMOD_NINT_OFFSET + 4] = np.array([nint, nreal], dtype="<i2").tobytes()
    header.extra2 = bytes(extra2)


def _mrc_angles(mrc: Any) -> np.ndarray | None:
    """Tilt angles from an MRC extended header (SerialEM or FEI), or None."""
    exttyp = bytes(mrc.header.exttyp).strip(b"\x00 ")
    n_sections = int(mrc.header.nz)
    if exttyp in (b"FEI1", b"FEI2"):
        ext = mrc.indexed_extended_header
        if ext is not None and "Alpha tilt" in (ext.dtype.names or ()):
            return np.asarray(ext["Alpha tilt"][:n_sections], dtype=float)
        return None
    if exttyp in (b"SERI", b"AGAR"):
        # SerialEM: nint bytes per section; flag bit 1 of nreal = tilt angle × 100 as int16 first
        nint, nreal = _imod_nint_nreal(mrc.header)
        raw = np.frombuffer(bytes(mrc.extended_header), dtype=np.uint8)
        if not nreal & 1 or nint < 2 or raw.size < nint * n_sections:
            return None
        per = raw[: nint * n_sections].reshape(n_sections, nint)[:, :2].copy()
        return per.view("<i2").ravel().astype(float) / 100.0
    return None


def _read_mrc(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import mrcfile

    with mrcfile.open(path, permissive=True, header_only=False) as mrc:
        if mrc.data is None:
            raise InputError(f"{path}: not a readable MRC file")
        data = np.array(mrc.data, dtype=np.float64)
        angles = _mrc_angles(mrc)
    return data, angles


def _read_tiff(path: Path) -> tuple[np.ndarray, None]:
    import tifffile

    return np.asarray(tifffile.imread(path), dtype=np.float64), None


def _read_hdf5(path: Path, dataset: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    import h5py

    with h5py.File(path, "r") as f:
        if dataset is None:
            found: list[str] = []
            f.visititems(
                lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None
            )
            if len(found) != 1:
                listing = ", ".join("/" + n for n in found) or "none"
                raise InputError(f'{path}: name the image stack with dataset = "…" (3-D datasets: {listing})')
            dataset = found[0]
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            raise InputError(f"{path}: no dataset {dataset!r}")
        node = f[dataset]
        data = np.asarray(node[()], dtype=np.float64)
        angles = None
        for key in ("tilt_angles", "angles"):
            if key in node.attrs:
                angles = np.asarray(node.attrs[key], dtype=float).ravel()
                break
    return data, angles


def _read_npz(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as archive:
        stacks = [k for k in archive.files if archive[k].ndim == 3]
        if key is None:
            if len(stacks) != 1:
                raise InputError(f'{path}: name the image stack with dataset = "…" (3-D arrays: {stacks or "none"})')
            key = stacks[0]
        if key not in archive.files:
            raise InputError(f"{path}: no array {key!r} (arrays: {archive.files})")
        data = np.asarray(archive[key], dtype=np.float64)
        angles = np.asarray(archive["angles"], dtype=float).ravel() if "angles" in archive.files else None
    return data, angles


def read_stack(path: str | os.PathLike[str], dataset: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One image stack ``(n_tilts, rows, cols)`` as float64, and the angles its header holds (or None)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in MRC_SUFFIXES:
            data, angles = _read_mrc(path)
        elif suffix in TIFF_SUFFIXES:
            data, angles = _read_tiff(path)
        elif suffix in HDF5_SUFFIXES:
            data, angles = _read_hdf5(path, dataset)
        elif suffix in NPZ_SUFFIXES:
            data, angles = _read_npz(path, dataset)
        else:
            known = ", ".join(MRC_SUFFIXES + TIFF_SUFFIXES + HDF5_SUFFIXES + NPZ_SUFFIXES)
            raise InputError(f"{path}: unknown image format {suffix!r} (known: {known})")
    except InputError:
        raise
    except Exception as exc:  # a corrupt or foreign file: say which and why, not a traceback
        raise InputError(f"{path}: cannot be read as {suffix} ({type(exc).__name__}: {exc})") from None
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a stack of 2-D images, got an array of shape {data.shape}")
    return data, angles


def read_angles(spec: Any, base: Path, header: np.ndarray | None, what: str) -> np.ndarray:
    """Angles from a list, a text file, a container dataset or the image file's header."""
    if isinstance(spec, list):
        return np.asarray(spec, dtype=float)
    if isinstance(spec, AngleFile):
        path = _resolve(base, spec.file)
        suffix = path.suffix.lower()
        if suffix in HDF5_SUFFIXES:
            import h5py

            if not path.is_file():
                raise InputError(f"{what} angles: {path}: no such file")
            with h5py.File(path, "r") as f:
                if spec.dataset is None or spec.dataset not in f:
                    raise InputError(f"{what} angles: {path} has no dataset {spec.dataset!r}")
                return np.asarray(f[spec.dataset][()], dtype=float).ravel()
        if suffix in NPZ_SUFFIXES:
            with np.load(path, allow_pickle=False) as archive:
                key = spec.dataset or "angles"
                if key not in archive.files:
                    raise InputError(f"{what} angles: {path} has no array {key!r}")
                return np.asarray(archive[key], dtype=float).ravel()
        return read_angles(spec.file, base, header, what)
    if spec == "header":
        if header is None:
            raise InputError(
                f'{what}: the image file holds no tilt angles; give angles = "series.rawtlt" or a list of degrees'
            )
        return header
    path = _resolve(base, str(spec))
    if not path.is_file():
        raise InputError(f"{what} angles: {path}: no such file")
    try:
        values = [float(tok) for line in path.read_text().splitlines() for tok in line.replace(",", " ").split()[:1]]
    except ValueError as exc:
        raise InputError(f"{what} angles: {path}: not one angle per line ({exc})") from None
    return np.asarray(values, dtype=float)


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- geometry: tomosweep's layout ------------------------------------------------


def to_layout(stack: np.ndarray, *, tilt_axis: str, tilt_axis_angle: float, binning: int) -> np.ndarray:
    """Images ``(n, rows, cols)`` → ``(n, n_det, n_x)``: turn, transpose, sum-bin (module docstring)."""
    if tilt_axis_angle:
        from scipy.ndimage import rotate

        stack = np.stack([rotate(img, tilt_axis_angle, reshape=False, order=1, mode="nearest") for img in stack])
    if tilt_axis == "vertical":
        stack = stack.transpose(0, 2, 1)
    if binning > 1:
        n, r, c = stack.shape
        r, c = r - r % binning, c - c % binning
        stack = stack[:, :r, :c].reshape(n, r // binning, binning, c // binning, binning).sum(axis=(2, 4))
    return np.ascontiguousarray(stack)


def border_level(stack: np.ndarray, fraction: float = 0.1) -> float:
    """Mean of the outer ``fraction`` of detector rows on both sides: the vacuum level of an isolated specimen."""
    k = max(1, int(round(stack.shape[1] * fraction)))
    return float(np.mean(np.concatenate([stack[:, :k].ravel(), stack[:, -k:].ravel()])))


# --- the data file ---------------------------------------------------------------


def _check_angles(angles: np.ndarray, n_images: int, what: str, problems: _Problems) -> None:
    if angles.size != n_images:
        problems.add(f"{what}: {n_images} images but {angles.size} angles")
    if not np.all(np.isfinite(angles)):
        problems.add(f"{what}: angles must be finite numbers")
        return
    if angles.size and (angles.min() < -90 or angles.max() > 90):
        problems.add(f"{what}: angles must lie within ±90°, got {angles.min():g}° … {angles.max():g}°")
    if np.unique(np.round(angles, 3)).size != angles.size:
        problems.add(f"{what}: an angle occurs twice")


def _check_values(stack: np.ndarray, what: str, problems: _Problems, *, counts: bool) -> bool:
    if not np.all(np.isfinite(stack)):
        problems.add(f"{what}: {int(np.size(stack) - np.isfinite(stack).sum())} values are NaN or infinite")
        return False
    if counts and stack.size and stack.min() < 0:
        problems.add(
            f"{what}: chemical maps are counts and must be ≥ 0 (minimum {stack.min():g}); "
            "give the raw integrated counts, not background-subtracted or normalised maps"
        )
        return False
    return True


def _load_toml(path: Path) -> DataFile:
    if not path.is_file():
        raise InputError(f"data file {path}: no such file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"data file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"data file {path}: not valid TOML ({exc})") from None
    try:
        return DataFile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            lines.append(f"  - {where}: {err['msg']}")
        raise InputError(f"data file {path}: {len(lines)} problem(s)\n" + "\n".join(lines)) from None


class _Reader:
    """Reads the stacks a data file names, noting every problem and every input's hash."""

    def __init__(self, path: Path, spec: DataFile) -> None:
        self.base = path.parent
        self.problems = _Problems(path)
        self.sources: dict[str, str] = {}
        self.geometry = {"tilt_axis": spec.tilt_axis, "tilt_axis_angle": spec.tilt_axis_angle, "binning": spec.bin}

    def stack(
        self, entry: SeriesFile, what: str, angle_spec: Any, *, counts: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The stack in tomosweep's layout and its angles, or None (the problem is noted)."""
        file = _resolve(self.base, entry.file)
        used = entry.angles if entry.angles is not None else angle_spec
        try:
            data, header = read_stack(file, entry.dataset)
            angles = read_angles(used, self.base, header, what)
        except InputError as exc:
            self.problems.add(f"{what}: {exc}")
            return None
        self.sources[str(file)] = file_hash(file)
        angle_file = used.file if isinstance(used, AngleFile) else used
        if isinstance(angle_file, str) and angle_file != "header":
            self.sources[str(_resolve(self.base, angle_file))] = file_hash(_resolve(self.base, angle_file))
        _check_angles(angles, data.shape[0], what, self.problems)
        if not _check_values(data, what, self.problems, counts=counts):
            return None
        return to_layout(data, **self.geometry), angles

    def haadf(self, section: HaadfSection | None) -> tuple[np.ndarray | None, np.ndarray | None, float]:
        """The HAADF series less its vacuum level, sorted by angle; its angles; the level."""
        if section is None:
            return None, None, 0.0
        got = self.stack(section, "HAADF", section.angles, counts=False)
        if got is None:
            return None, None, 0.0
        haadf, angles = got
        level = border_level(haadf) if section.background == "auto" else float(section.background)
        order = np.argsort(angles)
        return np.maximum(haadf - level, 0.0)[order], angles[order], level

    def chem(self, section: ChemSection) -> tuple[list[np.ndarray], list[np.ndarray]]:
        from tomosweep.solvers.elements import ATOMIC_NUMBER

        for e in section.elements:
            if e not in ATOMIC_NUMBER:
                hint = f" (did you mean {e.capitalize()!r}?)" if e.capitalize() in ATOMIC_NUMBER else ""
                self.problems.add(f"chem.elements: unknown element symbol {e!r}{hint}")
        maps, angles = [], []
        for e, entry in section.elements.items():
            entry = SeriesFile(file=entry) if isinstance(entry, str) else entry
            got = self.stack(entry, f"chemical map {e}", section.angles, counts=True)
            if got is not None:
                maps.append(got[0])
                angles.append(got[1])
        return maps, angles


def _check_per_element(table: Any, elements: tuple[str, ...], name: str, problems: _Problems, *, zero: bool) -> None:
    """A per-element table names each element once, with finite values (> 0, or ≥ 0 with ``zero``)."""
    if isinstance(table, dict):
        missing, extra = sorted(set(elements) - set(table)), sorted(set(table) - set(elements))
        if missing or extra:
            problems.add(f"{name}: give one value per element (missing {missing}, unknown {extra})")
        bad = {k: v for k, v in table.items() if not (math.isfinite(v) and (v >= 0 if zero else v > 0))}
        if bad:
            problems.add(f"{name}: values must be finite and {'≥ 0' if zero else '> 0'}, got {bad}")
    elif isinstance(table, float | int) and table < 0:
        problems.add(f"{name}: counts must be ≥ 0, got {table:g}")


def _check_consistency(
    haadf: np.ndarray | None,
    chem: list[np.ndarray],
    chem_angles: list[np.ndarray],
    elements: tuple[str, ...],
    problems: _Problems,
) -> None:
    shapes = {"HAADF": haadf.shape[1:]} if haadf is not None else {}
    shapes.update({e: c.shape[1:] for e, c in zip(elements, chem, strict=True)})
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{k} {v[0]}×{v[1]}" for k, v in shapes.items())
        problems.add(f"every projection must have the same size (after binning): {listing}")
    counts = {e: a.size for e, a in zip(elements, chem_angles, strict=True)}
    if len(set(counts.values())) > 1:
        problems.add(f"every element needs a map at the same tilts; numbers of maps: {counts}")
    elif any(not np.allclose(a, chem_angles[0], atol=0.05) for a in chem_angles):
        problems.add("every element needs a map at the same tilts; the angles differ between elements")
    if haadf is not None and haadf.max() <= 0:
        problems.add("HAADF: the series is empty after subtracting its vacuum level; set haadf.background")


def _background_levels(stacked: np.ndarray, elements: tuple[str, ...], background: Any) -> tuple[float, ...]:
    """ε per element in counts: the detector border ("auto"), a table or one number; never 0."""
    floor = 1e-3 * max(float(stacked.mean()), 1e-12)  # a Poisson model needs ε > 0
    levels = []
    for i, e in enumerate(elements):
        if background == "auto":
            level = border_level(stacked[i])
        elif isinstance(background, dict):
            level = float(background[e])
        else:
            level = float(background)
        levels.append(max(level, floor))
    return tuple(levels)


def load_series(path: str | os.PathLike[str]) -> MeasuredSeries:
    """Read and validate a data file and every series it names (module docstring)."""
    path = Path(path)
    spec = _load_toml(path)
    reader = _Reader(path, spec)
    haadf, haadf_angles, haadf_background = reader.haadf(spec.haadf)
    chem, chem_angles = reader.chem(spec.chem)
    problems = reader.problems
    problems.raise_if_any()
    elements = tuple(spec.chem.elements)
    _check_consistency(haadf, chem, chem_angles, elements, problems)
    _check_per_element(spec.chem.background, elements, "chem.background", problems, zero=True)
    if spec.chem.sensitivity is not None:
        _check_per_element(spec.chem.sensitivity, elements, "chem.sensitivity", problems, zero=False)
    problems.raise_if_any()

    order = np.argsort(chem_angles[0])
    stacked = np.stack([c[order] for c in chem])
    sensitivity = spec.chem.sensitivity
    return MeasuredSeries(
        haadf=haadf,
        haadf_angles=np.zeros(0) if haadf_angles is None else np.asarray(haadf_angles, dtype=float),
        chem=stacked,
        chem_angles=np.asarray(chem_angles[0][order], dtype=float),
        elements=elements,
        chem_background=_background_levels(stacked, elements, spec.chem.background),
        haadf_background=float(haadf_background),
        haadf_scale="auto" if spec.haadf is None else spec.haadf.scale,
        sensitivity=None if sensitivity is None else tuple(float(sensitivity[e]) for e in elements),
        gamma=spec.gamma,
        pixel_size_nm=None if spec.pixel_size_nm is None else spec.pixel_size_nm * spec.bin,
        align=spec.align,
        weights=spec.weights,
        sources=reader.sources,
    )


def write_rawtlt(path: str | os.PathLike[str], angles: Sequence[float]) -> Path:
    """Write angles one per line (IMOD ``.rawtlt``)."""
    path = Path(path)
    path.write_text("".join(f"{float(a):.3f}\n" for a in angles))
    return path


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
            mrc.header.exttyp = b"SERI"
            _set_imod_nint_nreal(mrc.header, nint, 1)
    return path
