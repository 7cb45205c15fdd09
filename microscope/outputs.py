"""``reconstruct-data`` into a folder safely: staged beside ``--out``, moved in at the end.

:func:`tomosweep.microscope.reconstruct.reconstruct_data` writes its files into the folder it
is given. :func:`reconstruct_data_into` gives it a fresh staging folder beside the
target (see :mod:`tomosweep.results.folders`): the target is checked before any work
(a file, foreign files, an earlier output without ``--overwrite``, a read-only or full
disk), and receives the new files only once every one is written — an interruption,
an error or a full disk leave it as it was.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from tomosweep.microscope.reconstruct import reconstruct_data
from tomosweep.results.folders import StagedOutput, check_out_folder, check_space


def reconstruct_data_into(
    data: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = False, **options: Any
) -> Any:
    """:func:`~tomosweep.microscope.reconstruct.reconstruct_data` with its output staged (module docstring).

    Returns its summary with ``out`` the target folder.
    """
    target = check_out_folder(out, overwrite=overwrite)
    check_space(target)
    with StagedOutput(target, command="reconstruct-data", replace_all=True) as staged:
        summary = reconstruct_data(data, staged.stage, overwrite=False, **options)
        staged.commit()
    return dataclasses.replace(summary, out=Path(target))
