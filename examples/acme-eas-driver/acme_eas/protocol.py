"""The ACME controller's line protocol: framing, checksums and messages, without any I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DIRECTIONS = {"I": "in", "O": "out", "U": "unknown"}


class ProtocolError(ValueError):
    """A line that is not a valid ACME message; the message quotes the line."""


@dataclass(frozen=True)
class Heartbeat:
    """``HB,<uptime_s>``: the controller is alive (sent every second)."""

    uptime_s: int


@dataclass(frozen=True)
class Event:
    """A line that becomes one catalogue event."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """``ACK,<command>`` or ``NAK,<command>,<reason>``: the answer to a command we sent."""

    command: str
    ok: bool
    reason: str = ""


Message = Heartbeat | Event | Reply


def checksum(body: str) -> str:
    """The two hex digits after ``*``: XOR of the body's bytes (as in NMEA 0183)."""
    value = 0
    for byte in body.encode("ascii"):
        value ^= byte
    return f"{value:02X}"


def frame(*fields: object) -> bytes:
    """One line on the wire: ``ALM,1,O,80*3C\\r\\n``."""
    body = ",".join(str(f) for f in fields)
    return f"{body}*{checksum(body)}\r\n".encode("ascii")


def _int(text: str, what: str, line: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(f"{what} is not a number in {line!r}") from None


def unframe(raw: bytes) -> str:
    """The body of one line (``ALM,1,O,80``) after checking its checksum.

    Raises:
        ProtocolError: not ASCII, no checksum, or a wrong one.
    """
    try:
        line = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ProtocolError(f"not ASCII: {raw!r}") from None
    body, star, given = line.rpartition("*")
    if not star:
        raise ProtocolError(f"no checksum in {line!r}")
    if given.upper() != checksum(body):
        raise ProtocolError(f"checksum {given} should be {checksum(body)} in {line!r}")
    return body


def parse_line(raw: bytes) -> Message:
    """Check and decode one line as read from the socket (terminator included or not).

    Raises:
        ProtocolError: not ASCII, a wrong checksum, an unknown message or missing fields.
    """
    body = unframe(raw)
    line = raw.decode("ascii").strip()
    kind, *args = body.split(",")
    expected = {"HB": 1, "ALM": 3, "INT": 2, "FLT": 2, "CNT": 3, "ACK": 1, "NAK": 2}
    if kind not in expected:
        raise ProtocolError(f"unknown message {kind!r} in {line!r}")
    if len(args) < expected[kind]:
        raise ProtocolError(f"{kind} needs {expected[kind]} fields in {line!r}")
    if kind == "HB":
        return Heartbeat(_int(args[0], "uptime", line))
    if kind == "ALM":
        if args[1] not in DIRECTIONS:
            raise ProtocolError(f"direction {args[1]!r} is not I, O or U in {line!r}")
        return Event("eas.alarm", {"pedestal": args[0], "direction": DIRECTIONS[args[1]],
                                   "level": _int(args[2], "level", line), "raw": line})
    if kind == "INT":
        return Event("eas.interference", {"inhibit": args[0] == "1",
                                          "level": _int(args[1], "level", line), "raw": line})
    if kind == "FLT":
        return Event("eas.fault", {"reason": f"{args[0]}: {','.join(args[1:])}", "raw": line})
    if kind == "CNT":
        return Event("eas.people_count", {"in": _int(args[0], "in", line),
                                          "out": _int(args[1], "out", line),
                                          "interval_s": _int(args[2], "interval", line)})
    return Reply(args[0], kind == "ACK", ",".join(args[1:]))
