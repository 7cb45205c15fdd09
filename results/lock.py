"""One writer per store: an exclusive ``flock`` on the store directory, held by the driver.

The driver holds the lock for its lifetime (the kernel releases it when the driver dies, however
it dies), so no file inside the store, ``.tomosweep.lock`` included, is the lock: removing it lets
nobody in. ``.tomosweep.lock`` only says who holds the lock; it is never followed through a
symbolic link. A file system without file locks (some NFS) is refused unless the user vouches for
one writer (``TOMOSWEEP_UNLOCKED_STORE=1``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from tomosweep.errors import StoreError, StoreLockedError
from tomosweep.nofollow import SymlinkRefusedError, open_no_follow

log = logging.getLogger(__name__)

LOCK_NAME = ".tomosweep.lock"
# opt-in for a file system without file locks (some NFS): the user vouches for one writer
UNLOCKED_ENV = "TOMOSWEEP_UNLOCKED_STORE"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF, errno.EINVAL}


def _hostname() -> str:
    return socket.gethostname()


class StoreLock:
    """The one-writer guard: an exclusive ``flock`` on the store directory's own file descriptor.

    Held for the driver's lifetime and released by the kernel when the process ends, however
    it ends: a dead driver's lock is never stale. No file inside the store is the lock, so
    removing ``.tomosweep.lock`` lets no second driver in; that file only names the holder.
    The note file is locked as well, so a driver of an earlier tomosweep (which locked only
    that file) is kept out too.
    """

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = store / LOCK_NAME
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Take the lock and write who holds it; a ``StoreLockedError`` names the holder when another does."""
        try:
            dir_fd = os.open(self.store, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(f"store {self.store} cannot be opened ({exc.strerror})") from None
        self._fds.append(dir_fd)
        try:
            self._flock(dir_fd)
            try:
                note_fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise StoreError(
                    f"store {self.store} cannot be written ({exc.strerror}): resuming needs write access; "
                    "`tomosweep status` and `export` only read it"
                ) from None
            self._fds.append(note_fd)
            self._flock(note_fd)
            os.ftruncate(note_fd, 0)
            note = {"pid": os.getpid(), "host": _hostname(), "since": dt.datetime.now().isoformat(timespec="seconds")}
            os.write(note_fd, json.dumps(note).encode())
        except BaseException:
            self.release()
            raise

    def _flock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(
                f"store {self.store} is being written by another driver ({self._holder()}). "
                "Only one driver may write a store: wait for it to finish, stop it, or use "
                "`tomosweep status` to watch it. Reading (status, export) works meanwhile."
            ) from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise StoreError(f"cannot lock the store {self.store} ({exc.strerror})") from None
            if os.environ.get(UNLOCKED_ENV) == "1":
                log.warning("%s: the file system has no file locks; writing unlocked (%s=1)", self.store, UNLOCKED_ENV)
                return
            raise StoreError(
                f"the file system of {self.store} has no file locks ({exc.strerror}), so tomosweep cannot keep a "
                f"second driver out. Move the store to a local disk, or, if you are sure no other driver writes it, "
                f"set {UNLOCKED_ENV}=1"
            ) from None

    def _holder(self) -> str:
        try:
            fd = open_no_follow(self.path, os.O_RDONLY)
        except (OSError, SymlinkRefusedError):
            return "holder unknown"
        try:
            note = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {int(note['pid'])} on {str(note['host'])[:64]}, since {str(note['since'])[:32]}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"
        finally:
            os.close(fd)

    def release(self) -> None:
        """Let the lock go (the kernel does too when the process ends)."""
        while self._fds:
            fd = self._fds.pop()
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
