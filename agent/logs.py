"""Logging set-up: journald-friendly lines with device context, and a limit on repeated errors."""

from __future__ import annotations

import logging
import os
import sys
import time

REPEAT_WINDOW = 60.0
REPEAT_LIMIT = 5
"""The same message from the same place is logged at most this often per window."""


class ContextFormatter(logging.Formatter):
    """Adds ``device=`` and ``driver=`` to lines that carry them; no timestamp under journald."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{k}={getattr(record, k)}" for k in ("device", "driver") if hasattr(record, k)]
        return f"{line} [{' '.join(context)}]" if context else line


class RepeatFilter(logging.Filter):
    """Stops a flapping port from filling the SD card: repeats past the limit are counted."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.lineno, str(getattr(record, "device", "")))
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start > REPEAT_WINDOW:
            if count > REPEAT_LIMIT:
                record.msg = f"{record.msg} (and {count - REPEAT_LIMIT} similar in the last minute)"
            start, count = now, 0
        self._seen[key] = (start, count + 1)
        if len(self._seen) > 1000:
            self._seen.clear()
        return count < REPEAT_LIMIT


def setup(level: str = "info") -> None:
    """Configure the root logger once (``agent run`` and the other commands)."""
    journald = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ContextFormatter(fmt))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)  # some libraries call basicConfig on import (onvif-zeep-async)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("zeep", "httpx", "pymodbus", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
