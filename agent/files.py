"""Durable file writes: write, fsync, rename, so a power cut leaves the old file or the new one."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FILE_MODE", "restrict_modes", "write_atomic"]

FILE_MODE = 0o640
"""Files of the agent's state (buffer, reports, snapshots): owner and group, whatever the umask."""


def write_atomic(path: Path, data: bytes, *, sync_dir: bool = False, mode: int = FILE_MODE
                 ) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``, whatever the umask) through a fsynced
    temporary file beside it.

    ``sync_dir`` also fsyncs the directory, so that the rename itself survives a power cut.

    Raises:
        OSError: the directory is missing or not writable, or the disk refused the write.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, mode)  # the umask narrowed or widened nothing
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    if sync_dir:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def restrict_modes(database: Path) -> None:
    """Give an SQLite database (and its -wal and -shm files, which SQLite then creates with the
    database's mode) ``FILE_MODE``, whatever the umask it was created under.

    Raises:
        OSError: a file exists but its mode cannot be changed.
    """
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        try:
            path.chmod(FILE_MODE)
        except FileNotFoundError:
            continue
