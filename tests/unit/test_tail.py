"""`agent tail`'s lines: whole values only, retained states only when asked, JSON Lines raw."""

from __future__ import annotations

import json

from agent.mqtt import Topics
from agent.tail import LINE_BUDGET, format_message, raw_line

TOPICS = Topics("retail/t1")


def test_a_long_value_is_never_cut_and_fields_that_do_not_fit_are_counted():
    reason = "cannot open /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0: " \
             "[Errno 2] No such file or directory " * 3
    state = json.dumps({"online": False, "reason": reason, "port": "/dev/ttyUSB0",
                        "frames": 12}).encode()
    line = format_message(TOPICS, "retail/t1/state/exit1-eas", state, states=True)
    assert line is not None
    assert f"reason={json.dumps(reason, separators=(',', ':'))}" in line  # whole, not cut
    assert line.endswith("port=/dev/ttyUSB0 frames=12")
    event = {"type": "eas.fault", "deviceid": "d1", "seq": 7, "time": "2026-12-03T06:01:02.123Z",
             "data": {"reason": reason, "code": 7, "raw": "F|7"}}
    line = format_message(TOPICS, "retail/t1/events/d1/eas.fault", json.dumps(event).encode())
    assert line is not None and len(reason) > LINE_BUDGET
    assert f"reason={json.dumps(reason, separators=(',', ':'))}" in line  # the first: whole
    assert line.endswith("+1 more  #7") and "raw=" not in line  # code: counted, raw: --raw


def test_retained_states_status_and_reports_only_with_states():
    for topic, payload in (("retail/t1/state/d1", b'{"online": true}'),
                           ("retail/t1/agent/status", b'{"version": "1"}'),
                           ("retail/t1/agent/selftest/exit1",
                            b'{"result": "pass", "summary": "9 passed"}')):
        assert format_message(TOPICS, topic, payload) is None
        assert format_message(TOPICS, topic, payload, states=True)
    assert format_message(TOPICS, "retail/t1/agent/selftest/exit1",
                          b'{"result": "fail", "summary": "1 failed"}', states=True
                          ).strip() == "self-test of exit1: FAIL (1 failed)"
    assert format_message(TOPICS, "retail/t1/agent/availability", b"offline").strip() == \
        "agent/availability: offline"


def test_raw_is_one_json_object_per_message_with_the_whole_payload():
    big = {"devices": {f"d{i}": {"online": True} for i in range(40)}}
    line = raw_line("retail/t1/agent/status", json.dumps(big).encode(), True)
    assert json.loads(line) == {"topic": "retail/t1/agent/status", "retained": True,
                                "payload": big}
    assert "\n" not in line
    assert json.loads(raw_line("retail/t1/agent/availability", b"online", False))["payload"] \
        == "online"
