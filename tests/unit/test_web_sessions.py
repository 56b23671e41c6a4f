"""Pairing codes and web sessions: one use, expiry, roles, revoking, the pairing rate limit."""

from __future__ import annotations

import pytest

from agent.web.sessions import PAIR_FAILURES, PAIR_WINDOW, PairingLimited, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(clock: Clock) -> Sessions:
    return Sessions(session_ttl=3600, clock=clock)


def test_a_code_makes_one_session_of_its_role(sessions):
    code, _ = sessions.pair("operator", 600)
    session, secret = sessions.redeem(code)
    assert session.role == "operator" and session.may("operator") and session.may("viewer")
    assert sessions.find(secret) is session
    with pytest.raises(KeyError, match="unknown, used or expired"):
        sessions.redeem(code)


def test_a_viewer_may_only_see(sessions):
    session, _ = sessions.redeem(sessions.pair("viewer", 60)[0])
    assert session.may("viewer") and not session.may("operator")


def test_codes_and_sessions_expire(sessions, clock):
    code, _ = sessions.pair("viewer", 600)
    clock.now += 601
    with pytest.raises(KeyError):
        sessions.redeem(code)
    session, secret = sessions.redeem(sessions.pair("viewer", 600)[0])
    clock.now += 3599
    assert sessions.find(secret) is session
    clock.now += 2
    assert sessions.find(secret) is None and sessions.list() == []


def test_revoked_sessions_are_gone_and_unknown_ids_named(sessions):
    session, secret = sessions.redeem(sessions.pair("viewer", 60)[0])
    assert sessions.revoke(session.id) is session
    assert sessions.find(secret) is None
    with pytest.raises(KeyError, match="no session 'nope'"):
        sessions.revoke("nope")


def test_public_view_has_no_secret(sessions):
    session, secret = sessions.redeem(sessions.pair("viewer", 60)[0])
    public = str(session.public())
    assert secret not in public and session.csrf not in public


def test_wrong_codes_are_limited_for_a_window(sessions, clock):
    for _ in range(PAIR_FAILURES):
        with pytest.raises(KeyError):
            sessions.redeem("guess")
    good, _ = sessions.pair("viewer", 600)
    with pytest.raises(PairingLimited) as limited:
        sessions.redeem(good)
    assert 0 < limited.value.retry_after <= PAIR_WINDOW
    clock.now += PAIR_WINDOW
    assert sessions.redeem(good)[0].role == "viewer"  # the good code survived the lock-out


@pytest.mark.parametrize(("role", "seconds"), [("admin", 60), ("viewer", 0), ("viewer", 90000)])
def test_bad_pairing_requests_say_what_is_accepted(sessions, role, seconds):
    with pytest.raises(ValueError, match=r"role must be|valid for"):
        sessions.pair(role, seconds)
