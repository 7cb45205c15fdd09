"""What a ``[cluster]`` string may be, for the place it lands in a batch job script.

dask-jobqueue writes ``queue``, ``account``, ``walltime`` and ``log_directory`` into the
script's directive lines (``#SBATCH -p <queue>``) and ``python``, ``interface`` and the
certificate paths into the worker's command line, all unquoted and joined with spaces.
The values may come from a store someone else sent: a newline in any of them starts a
command of its own, and ``$(…)`` or a backtick on the command line runs. So every string
is checked for its role when a study (or a stored one) is read, and the one value that
may hold any path character, ``python``, is shell-quoted where it lands
(:func:`tomosweep.cluster.jobqueue.resolve`). The checks are the schedulers' own
grammars, not a blacklist: a value they would accept passes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# C0 and C1 controls, DEL and the Unicode line and paragraph separators: each ends a line for
# some reader of the script (the shell, the scheduler's directive parser, an editor)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.@+-]*"
QUEUE = re.compile(rf"{_NAME}(,{_NAME})*")  # SLURM takes several partitions, comma-separated
ACCOUNT = re.compile(_NAME)
# Linux interface names: at most 15 characters, no slash, no space (IFNAMSIZ); ":" for aliases
INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}")
# a path the shell and the schedulers' directive parsers read as one word, unquoted
SAFE_PATH = re.compile(r"[\w./~+,@%:=-]+")
# a shared_temp_directory may name environment variables ($SCRATCH, ${WORK}), expanded here
_VARIABLE_PATH = re.compile(r"([\w./~+,@%:=-]|\$[A-Za-z_]\w*|\$\{[A-Za-z_]\w*\})+")
MEMORY = re.compile(r"\d+(\.\d+)?\s?([KMGTPE]i?)?B?", re.IGNORECASE)

_SEXAGESIMAL = r"\d+(:\d{1,2}){0,2}"
#: each scheduler's walltime grammar and an example of it
WALLTIME: dict[str, tuple[re.Pattern[str], str]] = {
    # sbatch -t: minutes, min:sec, h:min:sec, days-h, days-h:min, days-h:min:sec, or no limit
    "slurm": (re.compile(rf"{_SEXAGESIMAL}|\d+-\d{{1,2}}(:\d{{1,2}}){{0,2}}|UNLIMITED|INFINITE"), '"1-12:00:00"'),
    # qsub -l walltime=[[hours:]minutes:]seconds[.milliseconds]
    "pbs": (re.compile(rf"{_SEXAGESIMAL}(\.\d+)?"), '"02:00:00"'),
    # bsub -W [hour:]minute[/host_name | /host_model]
    "lsf": (re.compile(r"\d+(:\d{1,2})?(/[A-Za-z0-9_.-]+)?"), '"02:00"'),
    # qsub -l h_rt=[[hours:]minutes:]seconds
    "sge": (re.compile(_SEXAGESIMAL), '"02:00:00"'),
}
# a batch backend registered later (a plugin's) whose grammar is not known here
_ANY_WALLTIME = (re.compile(r"[A-Za-z0-9_.:/-]+"), '"02:00:00"')


def control_problem(value: str) -> str | None:
    """Why ``value`` cannot go into a job script as one line (None: it can)."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    what = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}.get(found.group(), "a control character")
    return f"holds {what} ({found.group()!r} at position {found.start()}): each value must be one line"


def walltime_problem(backend: str, value: str) -> str | None:
    """Why ``value`` is not a walltime ``backend``'s scheduler reads (None: it is)."""
    pattern, example = WALLTIME.get(backend, _ANY_WALLTIME)
    if pattern.fullmatch(value):
        return None
    return f"{value!r} is not a {backend} walltime: write it as the scheduler does, e.g. walltime = {example}"


def path_problem(value: str, *, variables: bool = False) -> str | None:
    """Why a path cannot be written unquoted into a job script (None: it can).

    ``variables``: ``$NAME`` and ``${NAME}`` are allowed (expanded before use)."""
    if (_VARIABLE_PATH if variables else SAFE_PATH).fullmatch(value):
        return None
    bad = sorted({c for c in value if not SAFE_PATH.fullmatch(c)} - ({"$", "{", "}"} if variables else set()))
    shown = " ".join("a space" if c == " " else repr(c) for c in bad) or "a '$' that names no variable"
    return (
        f"{value!r} has {shown}, which dask-jobqueue would write into the job script unquoted: choose a path of "
        "letters, digits and . _ - / ~ + , @ % : = (a symbolic link without them to the folder works)"
    )


def python_problem(value: str, *, here: bool = True) -> str | None:
    """Why ``value`` cannot be the workers' Python (None: it can).

    The compute nodes run the same path, so it must exist on this host, as it does on a
    shared file system; a command name or ``python3; touch X`` is not a path. ``here=False``
    checks only that it is an absolute path (a stored study read on another host)."""
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        return (
            f"python = {value!r} is not an absolute path: give the path of the workers' interpreter, "
            'e.g. python = "/home/me/venvs/tomosweep/bin/python"'
        )
    if here and not (path.is_file() and os.access(path, os.X_OK)):
        return (
            f"python = {value!r} is not an executable file on this host: give the path of the workers' "
            "interpreter on the shared file system (`which python` inside the environment the jobs activate)"
        )
    return None
