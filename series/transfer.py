r"""Alignments in and out: IMOD ``.xf``, ETSpy ``.hspy``, tomosweep ``shifts.json``; aligned series as MRC.

tomosweep's shifts (:mod:`tomosweep.series.align`) are ``s = (s_det, s_x)`` per projection in
the pixels of the series as reconstructed (after ``bin``), with ``raw_i(p) = aligned_i(p − s_i)``,
in the frame the data file's ``tilt_axis_angle`` turned the images into. The formats below
are mapped onto that, and a file that does not fit the series is refused in one line.

**IMOD** ``.xf`` (one line per image, ``A11 A12 A21 A22 DX DY``): the image is transformed
by :math:`x' = A x + d` about its centre, ``(N − 1)/2`` in 0-based pixels, with ``x`` the
column and ``y`` the row of the stored image, in unbinned pixels: the aligned image at
:math:`Ax + d` holds the raw image at :math:`x`. With :math:`A` the identity that is
``raw(p) = aligned(p − d)`` read in the raw image's own axes, so

* ``tilt_axis = "horizontal"`` (the axis along the columns): ``s_det = −DY / bin``,
  ``s_x = −DX / bin``;
* ``tilt_axis = "vertical"`` (IMOD's layout, the axis along the rows): ``s_det = −DX / bin``,
  ``s_x = −DY / bin``.

:math:`A` must be one rotation for every image (a magnification or skew per tilt, as
IMOD's ``tiltalign`` may solve for, is refused: apply it with ``newstack`` and read the
``.ali`` with ``method = "none"``). A rotation by :math:`\varphi` counter-clockwise in
IMOD's axes is what ``tilt_axis_angle = −φ`` does (tomosweep turns with
:func:`scipy.ndimage.rotate`), so the data file must say that angle. The rows follow the
angles of the ``.tlt`` beside the ``.xf`` (same name; ``.rawtlt`` also looked for), which
must match the series' angles.

**ETSpy** ``.hspy`` (a ``TomoStack`` saved by ETSpy): ``metadata.Tomography.shifts``
(``(n, 2)``: across the axis, then along it, pixels of the stored images) applied first as
``aligned(p) = raw(p − s)``, then ``trans_stack``: a rotation by ``tiltaxis`` degrees about
``shape/2`` (scikit-image's affine warp, ``x`` the column) and a translation
``(xshift, −yshift)``; ETSpy's tilt axis runs along the columns. Composed, that is a turn by
``tilt_axis_angle = −tiltaxis`` about tomosweep's centre and a shift
``s = −(R(s_E) + (xshift, −yshift) + (R − I)(c_t − c_E))`` in the turned frame.

**tomosweep** ``shifts.json``: what ``reconstruct-data`` writes: the shifts in the series'
pixels with the ``bin`` and ``tilt_axis_angle`` they belong to; another ``bin`` is rescaled,
another turn is refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomosweep.errors import InputError
from tomosweep.series.align import Alignment, without_translation

__all__ = ["ALIGNMENT_SUFFIXES", "Frame", "read_alignment", "write_imod_xf", "write_shifts_json"]

#: tilts (degrees) an alignment file's angles may differ from the series' (IMOD's tiltalign refines them)
ANGLE_TOLERANCE = 0.5
#: how far the turn an alignment file applies may lie from the data file's (degrees)
TURN_TOLERANCE = 0.05
#: how far an .xf matrix may lie from one rotation (a scale of 0.2 %)
MATRIX_TOLERANCE = 2e-3
SHIFTS_FORMAT = "tomosweep shifts"


@dataclass(frozen=True)
class Frame:
    """How the raw images became the series: ``to_layout``'s arguments and the raw image size.

    Attributes
    ----------
    tilt_axis : str
        ``"horizontal"`` or ``"vertical"``.
    tilt_axis_angle : float
        Degrees the raw images were turned (:func:`scipy.ndimage.rotate`'s sense).
    binning : int
    raw_shape : tuple of int
        ``(rows, cols)`` of a raw image.
    """

    tilt_axis: str
    tilt_axis_angle: float
    binning: int
    raw_shape: tuple[int, int]

    def to_layout(self, d_colrow: np.ndarray) -> np.ndarray:
        """Vectors ``(n, 2)`` (column, row) in raw pixels → ``(det, x)`` in the series' pixels."""
        d = np.asarray(d_colrow, dtype=float)
        det_x = d[:, ::-1] if self.tilt_axis == "horizontal" else d
        return det_x / self.binning

    def to_raw(self, det_x: np.ndarray) -> np.ndarray:
        """``(det, x)`` in the series' pixels → (column, row) in raw pixels."""
        d = np.asarray(det_x, dtype=float) * self.binning
        return d[:, ::-1] if self.tilt_axis == "horizontal" else d

    def as_dict(self) -> dict[str, Any]:
        """The frame as plain JSON values (for ``shifts.json``)."""
        return {
            "tilt_axis": self.tilt_axis,
            "tilt_axis_angle": float(self.tilt_axis_angle),
            "bin": int(self.binning),
            "raw_shape": [int(v) for v in self.raw_shape],
        }


def _rotation(degrees: float) -> np.ndarray:
    """Counter-clockwise rotation in (column, row) axes."""
    t = math.radians(degrees)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def _centre_of_mass_across(stack: np.ndarray) -> np.ndarray:
    det = np.arange(stack.shape[1]) - (stack.shape[1] - 1) / 2
    mass = stack.sum(axis=(1, 2))
    return np.where(mass > 0, stack.sum(axis=2) @ det / np.where(mass > 0, mass, 1.0), 0.0)


def _match(path: Path, file_angles: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """For each series angle, the row of the file at that tilt (refused when any is missing or far)."""
    if file_angles.size != angles.size:
        raise InputError(
            f"[align] file {path}: {file_angles.size} tilts, the series {angles.size}; it is the alignment of "
            "another series (or of some tilts only)"
        )
    rows = np.array([int(np.argmin(np.abs(file_angles - a))) for a in angles])
    off = np.abs(file_angles[rows] - angles)
    if np.unique(rows).size != rows.size or off.max(initial=0.0) > ANGLE_TOLERANCE:
        worst = int(np.argmax(off))
        raise InputError(
            f"[align] file {path}: its tilts do not match the series' (the series' {angles[worst]:g}° is "
            f"{off[worst]:.2f}° from the nearest, more than {ANGLE_TOLERANCE}°): it is the alignment of another series"
        )
    return rows


def _check_turn(path: Path, turn: float, frame: Frame) -> None:
    if abs(turn - frame.tilt_axis_angle) <= TURN_TOLERANCE:
        return
    if abs(turn) > 45:
        raise InputError(
            f"[align] file {path}: it turns the images by {turn:.2f}°, more than the ±45° tilt_axis_angle allows "
            "(its output has the tilt axis in another direction); apply it with IMOD's newstack and read the "
            'aligned stack with [align] method = "none"'
        )
    raise InputError(
        f"[align] file {path}: its shifts are for the images turned as tilt_axis_angle = {turn:.3f} does, the data "
        f"file has {frame.tilt_axis_angle:g}: set tilt_axis_angle = {turn:.3f}"
    )


def _read_tlt_beside(path: Path) -> tuple[np.ndarray, Path]:
    from tomosweep.series.readers import read_angle_text

    for suffix in (".tlt", ".rawtlt"):
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return read_angle_text(candidate), candidate
    raise InputError(
        f"[align] file {path}: IMOD's .xf needs its tilt angles beside it ({path.with_suffix('.tlt').name}) to "
        "match its lines to the series' tilts"
    )


def read_imod_xf(path: Path, angles: np.ndarray, frame: Frame) -> tuple[np.ndarray, list[Path]]:
    """Shifts ``(n, 2)`` (det, x) in the series' angle order from an IMOD ``.xf`` (module docstring)."""
    try:
        rows = np.loadtxt(path, dtype=float, ndmin=2)
    except ValueError:
        raise InputError(f"[align] file {path}: not an IMOD .xf (six numbers per line)") from None
    if rows.shape[1:] != (6,) or not np.all(np.isfinite(rows)):
        raise InputError(f"[align] file {path}: not an IMOD .xf (six numbers per line)")
    tlt, tlt_path = _read_tlt_beside(path)
    if tlt.size != rows.shape[0]:
        raise InputError(f"[align] file {path}: {rows.shape[0]} lines but {tlt.size} angles in {tlt_path.name}")
    order = _match(path, tlt, angles)
    matrices = rows[:, :4].reshape(-1, 2, 2)
    phi = np.degrees(np.arctan2(matrices[:, 1, 0], matrices[:, 0, 0]))
    common = float(np.degrees(np.angle(np.exp(1j * np.radians(phi)).mean())))
    misfit = np.abs(matrices - _rotation(common)[None]).max()
    if misfit > MATRIX_TOLERANCE:
        raise InputError(
            f"[align] file {path}: its transforms scale, skew or turn the images differently per tilt (off one "
            f"rotation by up to {misfit:.3g}); tomosweep takes shifts and one rotation: apply it with IMOD's newstack "
            'and read the aligned stack with [align] method = "none"'
        )
    _check_turn(path, -common, frame)
    shifts = -frame.to_layout(rows[:, 4:6])
    return shifts[order], [path, tlt_path]


def _hspy_tomography(path: Path) -> dict[str, Any]:
    """ETSpy's ``metadata.Tomography`` of the (only) signal carrying one, read with h5py."""
    import h5py

    from tomosweep.series.readers import check_hdf5_links

    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputError(f"[align] file {path}: not an HDF5 (.hspy) file") from None
    with f:
        check_hdf5_links(path, f)
        found = []
        experiments: Any = f.get("Experiments")
        for name in list(experiments) if isinstance(experiments, h5py.Group) else []:
            group = experiments[name]
            tomo = group.get("metadata/Tomography") if isinstance(group, h5py.Group) else None
            if isinstance(tomo, h5py.Group):
                found.append((name, group, tomo))
        if len(found) != 1:
            what = "no signal with" if not found else "more than one signal with"
            raise InputError(
                f"[align] file {path}: {what} ETSpy's metadata.Tomography (an ETSpy TomoStack saved as .hspy)"
            )
        _, group, tomo = found[0]
        try:
            return _tomography_values(group, tomo)
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:  # a file ETSpy did not write
            raise InputError(
                f"[align] file {path}: its metadata.Tomography is not as ETSpy writes it ({_first_line(exc)})"
            ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _tomography_values(group: Any, tomo: Any) -> dict[str, Any]:
    """What :func:`read_etspy` needs of ETSpy's ``metadata.Tomography`` and of the signal's axes."""

    def scalar(name: str, default: float) -> float:
        value = tomo.attrs.get(name, default)
        value = np.asarray(default if value is None else value)
        if value.size != 1 or value.dtype.kind not in "biuf":
            raise ValueError(f"{name} is not a number")
        number = float(value.reshape(()))
        if not math.isfinite(number):
            raise ValueError(f"{name} is {number}")
        return number

    def array(name: str) -> np.ndarray | None:
        # ETSpy ≥ 0.9 keeps shifts and tilts as signals (HyperSpy's _sig_ prefix), older ones as arrays
        node = tomo.get(f"_sig_{name}/data")
        node = tomo.get(name) if node is None else node
        if node is None or not hasattr(node, "shape"):
            return None
        if node.dtype.kind not in "biuf":
            raise ValueError(f"{name} are not numbers")
        return np.asarray(node, dtype=float)

    sizes = []
    for key in sorted(k for k in group if k.startswith("axis-")):
        attrs = group[key].attrs
        if not bool(np.asarray(attrs.get("navigate", False)).any()):
            sizes.append(int(np.asarray(attrs["size"]).reshape(())))
    return {
        "shifts": array("shifts"),
        "tilts": array("tilts"),
        "tiltaxis": scalar("tiltaxis", 0.0),
        "xshift": scalar("xshift", 0.0),
        "yshift": scalar("yshift", 0.0),
        "cropped": bool(scalar("cropped", 0.0)),
        "image_shape": tuple(sizes),
    }


def read_etspy(path: Path, angles: np.ndarray, frame: Frame) -> np.ndarray:
    """Shifts ``(n, 2)`` (det, x) in the series' angle order from an ETSpy ``.hspy`` (module docstring)."""
    tomo = _hspy_tomography(path)
    shifts_e = tomo["shifts"]
    if shifts_e is None or shifts_e.ndim != 2 or shifts_e.shape[1] != 2:
        raise InputError(f"[align] file {path}: metadata.Tomography holds no shifts of shape (tilts, 2)")
    if not np.all(np.isfinite(shifts_e)):
        raise InputError(f"[align] file {path}: metadata.Tomography holds shifts that are not numbers (NaN or inf)")
    tilts = tomo["tilts"]
    n_tilts = tilts.size if tilts is not None else angles.size
    if shifts_e.shape[0] != n_tilts:
        raise InputError(f"[align] file {path}: {shifts_e.shape[0]} shifts but {n_tilts} tilts")
    if tomo["cropped"] or tomo["image_shape"] != frame.raw_shape:
        raise InputError(
            f"[align] file {path}: its images are {' × '.join(map(str, tomo['image_shape']))} pixels, the series' "
            f"raw images {frame.raw_shape[0]} × {frame.raw_shape[1]}"
            + (" (ETSpy cropped them)" if tomo["cropped"] else "")
            + ": its shifts are in other pixels; give the series ETSpy aligned, unbinned and uncropped"
        )
    if frame.tilt_axis != "horizontal":
        raise InputError(
            f"[align] file {path}: ETSpy's tilt axis runs along the image columns, but the data file says "
            f'tilt_axis = "{frame.tilt_axis}"'
        )
    order = _match(path, tilts.ravel() if tilts is not None else angles, angles)
    _check_turn(path, -tomo["tiltaxis"], frame)
    rot = _rotation(tomo["tiltaxis"])
    rows_, cols_ = frame.raw_shape
    centre_etspy = np.array([cols_ / 2, rows_ / 2])
    centre_tomosweep = np.array([(cols_ - 1) / 2, (rows_ - 1) / 2])
    colrow = shifts_e[:, ::-1]  # ETSpy's (across = row, along = column) as (column, row)
    d = (
        colrow @ rot.T
        + np.array([tomo["xshift"], -tomo["yshift"]])
        + (rot - np.eye(2)) @ (centre_tomosweep - centre_etspy)
    )
    return (-frame.to_layout(d))[order]


def read_shifts_json(path: Path, angles: np.ndarray, frame: Frame) -> np.ndarray:
    """Shifts ``(n, 2)`` (det, x) in the series' angle order from a tomosweep ``shifts.json``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != SHIFTS_FORMAT:
            raise ValueError
        file_angles = np.asarray(record["angles"], dtype=float)
        shifts = np.stack([record["shift_det_px"], record["shift_x_px"]], axis=1).astype(float)
        binning, turn, shape = record["bin"], float(record["tilt_axis_angle"]), record["shape"]
        if not (isinstance(binning, int) and not isinstance(binning, bool) and binning >= 1):
            raise ValueError  # a whole number of pixels
        if not (isinstance(shape, list) and len(shape) == 2):
            raise ValueError
        shape = [int(v) for v in shape]
        if file_angles.ndim != 1 or shifts.ndim != 2 or min(shape) < 1 or not math.isfinite(turn):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OverflowError, RecursionError):
        raise InputError(f"[align] file {path}: not a tomosweep shifts.json (written by reconstruct-data)") from None
    if not (np.all(np.isfinite(shifts)) and np.all(np.isfinite(file_angles))):
        raise InputError(f"[align] file {path}: holds shifts or angles that are not numbers (NaN, inf or null)")
    if shifts.shape[0] != file_angles.size:
        raise InputError(f"[align] file {path}: {shifts.shape[0]} shifts but {file_angles.size} angles")
    order = _match(path, file_angles, angles)
    _check_turn(path, turn, frame)
    raw = frame.raw_shape if frame.tilt_axis == "horizontal" else frame.raw_shape[::-1]
    # in raw pixels both ways; binning drops up to bin − 1 rows and columns
    if any(abs(s * binning - r) >= max(binning, frame.binning) for s, r in zip(shape, raw, strict=True)):
        raise InputError(
            f"[align] file {path}: written for projections of {shape[0]} × {shape[1]} pixels at bin = {binning}, "
            f"the series' are {raw[0] // frame.binning} × {raw[1] // frame.binning} at bin = {frame.binning}: "
            "it aligns another series"
        )
    return (shifts * binning / frame.binning)[order]


#: alignment files by suffix: (reader, what)
ALIGNMENT_SUFFIXES = {".xf": "IMOD", ".hspy": "ETSpy", ".json": "tomosweep"}


def read_alignment(
    path: Path, angles: np.ndarray, frame: Frame, haadf: np.ndarray | None
) -> tuple[Alignment, list[Path]]:
    """The alignment a file gives the series (``[align] method = "file"``), checked against it.

    Parameters
    ----------
    path : Path
        ``.xf`` (IMOD, with its ``.tlt``), ``.hspy`` (ETSpy) or ``.json`` (tomosweep).
    angles : ndarray
        The series' tilts, sorted (the HAADF's, or the chemical maps' without HAADF).
    frame : Frame
        How the raw images became the series.
    haadf : ndarray, optional
        The HAADF series, for the centres of mass the alignment figure shows.

    Returns
    -------
    Alignment, list of Path
        The shifts (method ``"file"``) and every file read (to hash).
    """
    suffix = path.suffix.lower()
    if suffix not in ALIGNMENT_SUFFIXES:
        raise InputError(
            f"[align] file {path}: unknown alignment format {suffix!r}; give an IMOD .xf (with its .tlt), an ETSpy "
            ".hspy or a tomosweep shifts.json"
        )
    if not path.is_file():
        raise InputError(f"[align] file {path}: no such file")
    angles = np.asarray(angles, dtype=float)
    read: list[Path] = [path]
    if suffix == ".xf":
        shifts, read = read_imod_xf(path, angles, frame)
    elif suffix == ".hspy":
        shifts = read_etspy(path, angles, frame)
    else:
        shifts = read_shifts_json(path, angles, frame)
    limit = 0.5 * max(frame.raw_shape) / frame.binning
    if not np.all(np.isfinite(shifts)):
        raise InputError(f"[align] file {path}: gives shifts that are not numbers (NaN or inf)")
    if np.abs(shifts).max(initial=0.0) > limit:
        raise InputError(
            f"[align] file {path}: a shift of {np.abs(shifts).max():.0f} px moves a projection by more than half "
            "the image: its units are not the series' pixels (check bin)"
        )
    _, offset = without_translation(angles, shifts)
    com = _centre_of_mass_across(haadf) if haadf is not None else np.zeros(angles.size)
    alignment = Alignment(
        angles=angles,
        shifts=shifts,
        tilt_axis_offset=offset,
        method="file",
        com_before=com,
        com_after=com - shifts[:, 0],
    )
    return alignment, read


def write_shifts_json(path: str | os.PathLike[str], alignment: Alignment, frame: Frame, shape: Sequence[int]) -> Path:
    """The shifts as tomosweep reads them back (``[align] method = "file"``), with their pixels' meaning."""
    path = Path(path)
    record = {
        "format": SHIFTS_FORMAT,
        "written_by": "tomosweep",
        "convention": "raw_i(p) = aligned_i(p - s_i); s = (shift_det_px across the tilt axis, shift_x_px along it)",
        "units": "pixels of the series after bin, in the frame turned by tilt_axis_angle",
        "method": alignment.method,
        "angles": [float(a) for a in alignment.angles],
        "shift_det_px": [float(s) for s in alignment.shifts[:, 0]],
        "shift_x_px": [float(s) for s in alignment.shifts[:, 1]],
        "shape": [int(v) for v in shape],
        **frame.as_dict(),
    }
    if alignment.axis_turn is not None:  # tilt_axis_angle above is the turn "auto" found
        record["tilt_axis_turn"] = dict(alignment.axis_turn)
    path.write_text(json.dumps(record, indent=2))
    return path


def write_imod_xf(path: str | os.PathLike[str], alignment: Alignment, frame: Frame) -> list[Path]:
    """IMOD's ``.xf`` (and its ``.tlt``) that aligns the raw stack as tomosweep did (module docstring).

    One line per tilt, in the order of the angles of the ``.tlt`` written beside it;
    ``newstack -xform`` on the raw stack gives the series tomosweep reconstructed, before
    ``bin``, with the tilt axis in the raw images' direction.
    """
    path = Path(path)
    a = _rotation(-frame.tilt_axis_angle)
    d = -frame.to_raw(alignment.shifts)
    lines = [f"{a[0, 0]:12.7f}{a[0, 1]:12.7f}{a[1, 0]:12.7f}{a[1, 1]:12.7f}{dx:14.5f}{dy:14.5f}\n" for dx, dy in d]
    path.write_text("".join(lines))
    tlt = path.with_suffix(".tlt")
    tlt.write_text("".join(f"{float(angle):.3f}\n" for angle in alignment.angles))
    return [path, tlt]


def alignment_of(series: Any) -> Alignment | None:
    """The alignment ``[align]`` asks for a :class:`~tomosweep.series.MeasuredSeries` (None: leave it as it is).

    ``"file"``: the one read from ``[align] file`` when the series was loaded; ``"none"``, or a
    series without HAADF to measure shifts on: None; else :func:`~tomosweep.series.align_series`.
    A turn ``tilt_axis_angle = "auto"`` estimated goes with it (``Alignment.axis_turn``), so that it is
    reported beside the shifts.
    """
    from dataclasses import replace

    from tomosweep.series.align import align_series

    if series.align.method == "file":
        alignment = series.given_alignment
    elif series.align.method == "none" or series.haadf is None:
        return None
    else:
        alignment = align_series(
            series.haadf, series.haadf_angles, method=series.align.method, max_shift=series.align.max_shift
        )
    turn = getattr(series, "axis_turn", None)
    return alignment if alignment is None or turn is None else replace(alignment, axis_turn=turn)


def write_aligned_mrc(
    path: str | os.PathLike[str],
    stack: np.ndarray,
    angles: Sequence[float] | np.ndarray,
    pixel_size_nm: float | None,
    *,
    tlt: str | None = None,
) -> list[Path]:
    """A series in tomosweep's layout as MRC (float32; angles in its SerialEM header and a ``.tlt`` beside it).

    The tilt axis runs along the image columns (MRC x); the pixel size, when known, is the
    header's voxel size (Å, as MRC keeps it). ``tlt`` names the angle file (default: the MRC's
    name with ``.tlt``).
    """
    import mrcfile

    from tomosweep.series.readers import write_mrc

    path = Path(path)
    write_mrc(path, stack, [float(a) for a in angles])
    if pixel_size_nm:
        with mrcfile.open(path, mode="r+") as mrc:
            mrc.voxel_size = float(pixel_size_nm) * 10.0
    tlt_path = path.with_suffix(".tlt") if tlt is None else path.with_name(tlt)
    # more digits than IMOD's own three: reading the series back must give the same projector
    tlt_path.write_text("".join(f"{float(a):.6f}\n" for a in angles))
    return [path, tlt_path]
