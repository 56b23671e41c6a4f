"""Pairing codes and sessions of the web page: who may see, who may run tests, until when.

Secrets (pairing codes, session cookies, CSRF tokens) are kept only as SHA-256 hashes or in
memory, and never logged: logs and ``agent web sessions`` name a session by its short ``id``.
Sessions live in memory, so a restart of the agent ends them (pair again).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.events import rfc3339

__all__ = ["ROLES", "PairingLimited", "Session", "Sessions"]

ROLES = ("viewer", "operator")
"""A viewer sees; an operator may also start self-tests and walk tests."""
PAIR_FAILURES = 10
"""Wrong pairing codes accepted per ``PAIR_WINDOW`` (from all clients together) before the
page refuses every attempt until the window has passed."""
PAIR_WINDOW = 60.0
MAX_PENDING = 20
"""Unused pairing codes kept at once; the oldest goes first."""
MAX_SESSIONS = 100


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class PairingLimited(Exception):
    """Too many wrong pairing codes recently: try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many pairing attempts; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass
class Session:
    """One paired phone. The cookie secret itself is not kept, only its hash."""

    id: str
    role: str
    created: float
    expires: float
    csrf: str = field(repr=False)
    label: str = ""
    last_seen: float = 0.0

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def public(self) -> dict[str, Any]:
        """What ``agent web sessions`` shows: no secret."""
        return {"id": self.id, "role": self.role, "created": rfc3339(self.created),
                "expires": rfc3339(self.expires),
                "last_seen": rfc3339(self.last_seen) if self.last_seen else None,
                "client": self.label}


@dataclass
class _Pairing:
    role: str
    expires: float
    session_ttl: float


class Sessions:
    """Pairing codes made by ``agent web pair`` and the sessions they turn into."""

    def __init__(self, *, session_ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.session_ttl = session_ttl
        self._clock = clock
        self._pairings: dict[str, _Pairing] = {}  # hash of the code -> pairing
        self._sessions: dict[str, Session] = {}  # hash of the cookie -> session
        self._failures: deque[float] = deque()

    def pair(self, role: str, valid_for: float) -> tuple[str, float]:
        """A one-time pairing code for ``role``, valid ``valid_for`` seconds; (code, expiry).

        Raises:
            ValueError: unknown role or a validity that is not positive.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not 0 < valid_for <= 24 * 3600:
            raise ValueError("a pairing code is valid for more than 0 s and at most 24 h")
        self._expire()
        while len(self._pairings) >= MAX_PENDING:
            self._pairings.pop(next(iter(self._pairings)))
        code = secrets.token_urlsafe(24)
        expires = self._clock() + valid_for
        self._pairings[_hash(code)] = _Pairing(role, expires, self.session_ttl)
        return code, expires

    def redeem(self, code: str, label: str = "") -> tuple[Session, str]:
        """Turn a pairing code into a session; returns it and the cookie secret. A code works
        once.

        Raises:
            PairingLimited: too many wrong codes lately; KeyError: unknown, used or expired
            code (counted as a failure).
        """
        now = self._clock()
        while self._failures and self._failures[0] <= now - PAIR_WINDOW:
            self._failures.popleft()
        if len(self._failures) >= PAIR_FAILURES:
            raise PairingLimited(self._failures[0] + PAIR_WINDOW - now)
        self._expire()
        pairing = self._pairings.pop(_hash(code), None)
        if pairing is None:
            self._failures.append(now)
            raise KeyError("this pairing link is unknown, used or expired: run `agent web pair` "
                           "again")
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].created)
            del self._sessions[oldest]
        secret = secrets.token_urlsafe(32)
        session = Session(id=secrets.token_hex(4), role=pairing.role, created=now,
                          expires=now + pairing.session_ttl, csrf=secrets.token_urlsafe(24),
                          label=label[:80], last_seen=now)
        self._sessions[_hash(secret)] = session
        return session, secret

    def find(self, secret: str | None) -> Session | None:
        """The live session of a cookie secret, or None (no cookie, revoked, expired)."""
        if not secret:
            return None
        self._expire()
        session = self._sessions.get(_hash(secret))
        if session is not None:
            session.last_seen = self._clock()
        return session

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(session.csrf, token)

    def list(self) -> list[Session]:
        self._expire()
        return sorted(self._sessions.values(), key=lambda s: s.created)

    def revoke(self, session_id: str) -> Session:
        """End the session ``session_id`` now.

        Raises:
            KeyError: no such session.
        """
        for key, session in self._sessions.items():
            if session.id == session_id:
                del self._sessions[key]
                return session
        known = ", ".join(s.id for s in self.list()) or "none"
        raise KeyError(f"no session {session_id!r} (sessions: {known})")

    def is_live(self, session: Session) -> bool:
        return session in self._sessions.values() and session.expires > self._clock()

    def _expire(self) -> None:
        now = self._clock()
        for store in (self._pairings, self._sessions):
            for key in [k for k, v in store.items() if v.expires <= now]:
                del store[key]
