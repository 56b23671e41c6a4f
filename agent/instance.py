"""One agent per data directory: an exclusive lock on ``<data_dir>/agent.lock``, holding the PID.

Two agents on one ``data_dir`` would share the buffer and fight over the broker's client id.
The lock is ``flock``: the kernel releases it when the holder exits, however it exits
(``kill -9``, a power cut), so a stale file never blocks a start. The file keeps the holder's
PID and what it runs, so the one refused can say who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

from agent.errors import InstanceLocked

__all__ = ["LOCK_NAME", "InstanceLock"]

log = logging.getLogger(__name__)

LOCK_NAME = "agent.lock"


class InstanceLock:
    """The lock of one data directory; ``acquire()`` before the buffer is opened."""

    def __init__(self, data_dir: Path, *, role: str = "agent run") -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self.role = role
        """What the holder runs, written beside its PID: ``agent run`` or ``agent selftest``."""
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating the directory and the file) and write our PID into it.

        Raises:
            InstanceLocked: another process holds it; names the data_dir and its PID.
            OSError: the directory or the file cannot be created or opened.
        """
        if self._fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as err:
            if err.errno != errno.EROFS:
                raise
            # A read-only filesystem is a storage fault the agent runs through (the buffer
            # holds events in memory); a lock needs no write access.
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise InstanceLocked(self.data_dir, *holder) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{self.role}\n".encode(), 0)
        except OSError as err:  # a full disk: the lock holds, only who holds it goes unsaid
            log.warning("data_dir %s locked, but the PID could not be written into %s: %s",
                        self.data_dir, self.path, err.strerror)

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with the next holder)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd: int) -> tuple[int | None, str]:
    """(PID, role) written by the holder; ``None`` when it has not written them yet."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace")
    except OSError:
        return None, ""
    first, _, rest = text.partition("\n")
    pid = int(first) if first.strip().isdigit() else None
    return pid, rest.strip()
