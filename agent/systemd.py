"""The sd_notify protocol: one datagram to ``$NOTIFY_SOCKET`` per state change (READY, WATCHDOG...).

Implemented here rather than with a library: it is a single ``sendto`` (see sd_notify(3)).
Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so ``agent run`` behaves the same
in a terminal, in tests and under systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

__all__ = ["Notifier"]


class Notifier:
    """Talks to the service manager named by ``NOTIFY_SOCKET`` (a path, or ``@name`` abstract).

    ``watchdog_interval`` is how often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC``, as
    sd_watchdog_enabled(3) recommends, or ``None`` when the watchdog is off or meant for
    another process (``WATCHDOG_PID``).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines in one datagram, e.g. ``notify(READY=1, STATUS="ok")``.

        Returns whether it was sent; a failure is logged once and never raised, because the
        service must not fail over its status reports.
        """
        if self.address is None:
            return False
        message = "\n".join(f"{k}={_one_line(str(v))}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
        except OSError as err:
            if not self._warned:
                log.warning("cannot notify systemd on %r: %s", self.address, err)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET=%r: neither a path nor an @abstract name", value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec


def _one_line(value: str) -> str:
    """A field value may not contain a newline: that would start another field."""
    return " ".join(value.splitlines())
