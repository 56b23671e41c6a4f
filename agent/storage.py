"""What a failed buffer write means (full, I/O error, read-only, or corrupt), and the disk reserve."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

# SQLite primary result codes (the low byte of an extended code)
_SQLITE_WRITE_FAULTS = {
    8: "the filesystem is read-only",   # SQLITE_READONLY
    10: "I/O error",                    # SQLITE_IOERR
    13: "the disk is full",             # SQLITE_FULL
    14: "cannot open the file",         # SQLITE_CANTOPEN
}
_SQLITE_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_OS_WRITE_FAULTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EIO: "I/O error",
    errno.EROFS: "the filesystem is read-only",
}


MARGIN = 1024 * 1024
"""Free space the reserve leaves beside it when it is made (room for the write-ahead log)."""


class StorageUnavailable(Exception):
    """The buffer cannot be written now; nothing is wrong with its contents. Retry later."""


class StorageCorrupt(Exception):
    """The buffer file's integrity is broken: it must be moved aside."""


def classify(err: BaseException) -> Exception | None:
    """``StorageUnavailable`` or ``StorageCorrupt`` for ``err``, or None for anything else."""
    if isinstance(err, sqlite3.Error):
        code = (getattr(err, "sqlite_errorcode", None) or 0) & 0xFF
        if code in _SQLITE_CORRUPT:
            return StorageCorrupt(f"{type(err).__name__}: {err}")
        if code in _SQLITE_WRITE_FAULTS:
            return StorageUnavailable(f"{_SQLITE_WRITE_FAULTS[code]} ({err})")
        text = str(err).lower()
        if "malformed" in text or "not a database" in text:
            return StorageCorrupt(f"{type(err).__name__}: {err}")
        return None
    if isinstance(err, OSError) and err.errno in _OS_WRITE_FAULTS:
        return StorageUnavailable(f"{_OS_WRITE_FAULTS[err.errno]} ({err.strerror})")
    return None


class Reserve:
    """A file of ``size`` bytes kept beside the buffer and given back when the disk is full.

    Deleting published events is what frees space, and a delete needs room in the write-ahead
    log (and a checkpoint room in the database): the reserve is that room. It is released for
    deletes only; new events are committed only while it is in place or the database has as
    much in free pages to reuse, so a full disk always leaves the room to recover.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    @property
    def held(self) -> bool:
        return os.path.exists(self.path)

    def make(self) -> bool:
        """True when the reserve is in place (made now if there is room) or turned off."""
        if self.size <= 0 or self.held:
            return True
        try:
            st = os.statvfs(self.path.parent)
            if st.f_bavail * st.f_frsize < self.size + MARGIN:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o640)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                self.path.unlink()
            log.debug("buffer: cannot make the %d-byte disk reserve: %s", self.size, err)
            return False
        log.info("buffer: %d bytes of disk kept in reserve (%s)", self.size, self.path)
        return True

    def release(self) -> bool:
        """Give the reserve's space back; True if there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
