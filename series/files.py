"""Measured tilt series: the data file, its validation, and the series in tomosweep's layout.

A data file (TOML, commented example in ``examples/measured_data.toml``) names the HAADF
tilt series, one chemical map series per element (or an EDS spectrum image and an energy
window per element) and the tilt angles of each; a HAADF-only series (no ``[chem]``) is
accepted too. The formats and what is checked before reading are in
:mod:`tomosweep.series.readers`. Angles come from the file's header or metadata
(``angles = "header"``), from a ``.rawtlt`` / ``.tlt`` / text file (one angle per line,
IMOD's format), from a dataset of an HDF5 file or an npz archive, or as a list in the TOML;
they are degrees unless ``angles_unit = "rad"``.

Layout. tomosweep's tilt axis is x: a series is ``(n_tilts, n_det, n_x)``, the tilt axis
along the last (column) axis of each image. ``tilt_axis = "vertical"`` transposes every
image, and ``tilt_axis_angle`` turns images whose axis is off by a few degrees
(counter-clockwise, degrees) before that. ``bin = 2`` sums 2 × 2 pixels (counts stay
Poisson), as Yuan 2021 §4 re-binned their maps. The chosen direction is checked against the
data: in a parallel projection the mass of each slice across the tilt axis is the same at
every tilt (the slice only turns about the axis), while the mass profile across the axis
changes with tilt.

Validation collects every problem — counts against angles, shapes, angle ranges and units,
too few tilts, known and distinct elements, finite values, chemical maps that are counts,
the tilt-axis direction — and raises one :class:`~tomosweep.errors.InputError`: one line
when there is one problem, else a count and one line per problem.
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
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from tomosweep.errors import InputError
from tomosweep.series.align import Alignment
from tomosweep.series.axis import estimate_tilt_axis_angle
from tomosweep.series.calibrate import intensity_outliers, vacuum_level
from tomosweep.series.per_tilt import expand, is_pattern, read_per_tilt, unusable
from tomosweep.series.readers import (
    ANGLE_CONTAINER_SUFFIXES,
    read_angle_container,
    read_angle_text,
    read_stack,
    write_mrc,
)
from tomosweep.series.serialem import Mdoc, find_mdoc, layout_from_serialem, read_mdoc, sum_frames
from tomosweep.series.transfer import Frame, read_alignment
from tomosweep.solvers.elements import ATOMIC_NUMBER

__all__ = [
    "DataFile",
    "MeasuredSeries",
    "load_data_file",
    "load_series",
    "read_stack",
    "tilt_axis_misfit",
    "write_mrc",
    "write_rawtlt",
]

# Fewer than three tilts leave every slice undetermined beyond a two-pixel object, and the
# tilt-axis fit (c + y cos θ − z sin θ has three unknowns) and the held-out check impossible
MIN_TILTS = 3
# The projector and the alignment need a few pixels per side; below this binning has eaten the image
MIN_PIXELS = 4
# Given angles and a file's own agree within this (degrees): headers and .rawtlt files round to 0.01–0.1°
_ANGLES_AGREE = 0.5
# The tilt-axis check (module docstring): a direction is refused when the mass of its slices
# moves this much between tilts (fraction of the mass) and the other direction fits this many times better
_AXIS_MISFIT = 0.1
_AXIS_RATIO = 3.0
_AXIS_MIN_SPAN = 30.0  # degrees of tilt: over less, both directions look invariant


class _Model(BaseModel):
    # use_attribute_docstrings: the docstring under a field is its description, which the
    # documentation's data-file reference shows (docs/_ext/tomosweep_reference.py)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)


class AngleFile(_Model):
    """Angles in a container: ``{file = "series.h5", dataset = "/tilts"}``."""

    file: str
    """The container holding the angles (HDF5, NPZ), relative to the data file."""
    dataset: str | None = None
    """The dataset (HDF5) or array (NPZ) inside it."""


# a list may hold NaN or inf here: the reader says "angles must be finite numbers" in one line, where pydantic
# would list why each of the three forms failed
Angles = Annotated[list[Annotated[float, AllowInfNan(True)]] | str | AngleFile, Field(union_mode="left_to_right")]


class SeriesFile(_Model):
    """One image stack: the file, the dataset (or signal title) inside it and its angles."""

    file: str | list[str]
    """The image stack, relative to the data file: ``.mrc/.st/.ali``, ``.tif``, ``.dm3/.dm4``, ``.hspy``, ``.emd``,
    ``.h5`` or ``.npz``; or one file per tilt, a glob (``"BF_*.dm3"``) or a list, read in angle order with each
    file's own stage tilt (:mod:`tomosweep.series.per_tilt`)."""
    dataset: str | None = None
    """The dataset inside an HDF5 or NPZ file, or the title of the signal in an ``.emd`` or ``.hspy``."""
    angles: Angles | None = None
    """Tilt angles: ``"header"`` (from the file, or SerialEM's ``.mdoc`` beside it), ``"mdoc"`` (that ``.mdoc``,
    which also gives the pixel size and the tilt axis), an angle file (``.rawtlt``, ``.tlt``), a list of degrees, or
    ``{ file, dataset }`` in a container; not set: the section's angles."""


class HaadfSection(SeriesFile):
    """``[haadf]`` of a data file: the HAADF stack, its angles, vacuum level and scale."""

    # narrower than SeriesFile's on purpose: a HAADF series always has angles, from its header by
    # default; sections are read, never assigned to, so the narrowing cannot be broken through the base
    angles: Angles = "header"  # pyright: ignore[reportIncompatibleVariableOverride]
    """Tilt angles: ``"header"`` (SerialEM, FEI or HyperSpy metadata, or SerialEM's ``.mdoc`` beside the stack),
    ``"mdoc"`` (that ``.mdoc``: angles, pixel size and tilt axis), an angle file (``.rawtlt``, ``.tlt``), a list of
    degrees, or ``{ file, dataset }`` in a container."""
    background: float | Literal["auto"] = "auto"
    """The HAADF vacuum level in counts; ``"auto"``: from detector border strips shown to be vacuum, else 0 with a
    note."""
    scale: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"
    """HAADF counts per unit of Σ (Z x)^γ per voxel, with x in the units the sensitivities define; ``"auto"`` fits it
    with the volumes inside the fused solve (:func:`tomosweep.solvers.fused`, ``haadf_scale``)."""
    dose: Literal["auto", "constant"] = "auto"
    """Per-tilt dose: ``"auto"`` measures each tilt's relative dose from the HAADF totals of the slices that stay
    inside the field of view and divides the HAADF and the chemical maps at that tilt by it
    (:mod:`tomosweep.series.dose`); ``"constant"``: one dose for the whole series."""


class ChemSection(_Model):
    """``[chem]`` of a data file: one stack per element, their angles, background, sensitivities."""

    angles: Angles = "header"
    """Tilt angles of every element's maps (an element's own ``angles`` overrides them): as ``haadf.angles``."""
    background: float | Literal["auto"] | dict[str, float] = "auto"
    """Flat background of each map in counts, the Poisson model's ε: one number, one per element, or ``"auto"``
    (from the detector border)."""
    sensitivity: dict[str, float] | None = None
    """Counts per unit concentration and voxel length per element (k-factors, or cross-section × detector efficiency;
    relative values suffice while ``haadf.scale`` is ``"auto"``); equal when not given, with a note."""
    units: Literal["counts", "normalised"] = "counts"
    """``"counts"``: raw counts per pixel (checked: whole numbers, some above 1), what the Poisson model assumes;
    ``"normalised"``: maps proportional to counts (background-subtracted, normalised or quantified), taken as they
    are, with a note."""
    windows: dict[str, tuple[float, float]] | None = None
    """Energy window ``[low, high]`` in keV per element: that element's file is an EDS spectrum image (or a stack of
    them), summed over the window."""
    elements: dict[str, str | SeriesFile]
    """One map series per element symbol: a file name, or ``{ file, dataset, angles }``."""

    @field_validator("elements")
    @classmethod
    def _some(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError('name at least one element map series, e.g. Co = "co.mrc"')
        return value

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: dict[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]] | None:
        for element, (lo, hi) in (value or {}).items():
            if not 0 <= lo < hi:
                raise ValueError(f"the window of {element} must be [low, high] keV with 0 ≤ low < high")
        return value


class AlignSection(_Model):
    """``[align]`` of a data file: how the series are aligned, and the largest shift allowed."""

    method: Literal["projmatch", "xcorr", "com", "none", "file"] = "projmatch"
    """``"projmatch"``: projection matching after a cross-correlation chain; ``"xcorr"``: the chain alone;
    ``"com"``: centres of mass (exact for an isolated particle); ``"none"``: leave the series as it is; ``"file"``:
    the shifts of another tool's alignment (``file``)."""
    file: str | None = None
    """With ``method = "file"``: an IMOD ``.xf`` (its ``.tlt`` beside it), an ETSpy ``.hspy`` or a tomosweep
    ``shifts.json``, relative to the data file; checked against the series' tilts, pixels and turn
    (:mod:`tomosweep.series.transfer`)."""
    max_shift: float | None = Field(default=None, gt=0)
    """The largest shift between successive tilts, in pixels, that the cross-correlation chain searches (not set: a
    quarter of the projection)."""

    @model_validator(mode="after")
    def _file_with_method(self) -> AlignSection:
        if self.method == "file" and not self.file:
            raise ValueError('align.method = "file" needs align.file = "series.xf" (or an ETSpy .hspy, a shifts.json)')
        if self.file and self.method != "file":
            raise ValueError(f'align.file is read with align.method = "file", not "{self.method}"')
        return self


class DataFile(_Model):
    """The schema of a data file (see ``examples/measured_data.toml``)."""

    haadf: HaadfSection | None = None
    """The HAADF series (a data file names this, ``[chem]``, or both)."""
    chem: ChemSection | None = None
    """The chemical maps, one series per element."""
    angles_unit: Literal["deg", "rad"] | None = None
    """The unit of every angle; not set: degrees, and angles that all lie within ±π/2 are refused as radians."""
    tilt_axis: Literal["horizontal", "vertical"] = "horizontal"
    """Direction of the tilt axis in the images; ``"vertical"`` is IMOD's layout."""
    tilt_axis_angle: float | Literal["auto"] = 0.0
    """Degrees by which a slightly rotated tilt axis is turned back before anything else (±45), or ``"auto"``:
    the turn estimated on the HAADF series (the chemical maps summed, without one) as the one that makes it
    most consistent with a rotation about x (:mod:`tomosweep.series.axis`), within ±10° of the ``.mdoc``'s
    turn or of 0°, and applied to every series. ``"auto"`` needs an isolated specimen and is not the default:
    on a series whose axis is not turned it finds a few hundredths of a degree, more on small, noisy ones, and
    it refuses series it cannot measure rather than guess."""
    bin: int = Field(default=1, ge=1, le=16)
    """Sum bin × bin pixels of every image."""
    gamma: float | None = Field(default=None, ge=1, le=3)
    """HAADF contrast exponent γ of Z^γ; not set: the weights' (a study's ``--weights``), else 1.7."""
    pixel_size_nm: float | None = Field(default=None, gt=0)
    """Pixel size in nm before binning, written into the volumes' axes (OME-Zarr, TIFF, ``.hspy``)."""
    align: AlignSection = AlignSection()
    """How the series are aligned."""
    weights: dict[str, float | str] | None = None
    """The method and weights to reconstruct with when no ``--weights`` store is given: ``method = "fused"`` and
    the method's parameters (``lambda_haadf`` relative to the data's balance point, as a study searches it)."""
    header_angles: Literal["check", "ignore"] = "check"
    """When an image file's own header or metadata holds tilt angles and the data file gives others (a list or an
    angle file): ``"check"`` refuses the series where they differ by more than 0.5° (naming both), ``"ignore"``
    uses the given ones with a note."""
    # what `tomosweep tune` searches on these data, in a study file's words; validated there
    # (tomosweep.sweep.tune), read by nothing else
    name: str | None = None
    """``tomosweep tune``: the tune's name, as a study file's ``name``."""
    seed: int | None = None
    """``tomosweep tune``: the seed of the splits and the optimiser, as a study file's ``seed``."""
    device: str | None = None
    """``tomosweep tune``: where trials reconstruct, as a study file's ``device``."""
    methods: dict[str, Any] | None = None
    """``tomosweep tune``: the methods and weights to search, as a study file's ``[methods.<name>]``."""
    budget: dict[str, Any] | None = None
    """``tomosweep tune``: how many trials, as a study file's ``[budget]`` (one cell, no ladder or pruning)."""
    tune: dict[str, Any] | None = None
    """``tomosweep tune``: the self-supervised loss (the keys below)."""
    cluster: dict[str, Any] | None = None
    """``tomosweep tune``: where the trials run, as a study file's ``[cluster]``."""
    plugins: dict[str, Any] | None = None
    """``tomosweep tune``: modules to import, as a study file's ``[plugins]``."""

    @field_validator("tilt_axis_angle", mode="before")
    @classmethod
    def _degrees_or_auto(cls, value: Any) -> float | str:
        if isinstance(value, str):
            if value != "auto":
                raise ValueError(f'give degrees within ±45 or "auto", got {value!r}')
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f'give degrees within ±45 or "auto", got {value!r}')
        if abs(value) > 45:
            raise ValueError(
                f"{value:g}° is beyond ±45°: a larger turn puts the tilt axis nearer the other direction; set "
                'tilt_axis = "vertical" or "horizontal" and the turn from it'
            )
        return float(value)

    @model_validator(mode="after")
    def _some_series(self) -> DataFile:
        if self.haadf is None and self.chem is None:
            raise ValueError("name a [haadf] series, a [chem] section with element maps, or both")
        return self


@dataclass(frozen=True)
class MeasuredSeries:
    """A measured multi-modal tilt series in tomosweep's layout (module docstring).

    ``haadf`` and ``chem`` are float64, the HAADF with its vacuum level subtracted
    (clipped at 0), the chemical maps as recorded (their flat background is
    ``chem_background``, per pixel, passed to the solvers as ε). A HAADF-only series has
    ``elements == ()`` and ``chem`` of shape ``(0, 0, n_det, n_x)``.
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
    sources: dict[str, str] = field(default_factory=dict)  # resolved file -> SHA-256
    chem_units: str = "counts"  # or "normalised" (ChemSection.units)
    notes: tuple[str, ...] = ()  # what the user should know about how the series was read
    haadf_vacuum: Any = None  # tomosweep.series.calibrate.VacuumLevel when the level was "auto"
    dose: str = "auto"  # HaadfSection.dose
    given_alignment: Any = None  # tomosweep.series.align.Alignment read from [align] file
    frame: Any = None  # tomosweep.series.transfer.Frame: how the raw images became this series
    axis_turn: dict[str, Any] | None = None  # tilt_axis_angle = "auto": the turn estimated and applied

    @property
    def n_haadf(self) -> int:
        """Number of HAADF tilts (0 without a HAADF series)."""
        return 0 if self.haadf is None else int(self.haadf.shape[0])

    @property
    def n_chem(self) -> int:
        """Number of chemical tilts."""
        return int(self.chem.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_det, n_x)`` of every projection."""
        source = self.chem if self.elements or self.haadf is None else self.haadf[None]
        return int(source.shape[2]), int(source.shape[3])


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Problems:
    """Collects what is wrong with a data file, to report it all at once."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, text: str) -> None:
        text = _one_line(text)
        if text not in self.items:
            self.items.append(text)

    def raise_if_any(self) -> None:
        if len(self.items) == 1:
            raise InputError(f"data file {self.source}: {self.items[0]}")
        if self.items:
            lines = "\n".join(f"  - {item}" for item in self.items)
            raise InputError(f"data file {self.source}: {len(self.items)} problems\n{lines}")


def _resolve(base: Path, name: str) -> Path:
    """A path the data file names, relative to it, with ``~``, ``..`` and symbolic links resolved;
    one that cannot be (a NUL character, a loop of symbolic links) is refused in one line."""
    try:
        path = Path(os.path.expanduser(name))
        return (path if path.is_absolute() else base / path).resolve()
    except (ValueError, RuntimeError, OSError) as exc:  # NUL in the name; a symbolic link loop
        raise unusable("path", name, exc) from None


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    str
        The hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- geometry: tomosweep's layout ------------------------------------------------


def to_layout(stack: np.ndarray, *, tilt_axis: str, tilt_axis_angle: float, binning: int, order: int = 1) -> np.ndarray:
    """Images ``(n, rows, cols)`` → ``(n, n_det, n_x)``: turn, transpose, sum-bin (module docstring).

    The turn interpolates linearly (``order``), which keeps counts non-negative; ``tilt_axis_angle = "auto"``
    estimates on a cubic spline's turn, whose blur does not change with the turn.
    """
    if tilt_axis_angle:
        from scipy.ndimage import rotate

        stack = np.stack([rotate(img, tilt_axis_angle, reshape=False, order=order, mode="nearest") for img in stack])
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


def _profile_change(profiles: np.ndarray) -> float:
    """How much a mass profile ``(n_tilts, m)`` changes between tilts: the median fraction of mass that
    would have to move to match the median profile, after centring each (drift moves, it does not reshape)."""
    profiles = np.clip(profiles, 0.0, None)
    total = profiles.sum(axis=1)
    profiles = profiles[total > 0] / total[total > 0, None]
    if profiles.shape[0] < 2:
        return 0.0
    x = np.arange(profiles.shape[1], dtype=float)
    centre = (x.size - 1) / 2
    centred = np.stack([np.interp(x, x - (p @ x - centre), p, left=0.0, right=0.0) for p in profiles])
    return float(np.median(0.5 * np.abs(centred - np.median(centred, axis=0)).sum(axis=1)))


def tilt_axis_misfit(stack: np.ndarray) -> tuple[float, float]:
    """The change with tilt of the mass profile along x (tomosweep's tilt axis) and along the detector.

    In a parallel projection about an axis along x, the slice at each x only turns, so its mass
    ``Σ_det p_θ(det, x)`` is the same at every tilt θ; along the detector it is not. A small first
    value and a larger second one is a series whose axis lies along x.

    Returns
    -------
    (along, across) : fractions of the mass (0 … 1) that move between tilts.
    """
    stack = np.asarray(stack, dtype=float)
    return _profile_change(stack.sum(axis=1)), _profile_change(stack.sum(axis=2))


# --- validation --------------------------------------------------------------------


def _check_angles(angles: np.ndarray, n_images: int, what: str, problems: _Problems) -> None:
    if angles.size != n_images:
        problems.add(f"{what}: {n_images} images but {angles.size} angles")
    elif n_images < MIN_TILTS:
        problems.add(
            f"{what}: {n_images} tilt{'s' if n_images != 1 else ''}; a tilt series needs at least {MIN_TILTS} "
            "(fewer leave every slice undetermined and the tilt axis unfit)"
        )
    if not np.all(np.isfinite(angles)):
        problems.add(f"{what}: angles must be finite numbers")
        return
    if angles.size and (angles.min() < -90 or angles.max() > 90):
        problems.add(f"{what}: angles must lie within ±90°, got {angles.min():g}° … {angles.max():g}°")
    if np.unique(np.round(angles, 3)).size != angles.size:
        problems.add(f"{what}: an angle occurs twice")


def _check_values(stack: np.ndarray, what: str, problems: _Problems, *, counts: bool, units: str) -> bool:
    if not np.all(np.isfinite(stack)):
        problems.add(f"{what}: {int(np.size(stack) - np.isfinite(stack).sum())} values are NaN or infinite")
        return False
    if not counts or not stack.size:
        return True
    if stack.min() < 0:
        problems.add(
            f"{what}: chemical maps are counts and must be ≥ 0 (minimum {stack.min():g}); "
            "give the raw integrated counts, not background-subtracted maps"
        )
        return False
    if units == "counts":
        whole = bool(np.all(stack == np.round(stack)))
        if not whole or stack.max() <= 1:
            reason = "not whole numbers" if not whole else f"none above 1 (maximum {stack.max():g})"
            problems.add(
                f"{what}: these values cannot be counts ({reason}); give the raw counts per pixel, which the "
                'Poisson model needs, or declare [chem] units = "normalised" for maps proportional to counts'
            )
            return False
    return True


def _describe(err: ErrorDetails) -> str:
    """One pydantic error as a line in the data file's words: the key, then what is wrong."""
    loc = [str(p) for p in err["loc"]]
    # drop the union members pydantic tried ("list[float]", "str", "AngleFile", "function-after[…]")
    loc = [p for p in loc if not (p[:1].isupper() or "[" in p or p in ("str", "int", "float", "bool"))] or loc
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        where = f"[{'.'.join(loc[:-1])}]" if len(loc) > 1 else "the top level"
        return f"unknown key {loc[-1]!r} in {where}"
    if kind == "missing":
        return f"missing required key {key}"
    message = str(err["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    if kind == "value_error" and key == "(top level)":
        return message
    text = f"{key}: {message}"
    if "input" in err and kind not in ("value_error", "assertion_error") and not isinstance(err["input"], dict):
        text += f" (got {err['input']!r})"[:120]
    return text


def load_data_file(path: str | os.PathLike[str]) -> DataFile:
    """The data file's tables, validated, without reading any series (:func:`load_series` reads them)."""
    return _load_toml(Path(path))


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
        problems = _Problems(path)
        for err in exc.errors():
            problems.add(_describe(err))
        problems.raise_if_any()
        raise  # unreachable: a ValidationError has at least one error


class _Reader:
    """Reads the stacks a data file names, noting every problem and every input's hash."""

    def __init__(self, path: Path, spec: DataFile) -> None:
        self.base = path.parent.resolve()
        self.problems = _Problems(path)
        self.sources: dict[str, str] = {}
        self.unit = spec.angles_unit
        self.binning = spec.bin
        # tilt_axis_angle = "auto" starts from 0° or the .mdoc's turn and refines it (load_series)
        self.auto_axis = spec.tilt_axis_angle == "auto"
        start = 0.0 if spec.tilt_axis_angle == "auto" else float(spec.tilt_axis_angle)
        self.geometry = {"tilt_axis": spec.tilt_axis, "tilt_axis_angle": start, "binning": spec.bin}
        self.vacuum: Any = None
        self.named: dict[tuple[str, str | None, Any], str] = {}  # (file, dataset, window) -> the series naming it
        # the data file's own tilt_axis and tilt_axis_angle win over an .mdoc's ("auto" refines the .mdoc's)
        given = spec.model_fields_set - ({"tilt_axis_angle"} if self.auto_axis else set())
        self.axis_given = bool({"tilt_axis", "tilt_axis_angle"} & given)
        self.raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # what -> raw images and angles, for "auto"
        self.mdoc: Mdoc | None = None  # the first .mdoc read: pixel size and tilt axis
        self.notes: list[str] = []
        self.raw_shapes: dict[str, tuple[int, int]] = {}  # what -> (rows, cols) of a raw image
        self.header_angles = spec.header_angles
        self.overridden: dict[str, np.ndarray] = {}  # what -> the file's own angles, where others were given

    def _hash(self, path: Path) -> None:
        key = str(path)
        if key not in self.sources:
            self.sources[key] = file_hash(path)

    def angles(self, spec: Any, header: np.ndarray | None) -> np.ndarray:
        """Angles from a list, a text file, a container dataset or the image file's header."""
        if isinstance(spec, list):
            return np.asarray(spec, dtype=float)
        if spec == "header":
            if header is None:
                raise InputError(
                    'the image file holds no tilt angles; give angles = "series.rawtlt" or a list of degrees'
                )
            return header
        name, dataset = (spec.file, spec.dataset) if isinstance(spec, AngleFile) else (str(spec), None)
        path = _resolve(self.base, name)
        if not path.is_file():
            raise InputError(f"angle file {path}: no such file")
        try:
            if path.suffix.lower() in ANGLE_CONTAINER_SUFFIXES:
                angles = read_angle_container(path, dataset)
            else:
                angles = read_angle_text(path)
        except InputError as exc:
            raise InputError(f"angle file {exc}") from None
        except Exception as exc:  # a foreign file: which and what kind, never its content
            raise InputError(f"angle file {path}: cannot be read ({type(exc).__name__})") from None
        self._hash(path)
        return angles

    def _in_degrees(self, angles: np.ndarray, what: str) -> np.ndarray | None:
        if self.unit == "rad":
            return np.degrees(angles)
        looks_radian = angles.size >= 2 and np.all(np.abs(angles) <= math.pi / 2) and np.ptp(angles) < 3.2
        if self.unit is None and looks_radian:
            self.problems.add(
                f"{what}: the angles look like radians (all within ±π/2, spanning {np.ptp(angles):.2f}); "
                'set angles_unit = "rad" if they are, or angles_unit = "deg" if these are degrees'
            )
            return None
        return angles

    def _size_ok(self, shape: tuple[int, ...]) -> bool:
        rows, cols = shape[1:]
        b = self.binning
        if min(rows // b, cols // b) >= MIN_PIXELS:
            return True
        if b > 1:
            self.problems.add(
                f"bin = {b} leaves {rows // b} × {cols // b} pixels of the {rows} × {cols} images; at least "
                f"{MIN_PIXELS} × {MIN_PIXELS} are needed: choose bin ≤ {max(1, min(rows, cols) // MIN_PIXELS)}"
            )
        else:
            self.problems.add(f"the images are {rows} × {cols} pixels; at least {MIN_PIXELS} × {MIN_PIXELS} are needed")
        return False

    def _use_mdoc(self, mdoc: Mdoc, what: str) -> None:
        """Take the first ``.mdoc``'s tilt axis (unless the data file sets one) and pixel size."""
        if self.mdoc is not None:
            return
        self.mdoc = mdoc
        self.notes.extend(f"{what}: {note}" for note in mdoc.notes)
        if mdoc.tilt_axis_angle is not None and not self.axis_given:
            direction, turn = layout_from_serialem(mdoc.tilt_axis_angle)
            self.geometry.update(tilt_axis=direction, tilt_axis_angle=turn)
            self.notes.append(
                f"{what}: tilt axis from {mdoc.path.name} (SerialEM's {mdoc.tilt_axis_angle:g}°): "
                f'tilt_axis = "{direction}", turned by {turn:g}°'
            )

    def _mdoc_stack(self, file: Path, data: np.ndarray, used: Any, what: str) -> tuple[np.ndarray, np.ndarray] | None:
        """A single stack's angles from the ``.mdoc`` beside it (``"mdoc"``, or ``"header"`` when one is there)."""
        path = find_mdoc(file)
        if path is None:
            if used == "mdoc":
                raise InputError(f'no .mdoc beside {file} ({file.name}.mdoc or {file.stem}.mdoc) for angles = "mdoc"')
            return None
        mdoc = read_mdoc(path)
        self._hash(path)
        if mdoc.angles.size != data.shape[0]:
            raise InputError(
                f"{path}: {mdoc.angles.size} sections (tilt angles) but {file.name} holds {data.shape[0]} images; "
                "name the .mdoc written with this stack"
            )
        self._use_mdoc(mdoc, what)
        summed, angles, frames = sum_frames(data, mdoc.angles)
        if frames > 1:
            self.notes.append(f"{what}: up to {frames} frames at each tilt ({path.name}) were summed")
        return summed, angles

    def _read(
        self, entry: SeriesFile, what: str, used: Any, window: tuple[float, float] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The raw stack and its angles: one file (with its ``.mdoc``), or one file per tilt."""
        if isinstance(entry.file, list) or is_pattern(entry.file):
            if window is not None:
                raise InputError("an energy window needs one spectrum-image stack; name it as one file")
            files = expand(self.base, entry.file, _resolve)
            if not (isinstance(used, list) or used in ("header", "mdoc")):
                raise InputError('one file per tilt takes angles = "header" (each file\'s own tilt), "mdoc" or a list')
            got = read_per_tilt(files, entry.dataset, used if isinstance(used, list) else None, use_mdoc=used == "mdoc")
            for file in got.files:
                self._hash(file)
                mdoc_path = find_mdoc(file)
                if mdoc_path is not None and not isinstance(used, list):
                    self._hash(mdoc_path)
            if got.mdoc is not None and not isinstance(used, list):
                self._use_mdoc(got.mdoc, what)
            if got.frames > 1:
                self.notes.append(f"{what}: up to {got.frames} frames at each tilt were summed")
            self.notes.append(f"{what}: {len(got.files)} files, one per tilt, read in angle order")
            return got.stack, got.angles
        file = _resolve(self.base, entry.file)
        data, header = read_stack(file, entry.dataset, window=window)
        self._hash(file)
        if used in ("header", "mdoc"):
            from_mdoc = self._mdoc_stack(file, data, used, what)
            if from_mdoc is not None:
                return from_mdoc
        if header is not None and used not in ("header", "mdoc") and len(np.unique(np.asarray(header))) > 1:
            self.overridden[what] = np.asarray(header, dtype=float)
        return data, self.angles(used, header)

    def _check_overridden(self, what: str, angles: np.ndarray) -> bool:
        """Whether the given angles agree with the file's own (``header_angles``); a problem or a note if not."""
        own = self.overridden.get(what)
        if own is None:
            return True
        same = own.shape == angles.shape and float(np.max(np.abs(np.sort(own) - np.sort(angles)))) <= _ANGLES_AGREE
        if same:
            return True
        span = f"{own.min():.1f}° … {own.max():.1f}°, {own.size} angles"
        given = f"{angles.min():.1f}° … {angles.max():.1f}°, {angles.size} angles"
        if self.header_angles == "ignore":
            note = f"the file's own angles ({span}) differ from the given ones ({given}); the given ones are used"
            self.notes.append(f"{what}: {note}")
            return True
        worst = (
            f"by up to {float(np.max(np.abs(np.sort(own) - np.sort(angles)))):.2f}°"
            if own.shape == angles.shape
            else "in number"
        )
        self.problems.add(
            f"{what}: the file's own angles ({span}) and the given ones ({given}) differ {worst}; "
            'give angles = "header" to use the file\'s, or header_angles = "ignore" to use the given ones'
        )
        return False

    def stack(
        self,
        entry: SeriesFile,
        what: str,
        angle_spec: Any,
        *,
        counts: bool,
        units: str = "counts",
        window: tuple[float, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The stack in tomosweep's layout and its angles in degrees, or None (the problem is noted)."""
        names = entry.file if isinstance(entry.file, list) else [entry.file]
        try:
            file = ", ".join(str(_resolve(self.base, n)) for n in names)
        except InputError as exc:
            self.problems.add(f"{what}: {exc}")
            return None
        key = (file, entry.dataset, window)
        if key in self.named:
            self.problems.add(f"{what} and {self.named[key]} name the same series ({file}); each needs its own images")
            return None
        self.named[key] = what
        used = entry.angles if entry.angles is not None else angle_spec
        try:
            data, angles = self._read(entry, what, used, window)
        except InputError as exc:
            self.problems.add(f"{what}: {exc}")
            return None
        self.raw_shapes.setdefault(what, (int(data.shape[1]), int(data.shape[2])))
        angles = self._in_degrees(np.asarray(angles, dtype=float), what)
        if angles is not None and not np.all(np.isfinite(angles)):
            self.problems.add(f"{what}: angles must be finite numbers")
            return None
        if angles is None or not self._check_overridden(what, angles):
            return None
        _check_angles(angles, data.shape[0], what, self.problems)
        if not _check_values(data, what, self.problems, counts=counts, units=units):
            return None
        if not self._size_ok(data.shape):
            return None
        if self.auto_axis:
            self.raw[what] = (data, angles)
        return to_layout(data, **self.geometry), angles

    def laid_out_again(self, what: str, *, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """A series' raw images in the layout the geometry now says, in file order, and their angles
        (``tilt_axis_angle = "auto"``)."""
        data, angles = self.raw[what]
        return to_layout(data, **self.geometry, order=order), angles

    def haadf(self, section: HaadfSection | None) -> tuple[np.ndarray | None, np.ndarray | None, float]:
        """The HAADF series less its vacuum level, sorted by angle; its angles; the level."""
        if section is None:
            return None, None, 0.0
        got = self.stack(section, "HAADF", section.angles, counts=False)
        if got is None:
            return None, None, 0.0
        haadf, angles = got
        if section.background == "auto":
            self.vacuum = vacuum_level(haadf, angles)
        level = self.vacuum.level if section.background == "auto" else float(section.background)
        return _less_level(haadf, angles, level), np.sort(angles), level

    def chem(self, section: ChemSection) -> tuple[list[np.ndarray], list[np.ndarray]]:
        for e in section.elements:
            if e not in ATOMIC_NUMBER:
                hint = f" (did you mean {e.capitalize()!r}?)" if e.capitalize() in ATOMIC_NUMBER else ""
                self.problems.add(f"chem.elements: unknown element symbol {e!r}{hint}")
        windows = section.windows or {}
        unknown = sorted(set(windows) - set(section.elements))
        if unknown:
            self.problems.add(f"chem.windows: no element map series named {unknown}")
        maps, angles = [], []
        for e, entry in section.elements.items():
            entry = SeriesFile(file=entry) if isinstance(entry, str) else entry
            got = self.stack(
                entry, f"chemical map {e}", section.angles, counts=True, units=section.units, window=windows.get(e)
            )
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


def _less_level(haadf: np.ndarray, angles: np.ndarray, level: float) -> np.ndarray:
    """A HAADF series less its vacuum level (clipped at 0), sorted by angle."""
    return np.maximum(haadf - level, 0.0)[np.argsort(angles)]


def _check_tilt_axis(stack: np.ndarray, angles: np.ndarray, spec: DataFile, turn: float, problems: _Problems) -> None:
    """Refuse a tilt_axis the data contradict (module docstring; :func:`tilt_axis_misfit`)."""
    if stack.shape[0] < MIN_TILTS or np.ptp(angles) < _AXIS_MIN_SPAN:
        return
    along, across = tilt_axis_misfit(stack)
    if along > _AXIS_MISFIT and along > _AXIS_RATIO * across:
        other = "vertical" if spec.tilt_axis == "horizontal" else "horizontal"
        turned = f" (after turning by tilt_axis_angle = {turn:g}°)" if turn else ""
        problems.add(
            f'tilt_axis = "{spec.tilt_axis}" does not fit the data{turned}: the mass of each slice across that '
            f"axis changes by {100 * along:.0f} % between tilts, across the other direction by {100 * across:.0f} %; "
            f'the tilt axis of these images is {other}: set tilt_axis = "{other}"'
        )


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


def _given_alignment(
    spec: DataFile,
    reader: _Reader,
    haadf: np.ndarray | None,
    haadf_angles: np.ndarray | None,
    chem_angles: list[np.ndarray],
) -> tuple[Frame, Alignment | None]:
    """How the raw images became the series, and the alignment ``[align] file`` gives it (checked)."""
    raw_shape = next(iter(reader.raw_shapes.values()))
    geometry = reader.geometry
    frame = Frame(str(geometry["tilt_axis"]), float(geometry["tilt_axis_angle"]), int(geometry["binning"]), raw_shape)
    if spec.align.method != "file" or spec.align.file is None:
        return frame, None
    file = _resolve(reader.base, spec.align.file)
    angles = haadf_angles if haadf is not None and haadf_angles is not None else np.sort(chem_angles[0])
    try:
        given, read = read_alignment(file, angles, frame, haadf)
    except InputError as exc:
        reader.problems.add(str(exc))
        reader.problems.raise_if_any()
        raise  # unreachable: a problem was just added
    for p in read:
        reader._hash(p)
    return frame, given


def _auto_turn(
    reader: _Reader,
    spec: DataFile,
    haadf: np.ndarray | None,
    haadf_angles: np.ndarray | None,
    haadf_level: float,
    chem_angles: list[np.ndarray],
) -> tuple[dict[str, Any], np.ndarray | None, list[np.ndarray]]:
    """``tilt_axis_angle = "auto"``: the turn estimated on the HAADF series less its vacuum level (the chemical
    maps summed, less their border level, without one), then every series laid out again from its raw images
    turned by the start (0° or the ``.mdoc``'s) plus the estimate: the series a data file giving that angle
    reads. The record of it, the HAADF (same vacuum level) and the chemical maps."""
    start = float(reader.geometry["tilt_axis_angle"])
    elements = tuple(spec.chem.elements) if spec.chem is not None else ()
    # a start turn was interpolated linearly, whose blur changes across the image with the turn: the
    # estimate is made on the raw images turned by a cubic spline instead (series.axis)
    order = 3 if start else 1
    if haadf is not None and haadf_angles is not None:
        on, angles = "HAADF", haadf_angles
        stack = _less_level(*reader.laid_out_again(on, order=order), haadf_level) if start else haadf
    else:
        on, angles = "chemical maps, summed", chem_angles[0]
        summed = np.sum([reader.laid_out_again(f"chemical map {e}", order=order)[0] for e in elements], axis=0)
        stack = np.maximum(summed - border_level(summed), 0.0)
    try:
        estimate = estimate_tilt_axis_angle(stack, angles)
    except InputError as exc:
        reader.problems.add(f"{on}: {exc}")
        reader.problems.raise_if_any()
        raise  # unreachable: a problem was just added
    # the estimate turns the images as laid out; "vertical" transposed them first, which reverses a turn
    applied = start + (estimate.angle if reader.geometry["tilt_axis"] == "horizontal" else -estimate.angle)
    reader.geometry["tilt_axis_angle"] = applied
    record = {"tilt_axis_angle": applied, "start_deg": start, "estimated_on": on, **estimate.as_dict()}
    from_mdoc, before = (f", from the .mdoc's {start:g}°", "at that turn") if start else ("", "unturned")
    reader.notes.append(
        f'tilt_axis_angle = "auto": the images were turned by {applied:+.2f}° (estimated on the {on}{from_mdoc}; '
        f"reprojection residual {estimate.residual_unturned:.3g} {before}, {estimate.residual:.3g} turned), every "
        "series alike"
    )
    if haadf is not None:
        haadf = _less_level(*reader.laid_out_again("HAADF"), haadf_level)
    chem = [reader.laid_out_again(f"chemical map {e}")[0] for e in elements]
    return record, haadf, chem


def load_series(path: str | os.PathLike[str]) -> MeasuredSeries:
    """Read and validate a data file and every series it names (module docstring)."""
    path = Path(path)
    spec = _load_toml(path)
    reader = _Reader(path, spec)
    haadf, haadf_angles, haadf_background = reader.haadf(spec.haadf)
    chem, chem_angles = reader.chem(spec.chem) if spec.chem is not None else ([], [])
    problems = reader.problems
    problems.raise_if_any()
    elements = tuple(spec.chem.elements) if spec.chem is not None else ()
    _check_consistency(haadf, chem, chem_angles, elements, problems)
    if spec.chem is not None:
        _check_per_element(spec.chem.background, elements, "chem.background", problems, zero=True)
        if spec.chem.sensitivity is not None:
            _check_per_element(spec.chem.sensitivity, elements, "chem.sensitivity", problems, zero=False)
    problems.raise_if_any()
    turn = float(reader.geometry["tilt_axis_angle"])
    if haadf is not None:
        assert haadf_angles is not None  # _Reader.haadf gives the series and its angles, or neither
        _check_tilt_axis(haadf, haadf_angles, spec, turn, problems)
    else:
        _check_tilt_axis(np.sum(chem, axis=0), chem_angles[0], spec, turn, problems)
    problems.raise_if_any()
    axis_turn = None
    if reader.auto_axis:
        axis_turn, haadf, chem = _auto_turn(reader, spec, haadf, haadf_angles, haadf_background, chem_angles)
    frame, given = _given_alignment(spec, reader, haadf, haadf_angles, chem_angles)

    notes = reader.notes + (
        intensity_outliers(haadf, haadf_angles) if haadf is not None and haadf_angles is not None else []
    )
    if spec.chem is None:
        # a data file has [haadf] where it has no [chem], and an unread [haadf] raised above
        assert haadf is not None
        order = np.zeros(0, dtype=int)
        stacked = np.zeros((0, 0, *haadf.shape[1:]))
        angles = np.zeros(0)
        notes.append("no [chem] section: a HAADF-only series is reconstructed without chemistry (that needs [chem])")
    else:
        order = np.argsort(chem_angles[0])
        stacked = np.stack([c[order] for c in chem])
        angles = np.asarray(chem_angles[0][order], dtype=float)
        if spec.chem.units == "normalised":
            notes.append(
                '[chem] units = "normalised": the maps are taken as they are, so the Poisson noise model '
                "of the chemical term does not hold and its weight means less than on counts"
            )
    sensitivity = spec.chem.sensitivity if spec.chem is not None else None
    pixel_size = spec.pixel_size_nm
    if pixel_size is None and reader.mdoc is not None and reader.mdoc.pixel_size_nm is not None:
        pixel_size = reader.mdoc.pixel_size_nm
        notes.append(f"pixel size {pixel_size:g} nm from {reader.mdoc.path.name}")
    return MeasuredSeries(
        haadf=haadf,
        haadf_angles=np.zeros(0) if haadf_angles is None else np.asarray(haadf_angles, dtype=float),
        chem=stacked,
        chem_angles=angles,
        elements=elements,
        chem_background=_background_levels(stacked, elements, spec.chem.background) if spec.chem else (),
        haadf_background=float(haadf_background),
        haadf_scale="auto" if spec.haadf is None else spec.haadf.scale,
        sensitivity=None if sensitivity is None else tuple(float(sensitivity[e]) for e in elements),
        gamma=spec.gamma,
        pixel_size_nm=None if pixel_size is None else pixel_size * spec.bin,
        align=spec.align,
        weights=spec.weights,
        sources=reader.sources,
        haadf_vacuum=reader.vacuum,
        chem_units=spec.chem.units if spec.chem is not None else "counts",
        notes=tuple(notes),
        dose="constant" if spec.haadf is None else spec.haadf.dose,
        given_alignment=given,
        frame=frame,
        axis_turn=axis_turn,
    )


def write_rawtlt(path: str | os.PathLike[str], angles: Sequence[float]) -> Path:
    """Write angles one per line (IMOD ``.rawtlt``)."""
    path = Path(path)
    path.write_text("".join(f"{float(a):.3f}\n" for a in angles))
    return path
