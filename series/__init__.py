"""Measured tilt series: read a data file, validate it, align it (the way back from the microscope)."""

from tomosweep.series.align import Alignment, align_series, apply_shifts
from tomosweep.series.files import (
    DataFile,
    MeasuredSeries,
    load_data_file,
    load_series,
    read_stack,
    tilt_axis_misfit,
    to_layout,
    write_mrc,
    write_rawtlt,
)

__all__ = [
    "Alignment",
    "DataFile",
    "MeasuredSeries",
    "align_series",
    "apply_shifts",
    "load_data_file",
    "load_series",
    "read_stack",
    "tilt_axis_misfit",
    "to_layout",
    "write_mrc",
    "write_rawtlt",
]
