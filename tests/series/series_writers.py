"""Small files in the formats microscopes write, for the reader tests (no vendor software needed).

``write_dm3`` writes a minimal Gatan DigitalMicrograph 3 file by the format's published layout
(a big-endian tag tree, little-endian data: one ImageList entry with ImageData.Data, DataType,
Dimensions and Calibrations), which RosettaSciIO reads as DigitalMicrograph writes it.
"""

from __future__ import annotations

import struct

import numpy as np


def _label(name: str) -> bytes:
    raw = name.encode("latin-1")
    return struct.pack(">H", len(raw)) + raw


def _data(name: str, info: list[int], payload: bytes) -> bytes:
    return b"\x15" + _label(name) + b"%%%%" + struct.pack(f">i{len(info)}i", len(info), *info) + payload


def _long(name: str, value: int) -> bytes:
    return _data(name, [3], struct.pack("<i", value))


def _float(name: str, value: float) -> bytes:
    return _data(name, [6], struct.pack("<f", value))


def _text(name: str, text: str) -> bytes:
    codes = [ord(c) for c in text]
    return _data(name, [20, 4, len(codes)], struct.pack(f"<{len(codes)}H", *codes))


def _group(name: str, tags: list[bytes]) -> bytes:
    return b"\x14" + _label(name) + b"\x00\x00" + struct.pack(">i", len(tags)) + b"".join(tags)


def write_dm3(path, stack: np.ndarray, *, first_angle: float | None = None, step: float | None = None) -> None:
    """A float32 image stack ``(n, rows, cols)``; its third axis calibrated in degrees when ``step`` is given."""
    stack = np.asarray(stack, dtype="<f4")
    n, rows, cols = stack.shape
    dims = [(0.0, 1.0, "nm"), (0.0, 1.0, "nm")]
    # DM keeps an origin in pixels: value = (index - origin) * scale
    dims.append((-first_angle / step, step, "deg") if step is not None else (0.0, 1.0, ""))
    calibrations = _group(
        "Calibrations",
        [
            _group("Brightness", [_float("Origin", 0.0), _float("Scale", 1.0), _text("Units", "")]),
            _group(
                "Dimension",
                [_group("", [_float("Origin", o), _float("Scale", s), _text("Units", u)]) for o, s, u in dims],
            ),
        ],
    )
    image_data = _group(
        "ImageData",
        [
            calibrations,
            _data("Data", [20, 6, stack.size], stack.tobytes()),
            _long("DataType", 2),
            _group("Dimensions", [_long("", cols), _long("", rows), _long("", n)]),
        ],
    )
    image = _group("", [image_data, _group("ImageTags", []), _text("Name", "HAADF")])
    body = b"\x01\x00" + struct.pack(">i", 1) + _group("ImageList", [image]) + b"\x00" * 8
    with open(path, "wb") as f:
        f.write(struct.pack(">iIi", 3, len(body) + 4, 1) + body)


def signal(data: np.ndarray, axes: list[dict], metadata: dict | None = None) -> dict:
    """A RosettaSciIO signal dictionary, as HyperSpy hands one to a writer."""
    return {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": "series"}, "Signal": {}, **(metadata or {})},
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "package_info": {"name": "tomosweep", "version": "test"},
        "learning_results": {},
        "models": {},
    }


def image_axes(n: int, rows: int, cols: int, *, tilt_units: str = "", first: float = 0.0, step: float = 1.0):
    return [
        {"name": "tilt", "units": tilt_units, "scale": step, "offset": first, "size": n, "navigate": True},
        {"name": "y", "units": "nm", "scale": 1.0, "offset": 0.0, "size": rows, "navigate": False},
        {"name": "x", "units": "nm", "scale": 1.0, "offset": 0.0, "size": cols, "navigate": False},
    ]


def write_old_fei_mrc(path, stack: np.ndarray, angles) -> None:
    """An MRC with the old-style FEI extended header: no type tag, nint = nreal = 0, 1024 records of
    128 bytes (32 float32, the alpha tilt first), as FEI's Xplore3D wrote tilt series."""
    import mrcfile

    stack = np.asarray(stack, dtype=np.float32)
    records = np.zeros((1024, 32), dtype="<f4")
    records[: len(angles), 0] = angles
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(stack)
        mrc.set_extended_header(np.frombuffer(records.tobytes(), dtype="V1"))
        mrc.header.exttyp = b"\x00\x00\x00\x00"


def write_mdoc(path, angles, *, axis: float = -90.0, spacing: float = 7.88, size: tuple[int, int] = (16, 12)) -> None:
    """A SerialEM ``.mdoc``: one section per tilt, the tilt axis angle in its title line, as SerialEM writes it."""
    sections = "".join(
        f"[ZValue = {z}]\nTiltAngle = {a}\nPixelSpacing = {spacing}\nMinMaxMean = 0 1 0.5\n\n"
        for z, a in enumerate(angles)
    )
    path.write_text(
        f"PixelSpacing = {spacing}\nVoltage = 300\nImageSize = {size[0]} {size[1]}\nDataMode = 1\n\n"
        "[T = SerialEM: a test microscope   01-Jan-24  10:00:00    ]\n\n"
        f"[T =     Tilt axis angle = {axis}, binning = 1  spot = 7  camera = 0]\n\n{sections}"
    )
