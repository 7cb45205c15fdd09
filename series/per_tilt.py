"""A tilt series written one file per tilt, read in angle order with each file's own tilt.

Microscopes that record a series image by image (Gatan's DigitalMicrograph, SerialEM's
multi-frame acquisitions) leave one file per tilt, the stage tilt in that file's metadata: a DM
file's ``Microscope Info › Stage Position › Stage Alpha`` tag (or HyperSpy's ``tilt_alpha``), a
SerialEM stack's ``.mdoc`` beside it (its frames, all at one tilt, summed) or its extended header.
A data file names them with a glob (``file = "BF_*.dm3"``) or a list; angles given as a list in the
data file follow the files' order (a glob's sorted names), ``"header"`` (the default) takes each
file's own tilt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomosweep.errors import InputError
from tomosweep.series.readers import read_stack
from tomosweep.series.serialem import Mdoc, find_mdoc, read_mdoc, sum_frames

_GLOB = set("*?[")


def is_pattern(name: str) -> bool:
    """Whether a file name in a data file is a glob pattern (``*``, ``?``, ``[``)."""
    return bool(_GLOB & set(name))


def unusable(kind: str, name: str, exc: BaseException) -> InputError:
    """One line for a path or pattern the system refuses (a NUL character, a loop of symbolic links)."""
    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"the {kind} {name!r} cannot be used ({why})")


def expand(base: Path, names: str | list[str], resolve: Callable[[Path, str], Path]) -> list[Path]:
    """The files a glob or a list names, relative to ``base``: a glob's matches sorted by name.

    Raises
    ------
    InputError
        A glob matches no file, or a listed file does not exist.
    """
    if isinstance(names, list):
        if not names:
            raise InputError("an empty list of files; name one file per tilt (or a glob)")
        files = [resolve(base, name) for name in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputError(f"no such file: {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        return files
    pattern = Path(names).expanduser()
    root, relative = (
        (Path(pattern.anchor), str(pattern.relative_to(pattern.anchor)))
        if pattern.is_absolute()
        else (
            base,
            names,
        )
    )
    try:
        files = sorted(p.resolve() for p in root.glob(relative) if p.is_file())
    except (ValueError, RuntimeError, OSError) as exc:  # NUL in the pattern; a symbolic link loop
        raise unusable("pattern", names, exc) from None
    if not files:
        raise InputError(f"no file matches {names!r} in {root}")
    return files


@dataclass(frozen=True)
class PerTilt:
    """A series read from one file per tilt, sorted by angle.

    Attributes
    ----------
    stack : ndarray (n, rows, cols)
    angles : ndarray (n,)
        Degrees, ascending.
    files : list of Path
        The files in the order of ``stack``, with every ``.mdoc`` read.
    mdoc : Mdoc or None
        The first file's ``.mdoc``, where the files have them (pixel size, tilt-axis angle).
    frames : int
        The largest number of frames summed into one tilt (1: none).
    """

    stack: np.ndarray
    angles: np.ndarray
    files: list[Path]
    mdoc: Mdoc | None
    frames: int


def _one_tilt(path: Path, dataset: str | None, use_mdoc: bool) -> tuple[np.ndarray, float | None, Mdoc | None, int]:
    """One file's image (its frames summed), its tilt (None when it holds none) and its ``.mdoc``."""
    data, header = read_stack(path, dataset)
    mdoc_path = find_mdoc(path)
    if use_mdoc and mdoc_path is None:
        raise InputError(f'{path}: no .mdoc beside it ({path.name}.mdoc or {path.stem}.mdoc) for angles = "mdoc"')
    mdoc = read_mdoc(mdoc_path) if mdoc_path is not None else None
    angles = mdoc.angles if mdoc is not None else header
    if angles is None:
        return data.sum(axis=0), None, None, data.shape[0]
    if angles.size != data.shape[0]:
        where = mdoc.path if mdoc is not None else path
        raise InputError(f"{where}: {angles.size} tilt angles for the {data.shape[0]} images of {path.name}")
    summed, tilts, frames = sum_frames(data, angles)
    if tilts.size != 1:
        raise InputError(
            f"{path}: holds {tilts.size} tilts, not one; name a stack of several tilts as file = "
            f'"{path.name}" on its own'
        )
    return summed[0], float(tilts[0]), mdoc, frames


def read_per_tilt(
    files: list[Path], dataset: str | None, angles: list[float] | None, *, use_mdoc: bool = False
) -> PerTilt:
    """Read one image per file and sort them by angle (module docstring).

    Parameters
    ----------
    files : list of Path
        One file per tilt.
    dataset : str or None
        The dataset or signal title inside each file, as for a stack.
    angles : list of float or None
        One angle per file, in the order of ``files``; None: each file's own tilt.
    use_mdoc : bool
        Take each file's tilt from the ``.mdoc`` beside it (``angles = "mdoc"``); an ``.mdoc`` found
        beside a file is used in any case when ``angles`` is None.

    Returns
    -------
    PerTilt

    Raises
    ------
    InputError
        Files of different sizes, a file without a tilt (and no ``angles``), two files at the same
        tilt, or a count of ``angles`` that differs from the files'.
    """
    if angles is not None and len(angles) != len(files):
        raise InputError(f"{len(files)} files but {len(angles)} angles; give one angle per file, in the files' order")
    images, tilts, mdocs, frames = [], [], [], 1
    for path in files:
        image, tilt, mdoc, n = _one_tilt(path, dataset, use_mdoc and angles is None)
        images.append(image)
        tilts.append(tilt)
        mdocs.append(mdoc)
        frames = max(frames, n)
    sizes = {f.name: im.shape for f, im in zip(files, images, strict=True)}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{name} {s[0]}×{s[1]}" for name, s in list(sizes.items())[:6])
        raise InputError(f"the files of one series must have the same image size: {listing}")
    if angles is not None:
        tilts = [float(a) for a in angles]
    missing = [f.name for f, t in zip(files, tilts, strict=True) if t is None]
    if missing:
        raise InputError(
            f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}: no stage tilt in the file's metadata; "
            "give angles = [...] in the data file, one per file in the files' order"
        )
    values = np.asarray(tilts, dtype=float)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    same = np.flatnonzero(np.diff(sorted_values) < 0.005)
    if same.size:
        a, b = files[order[same[0]]].name, files[order[same[0] + 1]].name
        raise InputError(f"{a} and {b} are both at {sorted_values[same[0]]:g}°; every file needs its own tilt")
    first = next((m for m in mdocs if m is not None), None)
    return PerTilt(
        stack=np.stack([images[i] for i in order]),
        angles=sorted_values,
        files=[files[i] for i in order],
        mdoc=first,
        frames=frames,
    )
