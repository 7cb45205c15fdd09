"""Output folders that never lose what a user wrote: a manifest, a staging folder, checks first.

Every file a command writes into a user's folder (``export --out``, ``reconstruct-data
--out``, ``plan --figure``) is listed in that folder's manifest, ``.tomosweep-manifest.json``,
with the SHA-256 of its content. A file may be replaced (with ``--overwrite``) only when
the manifest lists it *and* its content is still the one tomosweep wrote: a file the user
wrote, copied in, or edited since is never replaced, whatever the flags.

Outputs are written into a staging folder beside the target (same file system, so the
final moves are renames) and moved into place only when every file is written: an
interrupted or failed command leaves the target as it was, never a partial folder that a
later run would refuse as foreign. Before any work, the target's parent must be writable
and hold a minimum of free space (:data:`MIN_FREE_BYTES`); a disk that fills during the
writes fails in the staging folder, which is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tomosweep.errors import InputError

log = logging.getLogger(__name__)

MANIFEST = ".tomosweep-manifest.json"
_FORMAT = "tomosweep-outputs"
#: the least free space a command needs before it starts writing (figures, tables, a small volume)
MIN_FREE_BYTES = 32 * 1024**2


class OutputError(InputError):
    """An output folder or file that a command must not write (or cannot)."""


def digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The files tomosweep wrote into ``folder`` (name → ``{"sha256", "command"}``); empty when none."""
    path = Path(folder) / MANIFEST
    if path.is_symlink() or not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s is unreadable: every file in %s counts as the user's", path, folder)
        return {}
    files = raw.get("files") if isinstance(raw, dict) and raw.get("format") == _FORMAT else None
    if not isinstance(files, dict):
        return {}
    return {str(k): v for k, v in files.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}


def _write_manifest(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    body = json.dumps({"format": _FORMAT, "version": 1, "files": files}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tomosweep-manifest.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    os.replace(tmp, folder / MANIFEST)


def is_ours(folder: str | os.PathLike[str], name: str, manifest: dict[str, dict[str, Any]] | None = None) -> bool:
    """True when ``folder/name`` is listed in the manifest and unchanged since tomosweep wrote it."""
    manifest = read_manifest(folder) if manifest is None else manifest
    entry = manifest.get(name)
    path = Path(folder) / name
    if entry is None or path.is_symlink() or not path.exists():
        return False
    return digest(path) == entry["sha256"]


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def check_space(folder: str | os.PathLike[str], *, need_bytes: int = MIN_FREE_BYTES, what: str = "--out") -> None:
    """Refuse, before any work, a target whose file system is read-only, not writable, or full.

    ``folder`` is the target folder; its nearest existing ancestor is tested (the folder
    may not exist yet). Write permission is tested by creating a file, not guessed from
    mode bits (a read-only mount, ACLs and root differ).
    """
    folder = Path(folder)
    probe_dir = folder
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputError(f"{what} {folder}: {probe_dir} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=".tomosweep-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot write in {probe_dir} ({_reason(exc)})") from None
    free = shutil.disk_usage(probe_dir).free
    if free < need_bytes:
        raise OutputError(
            f"{what} {folder}: only {free / 1024**2:.0f} MiB free on its disk, about "
            f"{need_bytes / 1024**2:.0f} MiB needed; free some space or choose another place"
        )


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EROFS,):
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    return exc.strerror or str(exc)


def check_replaceable(
    folder: str | os.PathLike[str],
    names: Iterable[str],
    *,
    overwrite: bool,
    what: str = "--out",
    error: type[Exception] = OutputError,
) -> None:
    """Refuse a folder where writing ``names`` would replace a file tomosweep did not write.

    Files of an earlier output (in the manifest, unchanged) are replaced only with
    ``overwrite``; any other existing file of those names is never replaced.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise error(f"{what} {folder} is a file; give a folder")
    if not folder.is_dir():
        return
    manifest = read_manifest(folder)
    existing = [n for n in names if (folder / n).exists() or (folder / n).is_symlink()]
    foreign = [n for n in existing if not is_ours(folder, n, manifest)]
    if foreign:
        raise error(
            f"{what} {folder} holds {_shown(foreign)}, not written by tomosweep (or changed since): "
            "never replaced, even with --overwrite; move them away or choose another folder"
        )
    if existing and not overwrite:
        raise error(
            f"{folder} already holds {_shown(existing)}; pass --overwrite to replace these {len(existing)} files "
            "(nothing else in the folder is touched), or choose another --out"
        )


def check_out_folder(out: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """A reconstruct-data output folder: new, empty, or (with ``overwrite``) an earlier output whose
    every file tomosweep wrote and nobody changed since (its manifest says so)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is a file; give a folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
        if not entries:
            return out
        manifest = read_manifest(out)
        foreign = [n for n in entries if not is_ours(out, n, manifest)]
        if foreign:
            raise OutputError(
                f"--out {out}: exists and holds files tomosweep did not write (or changed since): "
                f"{_shown(foreign)}; they are never replaced: choose an empty folder"
            )
        if not overwrite:
            raise OutputError(f"--out {out}: holds an earlier reconstruction; pass --overwrite to replace it")
    return out


class StagedOutput:
    """Write into a staging folder beside ``target``; :meth:`commit` moves every file into place.

    ``replace_all``: the target's earlier tomosweep files that this output does not
    rewrite are removed at commit (an earlier reconstruction is replaced as a whole);
    otherwise only the files written are replaced (an export). Files not in the manifest
    are never touched.
    """

    def __init__(self, target: str | os.PathLike[str], *, command: str, replace_all: bool = False) -> None:
        self.target = Path(target)
        self.command = command
        self.replace_all = replace_all
        # in the nearest folder that exists (same file system as the target: the moves are renames),
        # so a command that fails creates no folder at all
        parent = self.target.absolute().parent
        while not parent.is_dir() and parent.parent != parent:
            parent = parent.parent
        self.stage = Path(tempfile.mkdtemp(dir=parent, prefix=f".{self.target.name}.partial-"))

    def commit(self) -> list[Path]:
        """Move the staged files into the target (renames), update the manifest, drop the stage."""
        names = sorted(p.name for p in self.stage.iterdir())
        self.target.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(self.target)
        # checked again now: a file may have been put there while the work ran
        foreign = [n for n in names if (self.target / n).exists() and not is_ours(self.target, n, manifest)]
        if foreign:
            raise OutputError(
                f"{self.target} now holds {_shown(foreign)}, not written by tomosweep: not replaced; "
                f"the new files are left in {self.stage}"
            )
        fresh = {n: {"sha256": digest(self.stage / n), "command": self.command} for n in names}
        stale = [n for n in manifest if n not in fresh and self.replace_all]
        for name in names:
            dest = self.target / name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(self.stage / name, dest)
        for name in stale:
            path = self.target / name
            if is_ours(self.target, name, manifest):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        kept = {k: v for k, v in manifest.items() if k not in stale and (self.target / k).exists()}
        _write_manifest(self.target, {**kept, **fresh})
        self.discard()
        return [self.target / n for n in names]

    def discard(self) -> None:
        """Remove the staging folder and whatever is still in it (nothing after a commit)."""
        shutil.rmtree(self.stage, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()  # after a commit the stage is already gone; after a failure nothing is moved


@contextlib.contextmanager
def replace_file(path: str | os.PathLike[str], *, command: str) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; moved onto ``path`` and recorded in the
    folder's manifest when the block ends without error (a single output file, e.g. a figure).

    The caller checks :func:`check_replaceable` before the work.
    """
    path = Path(path)
    folder = path.absolute().parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.partial-", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        manifest = read_manifest(folder)
        if path.exists() and not is_ours(folder, path.name, manifest):
            raise OutputError(f"{path} appeared while the command ran and is not tomosweep's: not replaced")
        entry = {"sha256": digest(tmp), "command": command}
        os.replace(tmp, path)
        _write_manifest(folder, {**manifest, path.name: entry})
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
