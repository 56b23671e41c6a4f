"""Durable file writes: write, fsync, rename, so a power cut leaves the old file or the new one."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes, *, sync_dir: bool = False) -> None:
    """Replace ``path`` with ``data`` through a fsynced temporary file beside it.

    ``sync_dir`` also fsyncs the directory, so that the rename itself survives a power cut.

    Raises:
        OSError: the directory is missing or not writable, or the disk refused the write.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as fh:
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
