"""What the broker's access control refused, in plain words, and how 3.1.1 can tell at all.

MQTT 5 brokers say so: a PUBACK or SUBACK carries a reason code (135 "Not authorized"). An MQTT
3.1.1 broker such as mosquitto acknowledges a denied publish as if it had taken it and drops it;
the only sign is that the message never arrives anywhere. ``EchoProbe`` looks for that sign on
the agent's own availability topic.
"""

from __future__ import annotations

import time

ECHO_WITHIN = 10.0
"""MQTT 3.1.1: seconds after connecting within which our own ``online`` must come back."""


def publish_denied(where: str, user: str, topic: str, seq: int, reason: str) -> str:
    """The log line and status text for a PUBACK with a failure reason code."""
    return (f"broker {where} refused to take seq {seq} on {topic}: {reason}. Its access control "
            f"does not let user {user!r} publish there: check agent.store_id and the broker's "
            "ACL for this store. The events stay in the buffer")


def subscribe_denied(where: str, user: str, topic: str, reason: str) -> str:
    """The log line and status text for a SUBACK with a failure reason code."""
    return (f"broker {where} refused the subscription to {topic}: {reason}. Remote requests "
            f"(status, selftest) will not reach this agent: the ACL for user {user!r} must allow "
            "reading it")


class EchoProbe:
    """MQTT 3.1.1 only: the agent subscribes to its own availability topic before it publishes
    ``online``; a broker that takes the publish forwards it back live (retain flag 0). No echo
    within ``ECHO_WITHIN`` seconds means the broker probably drops what we publish."""

    def __init__(self, where: str, user: str, topic: str) -> None:
        self.topic = topic
        self.message = (
            f"broker {where} did not echo this agent's 'online' on {topic} within "
            f"{ECHO_WITHIN:.0f} s. With MQTT 3.1.1 a broker acknowledges a publish its access "
            f"control denies and drops it: events may be lost at the broker. Check agent.store_id "
            f"and the ACL of user {user!r} (it must allow publishing and reading under the "
            "store's topics)")
        self._since = time.monotonic()
        self.confirmed = False
        self.reported = False

    def saw(self, payload: bytes, retained: bool) -> None:
        if payload == b"online" and not retained:
            self.confirmed = True

    def overdue(self) -> bool:
        """True once, when the echo is late."""
        if self.confirmed or self.reported or time.monotonic() - self._since < ECHO_WITHIN:
            return False
        self.reported = True
        return True
