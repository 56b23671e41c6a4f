"""The broker credentials on disk: noticing that they changed, and the client certificate's expiry."""

from __future__ import annotations

import logging
import ssl
import time
from pathlib import Path

from agent.config import MqttSection

log = logging.getLogger(__name__)

WATCH_INTERVAL = 2.0
"""How often the files are looked at (a stat each: no new dependency, no inotify limits)."""
EXPIRY_WARNING_DAYS = 30

Signature = tuple[tuple[str, int, int, int] | tuple[str], ...]


def credential_files(mqtt: MqttSection) -> list[Path]:
    """The files a connection reads: CA, client certificate and key, password."""
    paths = [mqtt.ca_file, mqtt.cert_file, mqtt.key_file] if mqtt.tls else []
    return [p for p in [*paths, mqtt.password_file if mqtt.username else None] if p is not None]


def signature(paths: list[Path]) -> Signature:
    """Inode, mtime and size of each file: a rename over it (how tools rotate files), an edit in
    place, or a deletion all change it."""
    out: list[tuple[str, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append((str(path),))
        else:
            out.append((str(path), st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class CredentialWatch:
    """Polls the credential files; ``changed()`` is true once after they changed on disk."""

    def __init__(self, mqtt: MqttSection, *, interval: float = WATCH_INTERVAL) -> None:
        self.paths = credential_files(mqtt)
        self.interval = interval
        self._seen = signature(self.paths)
        self._next = time.monotonic() + interval

    def mark(self) -> None:
        """The files as they are now are the ones in use (call before reading them)."""
        self._seen = signature(self.paths)

    def changed(self) -> list[Path]:
        """The files that changed since ``mark()``, looked at no more than every ``interval``."""
        now = time.monotonic()
        if not self.paths or now < self._next:
            return []
        self._next = now + self.interval
        current = signature(self.paths)
        if current == self._seen:
            return []
        changed = [p for p, a, b in zip(self.paths, self._seen, current, strict=True) if a != b]
        self._seen = current
        return changed


def cert_days_left(path: Path | None, *, now: float | None = None) -> float | None:
    """Days until the PEM certificate at ``path`` expires (negative: expired); None when there is
    no certificate or it cannot be read.

    The standard library decodes the certificate (``ssl._ssl._test_decode_cert``, what the ssl
    module's own tests use): the ``cryptography`` package is not a dependency of the agent, and an
    ``openssl`` process per check would be a fork on a Pi for one date.
    """
    if path is None:
        return None
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        not_after = decode(str(path))["notAfter"]
        expires = ssl.cert_time_to_seconds(not_after)
    except (OSError, ValueError, KeyError, ssl.SSLError) as err:
        log.warning("cannot read the expiry of the client certificate %s: %s", path, err)
        return None
    return (expires - (time.time() if now is None else now)) / 86400.0
