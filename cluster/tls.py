"""The folder a study's certificates are written to, and the certificates a dead driver left there.

A batch study's private key sits on a file system the compute nodes share with other
users. Whoever can rename entries of the folder above it can swap in a certificate
folder of their own, and the scheduler would then admit their workers and clients. So
the base folder must be the user's own and writable by nobody else, unless it has the
sticky bit (as ``/tmp`` does: others may add entries, never move or remove the user's).
A symbolic link is followed and the folder it leads to is judged.

A driver killed with SIGKILL (or by the node going down) cannot remove its certificate
folder. Each folder carries a note of the driver that made it (host, process id and that
process's start time, so a reused id is not mistaken for it); the next study on the same
host, and ``tomosweep check``, remove the folders whose driver is gone. A folder made on
another host is left alone: whether its driver lives cannot be known from here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
from pathlib import Path

from tomosweep.errors import ClusterError

log = logging.getLogger(__name__)

#: a study's certificate folder is named ``tls-<random>`` under the base folder
PREFIX = "tls-"
#: which driver made a certificate folder (JSON: host, pid, started)
NOTE = "driver.json"


def default_base() -> Path:
    """Where certificate folders go when neither the study nor the Dask config names a folder."""
    return Path.home() / ".tomosweep" / "tls"


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def folder_problem(path: Path) -> str | None:
    """Why ``path`` may not hold a study's certificate folders (None: it may)."""
    try:
        link = os.lstat(path)
        target = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    via = f" (it is a symbolic link to {os.path.realpath(path)})" if stat.S_ISLNK(link.st_mode) else ""
    if not stat.S_ISDIR(target.st_mode):
        return f"is not a folder{via}"
    me = os.geteuid()
    if target.st_uid != me:
        return f"belongs to {_owner(target.st_uid)}, not to you{via}"
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (me, 0):
        return f"is a symbolic link made by {_owner(link.st_uid)}, who can point it elsewhere"
    writable = target.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not target.st_mode & stat.S_ISVTX:
        who = "everyone" if target.st_mode & stat.S_IWOTH else "its group"
        return f"is writable by {who} without the sticky bit (mode {stat.filemode(target.st_mode)}){via}"
    return None


def private_base(base: Path) -> Path:
    """Make ``base`` (0700) if it is missing and check it may hold certificates; returns it.

    Raises ``ClusterError`` naming what is wrong and how to fix it."""
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ClusterError(
            f"cannot make the TLS folder {base}: {exc.strerror}. Set [cluster] shared_temp_directory to a folder "
            "of yours on a file system the compute nodes see"
        ) from None
    problem = folder_problem(base)
    if problem:
        raise ClusterError(
            f"the TLS folder {base} {problem}, so someone else could swap the study's certificates: set [cluster] "
            "shared_temp_directory to a folder of your own that only you can write (mkdir -m 700)"
        )
    return base


def _process_start(pid: int) -> float | None:
    """When process ``pid`` of this host started (None: there is no such process)."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
        return None
    except psutil.AccessDenied:
        return -1.0  # alive, someone else's: not gone


def write_note(folder: Path) -> None:
    """Record in ``folder`` which driver made it (this process on this host)."""
    pid = os.getpid()
    note = {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid)}
    fd = os.open(folder / NOTE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(note, fh)


def _driver_gone(folder: Path) -> bool:
    """Whether the driver noted in ``folder`` ran on this host and is no longer running."""
    try:
        note = json.loads((folder / NOTE).read_text())
        host, pid, started = note["host"], int(note["pid"]), note.get("started")
    except (OSError, ValueError, TypeError, KeyError):
        return False  # no readable note: not provably ours nor provably dead
    if host != socket.gethostname():
        return False
    now = _process_start(pid)
    if now is None:
        return True
    # the id was reused by a process that started later than the driver did
    return now != -1.0 and isinstance(started, int | float) and abs(now - float(started)) > 1.0


def remove_leftovers(base: Path) -> list[Path]:
    """Remove the certificate folders under ``base`` whose driver, on this host, is gone; the removed.

    Only folders of the user's own, named as a study's are, are looked at, never through a
    symbolic link. A base that is missing or unreadable has none."""
    try:
        entries = list(os.scandir(base))
    except OSError:
        return []
    removed = []
    me = os.geteuid()
    for entry in entries:
        try:
            own = entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == me
        except OSError:
            continue
        folder = Path(entry.path)
        if own and entry.name.startswith(PREFIX) and _driver_gone(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                log.info("removed %s: certificates of a driver that is gone", folder)
                removed.append(folder)
    return removed
