"""SerialEM's ``.mdoc``: the angles, pixel size and tilt-axis angle written beside a stack.

SerialEM writes one ``.mdoc`` per stack (``stack.mrc.mdoc`` or ``stack.mdoc``), read here with
teamtomo's ``mdocfile``: one section per image (``[ZValue = k]``) with its ``TiltAngle`` and
``PixelSpacing`` (Ångström), and a title line ``Tilt axis angle = α`` — the angle of the tilt axis
from the image's Y axis, counter-clockwise, as IMOD shows the image (first row at the bottom).

Several images in a row at the same tilt are frames of one exposure (SerialEM's multi-frame
acquisition): :func:`sum_frames` adds them, so the counts stay Poisson.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomosweep.errors import InputError

log = logging.getLogger(__name__)

_AXIS_TITLE = re.compile(r"Tilt\s*axis\s*angle\s*=\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


@dataclass(frozen=True)
class Mdoc:
    """What a SerialEM ``.mdoc`` says about its stack.

    Attributes
    ----------
    path : Path
        The ``.mdoc`` file.
    angles : ndarray (n,)
        ``TiltAngle`` of each image, degrees, in the order of the stack (``ZValue``).
    pixel_size_nm : float or None
        ``PixelSpacing`` in nm (the file gives Ångström).
    tilt_axis_angle : float or None
        SerialEM's tilt-axis angle, degrees from the image's Y axis (module docstring).
    notes : tuple of str
        What was not taken from the file, and why (a ``PixelSpacing`` that is no pixel size).
    """

    path: Path
    angles: np.ndarray
    pixel_size_nm: float | None
    tilt_axis_angle: float | None
    notes: tuple[str, ...] = ()


def find_mdoc(stack: Path) -> Path | None:
    """The ``.mdoc`` SerialEM writes beside a stack (``a.mrc.mdoc``, else ``a.mdoc``), or None."""
    for candidate in (stack.with_name(stack.name + ".mdoc"), stack.with_suffix(".mdoc")):
        if candidate.is_file():
            return candidate
    return None


def read_mdoc(path: Path) -> Mdoc:
    """Read a SerialEM ``.mdoc`` (module docstring).

    Parameters
    ----------
    path : Path
        The ``.mdoc`` file.

    Returns
    -------
    Mdoc
        Its angles (in ``ZValue`` order), pixel size and tilt-axis angle.

    Raises
    ------
    InputError
        The file cannot be read as an ``.mdoc``, describes a montage or frame set rather than
        one image per section, or a section has no ``TiltAngle``.
    """
    import mdocfile

    # mdocfile logs every key it does not model (SerialEM adds keys with its versions) as a warning;
    # it keeps them, so they belong in the log, not on the terminal
    quiet = logging.getLogger("mdocfile")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        table = mdocfile.read(path)
    except OSError:
        raise InputError(f"{path}: cannot be read") from None
    except Exception as exc:  # a foreign or damaged file: which and what kind, never its content
        log.debug("reading %s failed", path, exc_info=True)
        raise InputError(f"{path}: cannot be read as a SerialEM .mdoc ({type(exc).__name__})") from None
    finally:
        quiet.setLevel(level)
    if "ZValue" not in table.columns or bool(table["ZValue"].isna().any()):
        raise InputError(f"{path}: has no [ZValue = …] sections (a montage or frame-set .mdoc); name a tilt stack's")
    if "TiltAngle" not in table.columns or bool(table["TiltAngle"].isna().any()):
        raise InputError(f"{path}: a section has no TiltAngle; give the angles another way (angles = […])")
    z = np.asarray(table["ZValue"], dtype=float)
    if not np.array_equal(np.sort(z), np.arange(z.size)):
        raise InputError(
            f"{path}: its sections are numbered [ZValue = {', '.join(f'{v:g}' for v in z[:6])}"
            f"{' …' if z.size > 6 else ''}], not 0 … {z.size - 1} once each; name the .mdoc written with the stack"
        )
    table = table.sort_values("ZValue")
    angles = np.asarray(table["TiltAngle"], dtype=float)
    if not np.all(np.isfinite(angles)):
        raise InputError(f"{path}: a TiltAngle is not a number")
    spacing = None
    notes: list[str] = []
    if "PixelSpacing" in table.columns and not bool(table["PixelSpacing"].isna().all()):
        value = float(table["PixelSpacing"].dropna().iloc[0])
        spacing = value / 10.0 if math.isfinite(value) and value > 0 else None
        if spacing is None:
            notes.append(f"PixelSpacing = {value:g} in {path.name} is not a pixel size; it is not used")
    axis = None
    titles = table["titles"].iloc[0] if "titles" in table.columns else []
    for title in titles:
        match = _AXIS_TITLE.search(str(title))
        if match:
            axis = float(match.group(1))
            if not (math.isfinite(axis) and abs(axis) <= 360.0):
                raise InputError(f"{path}: 'Tilt axis angle = {match.group(1)}' is not an angle in degrees")
            break
    return Mdoc(path=path, angles=angles, pixel_size_nm=spacing, tilt_axis_angle=axis, notes=tuple(notes))


def layout_from_serialem(tilt_axis_angle: float) -> tuple[str, float]:
    """SerialEM's tilt-axis angle as a data file's ``tilt_axis`` and ``tilt_axis_angle``.

    SerialEM measures the axis from the image's Y axis, counter-clockwise with the first row at the
    bottom; tomosweep turns the images by ``tilt_axis_angle`` (counter-clockwise with the first row at
    the top, :func:`scipy.ndimage.rotate`) and then takes the axis along the columns (``"horizontal"``)
    or the rows (``"vertical"``). An axis within 45° of the rows is ``"horizontal"``.

    Parameters
    ----------
    tilt_axis_angle : float
        SerialEM's angle, degrees.

    Returns
    -------
    (str, float)
        ``tilt_axis`` and ``tilt_axis_angle`` (degrees, within ±45).

    Examples
    --------
    >>> layout_from_serialem(-90.0)
    ('horizontal', 0.0)
    >>> layout_from_serialem(85.3)
    ('horizontal', -4.7)
    """

    def wrapped(angle: float) -> float:
        return round((angle + 90.0) % 180.0 - 90.0, 6) + 0.0

    # in the array (rows down), SerialEM's axis runs along (row, col) = (cos α, −sin α), which is
    # (sin ψ, cos ψ) with ψ = α + 90°; turning by ψ puts it along the columns, by α along the rows
    along_columns = wrapped(tilt_axis_angle + 90.0)
    if abs(along_columns) <= 45.0:
        return "horizontal", along_columns
    return "vertical", wrapped(tilt_axis_angle)


def sum_frames(stack: np.ndarray, angles: np.ndarray, *, tol: float = 0.01) -> tuple[np.ndarray, np.ndarray, int]:
    """Sum runs of images at the same tilt (frames of one exposure) into one image per tilt.

    Parameters
    ----------
    stack : ndarray (n, rows, cols)
        The images in acquisition order.
    angles : ndarray (n,)
        Their tilts, degrees.
    tol : float
        Tilts closer than this (degrees) are the same.

    Returns
    -------
    (ndarray, ndarray, int)
        The summed stack, one angle per tilt, and the largest number of frames summed (1: none).
    """
    starts = np.flatnonzero(np.r_[True, np.abs(np.diff(angles)) > tol])
    if starts.size == angles.size:
        return stack, angles, 1
    ends = np.r_[starts[1:], angles.size]
    summed = np.stack([stack[a:b].sum(axis=0) for a, b in zip(starts, ends, strict=True)])
    return summed, angles[starts], int(np.max(ends - starts))
