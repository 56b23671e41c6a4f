"""The ACME line protocol: every message, and every way a line can be wrong."""

import pytest
from acme_eas.protocol import Event, Heartbeat, ProtocolError, Reply, checksum, frame, parse_line


def test_frame_carries_an_xor_checksum():
    assert frame("HB", 12) == f"HB,12*{checksum('HB,12')}\r\n".encode()
    assert parse_line(frame("HB", 12)) == Heartbeat(12)


@pytest.mark.parametrize(("fields", "expected"), [
    (("ALM", "2", "I", 75), Event("eas.alarm", {"pedestal": "2", "direction": "in", "level": 75})),
    (("INT", 1, 40), Event("eas.interference", {"inhibit": True, "level": 40})),
    (("FLT", "E12", "TX coil open"), Event("eas.fault", {"reason": "E12: TX coil open"})),
    (("CNT", 3, 5, 60), Event("eas.people_count", {"in": 3, "out": 5, "interval_s": 60})),
])
def test_events(fields, expected):
    msg = parse_line(frame(*fields))
    assert isinstance(msg, Event)
    assert msg.type == expected.type
    assert {k: v for k, v in msg.data.items() if k != "raw"} == expected.data


def test_replies():
    assert parse_line(frame("ACK", "SIL")) == Reply("SIL", ok=True)
    assert parse_line(frame("NAK", "SIL", "bad argument")) == Reply("SIL", ok=False,
                                                                    reason="bad argument")


@pytest.mark.parametrize(("line", "error"), [
    (b"ALM,1,O,80\r\n", "no checksum"),
    (b"ALM,1,O,80*00\r\n", "checksum 00 should be"),
    (frame("XYZ", 1), "unknown message 'XYZ'"),
    (frame("ALM", "1", "O"), "ALM needs 3 fields"),
    (frame("ALM", "1", "S", 80), "direction 'S' is not I, O or U"),
    (frame("CNT", "three", 5, 60), "in is not a number"),
    (b"ALM,1,\xff*00\r\n", "not ASCII"),
])
def test_bad_lines_are_refused_with_the_line(line, error):
    with pytest.raises(ProtocolError, match=error):
        parse_line(line)
