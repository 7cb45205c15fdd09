"""CSV that a spreadsheet opens as text: no cell of a received store becomes a formula.

A store's strings (a method name, a stopped cell's reason, a trial's error, a worker's
name) may come from someone else. A CSV cell that starts with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return is run as a formula by Excel, LibreOffice and Google Sheets
(OWASP, "CSV Injection"); prefixing it with ``'`` keeps it text. Only strings are
prefixed: a negative number stays a number.
"""

from __future__ import annotations

import os
from typing import Any

#: what a spreadsheet reads as the start of a formula (OWASP's list)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value``, with a ``'`` before a string that a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_frame(frame: Any) -> Any:
    """A copy of the pandas table ``frame`` whose string cells and column names are :func:`safe_cell`."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) in ("string", "str"):
            out[column] = out[column].map(safe_cell)
    out.columns = [safe_cell(str(c)) for c in out.columns]
    return out


def csv_text(frame: Any) -> str:
    """``frame`` as CSV text (no index, ``\\n`` line ends), every string cell spreadsheet-safe."""
    return safe_frame(frame).to_csv(index=False, lineterminator="\n")


def write_csv(frame: Any, path: str | os.PathLike[str]) -> None:
    """Write ``frame`` to ``path`` as CSV (no index), every string cell spreadsheet-safe."""
    safe_frame(frame).to_csv(path, index=False)
