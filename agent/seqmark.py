"""Seqs handed out, kept outside the database: a fsynced reservation and an exact high-water mark.

The database holds the seqs it still has; these files hold the seqs that were ever committed,
so that a damaged, rolled-back or lost database never makes the agent hand out a seq twice, and
every seq that can no longer be delivered can be announced.

- ``buffer.db.seq``: a block of seqs reserved ahead (fsynced, replaced atomically, rarely).
- ``buffer.db.mark``: the highest committed seq, overwritten in place after every commit
  without fsync (a kill -9 keeps it: the page cache survives; a power cut may not, and then
  the reservation bounds it), plus whether the last run stopped cleanly and in which boot.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from agent.files import write_atomic

RESERVE_BLOCK = 10_000
"""Seqs are reserved in blocks, so the fsynced file is written once per this many commits."""
_SEQ_WIDTH = 20
_LINE = "{seq:0" + str(_SEQ_WIDTH) + "d} {state:<5} {boot:<36}\n"


def boot_id() -> str:
    """This boot of the machine (the kernel's random boot id), or "" where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class LastRun:
    """What the mark file says about the previous run."""

    seq: int
    """The highest seq it committed (possibly stale after a power cut)."""
    clean: bool
    boot: str
    reserved: int
    """Every seq it may have handed out is at most this."""


class SeqLedger:
    """The two side files of one buffer: ``reserve()`` before a commit, ``mark()`` after."""

    def __init__(self, db_path: Path) -> None:
        self._reserve_path = db_path.with_name(db_path.name + ".seq")
        self._mark_path = db_path.with_name(db_path.name + ".mark")
        self._fd: int | None = None
        self.reserved = 0

    def last_run(self) -> LastRun | None:
        """The previous run's mark, or None when there is none (a new or pre-mark buffer)."""
        self.reserved = self._read_reserve()
        try:
            seq, state, boot = self._mark_path.read_text().split()
            return LastRun(int(seq), state == "clean", boot, self.reserved)
        except (OSError, ValueError):
            return None

    def start(self, seq: int, boot: str) -> None:
        """Record (fsynced) that a run starts at ``seq`` in ``boot`` and keep the file open.

        Raises:
            OSError: the file cannot be written (a full disk, a read-only filesystem).
        """
        self.close()
        write_atomic(self._mark_path, _LINE.format(seq=seq, state="run", boot=boot).encode(),
                     sync_dir=True)
        self._fd = os.open(self._mark_path, os.O_WRONLY)

    def reserve(self, upto: int) -> None:
        """Make sure every seq up to ``upto`` is reserved (fsynced) before it is committed.

        Raises:
            OSError: the reservation cannot be written.
        """
        if upto <= self.reserved:
            return
        reserved = upto + RESERVE_BLOCK
        write_atomic(self._reserve_path, str(reserved).encode(), sync_dir=True)
        self.reserved = reserved

    def mark(self, seq: int) -> None:
        """``seq`` is committed: overwrite the mark in place (no fsync, no new block)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, f"{seq:0{_SEQ_WIDTH}d}".encode(), 0)

    def stop(self, seq: int, boot: str) -> None:
        """A clean stop at ``seq`` (fsynced)."""
        self.close()
        with contextlib.suppress(OSError):
            write_atomic(self._mark_path,
                         _LINE.format(seq=seq, state="clean", boot=boot).encode(), sync_dir=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _read_reserve(self) -> int:
        try:
            return int(self._reserve_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
