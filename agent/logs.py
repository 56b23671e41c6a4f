"""Logging set-up: journald-friendly lines with device context, and a limit on repeated errors."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

REPEAT_WINDOW = 60.0
REPEAT_LIMIT = 5
"""The same warning or error from the same place (and device) is logged at most this often per
window; the next one after the window says how many were suppressed."""
MAX_KEYS = 1000

# syslog priorities: journald reads a "<N>" line prefix as the entry's priority (sd-daemon(3)),
# so `journalctl -p err` finds errors although the agent just writes to stderr.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def _priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return _PRIORITY[logging.DEBUG]


class ContextFormatter(logging.Formatter):
    """Adds ``[device=.. driver=..]`` to the first line of records that carry them.

    Under journald (``journald=True``) there is no timestamp (the journal has its own) and
    every line, including each line of a traceback, starts with its syslog priority.
    """

    def __init__(self, *, journald: bool = False) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(fmt if journald else "%(asctime)s " + fmt)
        self.journald = journald

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = [f"{k}={getattr(record, k)}" for k in ("device", "driver") if hasattr(record, k)]
        return f"{line} [{' '.join(context)}]" if context else line

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.journald:
            return text
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


class RepeatFilter(logging.Filter):
    """Stops a flapping port from filling the SD card: repeats past the limit are counted."""

    def __init__(self, *, window: float = REPEAT_WINDOW, limit: int = REPEAT_LIMIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.limit = limit
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()  # handlers filter before taking their own lock

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.lineno, str(getattr(record, "device", "")))
        now = self._clock()
        with self._lock:
            start, count = self._seen.get(key, (now, 0))
            if now - start > self.window:
                if count > self.limit:
                    record.msg = (f"{record.msg} ({count - self.limit} similar messages were "
                                  f"suppressed before this one)")
                start, count = now, 0
            if len(self._seen) >= MAX_KEYS and key not in self._seen:
                self._seen.clear()
            self._seen[key] = (start, count + 1)
        return count < self.limit


def under_journald(stream: TextIO) -> bool:
    """Whether ``stream`` is connected to the journal (``JOURNAL_STREAM`` names its device and
    inode, as systemd.exec(5) recommends checking)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return bool(value) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return False


def setup(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Configure the root logger once (``agent run`` and the other commands)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ContextFormatter(journald=under_journald(stream)))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)  # some libraries call basicConfig on import (onvif-zeep-async)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("zeep", "httpx", "pymodbus", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
