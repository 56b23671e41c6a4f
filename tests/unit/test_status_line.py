"""The publish rate and the one-line summary systemd shows for the agent."""

from __future__ import annotations

import re
import time

import pytest

from agent.status import RateMeter, format_moment, problems, render_status, summary_line


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_rate_is_events_per_second_over_the_last_window():
    clock = Clock()
    meter = RateMeter(window=60, clock=clock)
    clock.now += 10
    assert meter.rate(100) == pytest.approx(10.0)
    for second in range(1, 121):  # two minutes at 50/s
        clock.now += 1
        rate = meter.rate(100 + 50 * second)
    assert rate == pytest.approx(50.0, rel=0.05)
    clock.now += 30  # then nothing for 30 s: half the window is idle
    assert meter.rate(100 + 50 * 120) == pytest.approx(25.0, rel=0.1)


def test_rate_before_any_time_has_passed_is_zero():
    clock = Clock()
    assert RateMeter(clock=clock).rate(0) == 0.0


def _status(**broker) -> dict:
    return {
        "storeid": "0042", "version": "1.0", "uptime_s": 75.0, "config_hash": "abc",
        "clocksynced": True,
        "broker": {"connected": True, "host": "b:1883", "published": 1234, "reconnects": 1,
                   "last_error": None, "rate_per_s": 12.34, **broker},
        "buffer": {"depth": 3, "bytes": 2048, "oldest_age_s": 2.0, "dropped": {},
                   "last_error": None},
        "devices": {
            "exit1-eas": {"driver": "eas_serial", "online": True, "finished": False,
                          "restarts": 0, "state": {}},
            "exit1-door": {"driver": "gpio_door", "online": False, "finished": False,
                           "restarts": 2, "state": {"reason": "pin busy"}},
        },
        "last_selftest": None,
    }


def test_summary_line_tells_broker_devices_buffer_and_rate():
    assert summary_line(_status()) == (
        "store 0042: broker connected, 1/2 devices up, 3 events buffered (oldest 2s), "
        "12.3 events/s published"
    )
    assert "broker DISCONNECTED" in summary_line(_status(connected=False))
    # the host's warnings: the first one's gist, and how many more
    weak = {**_status(), "host": {"warnings": [
        "under-voltage since boot: check the power supply", "memory low: 80MiB of 3.7GiB"]}}
    assert summary_line(weak).endswith(
        "12.3 events/s published; HOST: under-voltage since boot (+1 more: agent status)")
    assert render_status(weak).splitlines()[-1].endswith("; host: 2 warnings above")


def test_agent_status_shows_the_publish_rate_and_device_health():
    text = render_status(_status())
    assert "published 1234 (12.3/s)" in text
    assert "exit1-door" in text
    assert "OFFLINE (pin busy)  restarts 2" in text


def test_status_names_what_needs_attention_and_a_failed_selftest():
    status = _status()
    status["last_selftest"] = {
        "exit1": {"result": "fail", "summary": "no alarm", "finished": "2026-12-03T06:01:02.000Z",
                  "trigger": "schedule"},
        "exit2": {"result": "pass", "summary": "ok", "finished": "2026-12-03T06:01:02.000Z",
                  "trigger": "cli"},
    }
    status["selftest_schedule"] = {"exit1": {"schedule": "0 6 * * *",
                                             "next": "2026-12-04T06:00:00+00:00"}}
    assert problems(status) == ["device exit1-door offline", "exit exit1: last self-test FAIL"]
    text = render_status(status)
    assert text.splitlines()[-1] == ("attention: device exit1-door offline; exit exit1: last "
                                     "self-test FAIL")
    # one format for every moment: local date and time
    local = [format_moment(v) for v in ("2026-12-03T06:01:02.000Z", "2026-12-04T06:00:00+00:00")]
    assert f"FAIL {local[0]} (schedule)" in text and f"next {local[1]} (0 6 * * *)" in text
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", m) for m in local)
    epoch = 1796277664.0  # 2026-12-03T06:01:04Z
    assert format_moment(epoch) == format_moment("2026-12-03T06:01:04Z") == \
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def test_status_explains_an_unsynchronised_clock_and_says_all_well():
    status = _status(connected=True)
    status["devices"].pop("exit1-door")
    text = render_status(status)
    assert text.splitlines()[-1] == "all well" and problems(status) == []
    status["clocksynced"] = False
    assert "NOT NTP-synchronised: events carry clocksynced=false (`agent tail` marks them " \
           "clock?)" in render_status(status)
