"""Files tomosweep writes beside or inside a store, never through a symbolic link.

A link planted at ``STORE.log`` or ``STORE/.tomosweep.lock`` would otherwise make the
driver write (or truncate) whatever it points to. ``O_NOFOLLOW`` refuses a link in the
last path component at the moment of opening, with no window between a check and the open.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import sys
from typing import Any

from tomosweep.errors import TomosweepError


class SymlinkRefusedError(TomosweepError):
    """A file tomosweep would write is a symbolic link."""


def open_no_follow(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """``os.open`` with ``O_NOFOLLOW``: a symbolic link at ``path`` is one clear error."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkRefusedError(
                f"{path} is a symbolic link; tomosweep never writes through one (it could point anywhere). "
                "Remove the link and try again"
            ) from None
        raise


class NoFollowFileHandler(logging.FileHandler):
    """A ``logging.FileHandler`` that appends to a plain file only: a symbolic link at its path is
    refused when the handler is made (one clear error) and again when the file is opened."""

    def __init__(self, filename: str | os.PathLike[str], **kwargs: Any) -> None:
        if os.path.islink(filename):
            open_no_follow(filename, os.O_WRONLY)  # raises the clear error
        super().__init__(filename, **kwargs)

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record, opening the file without following a link if it is not open yet.

        Parameters
        ----------
        record : logging.LogRecord
            The record to write; a refused open goes to :meth:`handleError`, not to the caller.
        """
        # FileHandler opens a delayed file outside its own error handling: a refused open would
        # raise into whatever logged the line (the driver loop)
        if self.stream is None:
            try:
                self.stream = self._open()
            except (OSError, TomosweepError):
                self.handleError(record)
                return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """A log line that cannot be written (a full or read-only disk, a link planted since) is one
        warning line on stderr, once, instead of logging's traceback per line; the study goes on."""
        if getattr(self, "_warned", False):
            return
        self._warned = True
        exc = sys.exc_info()[1]
        why = getattr(exc, "strerror", None) or str(exc)
        sys.stderr.write(f"warning: cannot write the log {self.baseFilename} ({why}); the study goes on without it\n")

    def _open(self) -> io.TextIOWrapper:
        fd = open_no_follow(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)  # noqa: SIM115 (the handler closes it)
