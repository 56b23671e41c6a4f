"""Whether the system clock is NTP-synchronised: a Pi has no RTC, so early events may be wrong."""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from pathlib import Path

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
_libc = None


def _adjtimex_synced() -> bool | None:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes=0: read only
        state = _libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)


def ntp_synchronized(flag: Path = TIMESYNCD_FLAG) -> bool:
    """True when systemd-timesyncd says so (its ``flag`` file exists), or when the kernel's
    adjtimex state is synchronised (any NTP client: chrony, ntpd, timesyncd)."""
    if flag.exists():
        return True
    return bool(_adjtimex_synced())


class ClockWatch:
    """Caches the sync state for a few seconds: ``emit()`` asks it for every event."""

    def __init__(self, *, refresh: float = 5.0, probe=ntp_synchronized) -> None:
        self._probe = probe
        self._refresh = refresh
        self._checked: float | None = None  # not 0.0: monotonic time starts near 0 at boot
        self._synced = False

    @property
    def synced(self) -> bool:
        now = time.monotonic()
        if self._checked is None or now - self._checked > self._refresh:
            self._checked = now
            self._synced = self._probe()
        return self._synced
