"""Self-test reports for machines (JUnit XML) and the cron schedules of exits."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from agent.config import cron_trigger
from agent.selftest.report import ProgressPrinter, junit_xml


def report(result: str, steps: list[tuple[str, str]]) -> dict:
    return {"exit": "exit1", "run_id": "r1", "result": result, "summary": "s",
            "started": "2026-12-01T06:00:00.000Z", "duration_ms": 1234.0,
            "steps": [{"step": n, "result": r, "detail": f"{n} detail", "latency_ms": 50.0}
                      for n, r in steps]}


def test_junit_has_a_case_per_step_with_failures_and_skips():
    xml = junit_xml([report("fail", [("buffer", "pass"), ("alarm", "fail"),
                                     ("camera", "skip")])])
    suite = ET.fromstring(xml).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["alarm"].find("failure").get("message") == "alarm detail"
    assert cases["camera"].find("skipped") is not None
    assert cases["buffer"].find("failure") is None


def test_an_incomplete_run_is_a_failing_case_in_junit():
    suite = ET.fromstring(junit_xml([report("incomplete", [("alarm", "skip")])])).find(
        "testsuite")
    assert suite.get("failures") == "1"
    assert [c.get("name") for c in suite.iter("testcase")] == ["alarm", "alarm chain tested"]


def test_the_printed_table_shows_warnings_and_failures():
    lines: list[str] = []
    show = ProgressPrinter(lines.append)
    show({"kind": "step", "step": "broker", "result": "pass", "detail": "warning: x",
          "warning": True})
    show({"kind": "step", "step": "alarm", "result": "fail", "detail": "no eas.alarm",
          "latency_ms": None})
    assert lines[0].split()[:2] == ["broker", "warn"]
    assert lines[1].split()[:2] == ["alarm", "FAIL"]


@pytest.mark.parametrize(("cron", "weekday"), [("0 6 * * 1", 0), ("0 6 * * 0", 6),
                                               ("0 6 * * 7", 6), ("0 6 * * mon", 0)])
def test_cron_weekdays_count_from_sunday_as_cron_does(cron, weekday):
    utc = UTC
    trigger = cron_trigger(cron, utc)
    start = datetime(2026, 12, 1, tzinfo=utc)  # a Tuesday
    fire = trigger.get_next_fire_time(None, start)
    assert fire.weekday() == weekday and fire.hour == 6
    assert fire - start < timedelta(days=7)


def test_a_leading_seconds_field_is_accepted_and_bad_crons_say_what_is_expected():
    trigger = cron_trigger("*/2 * * * * *", UTC)
    start = datetime(2026, 12, 1, 6, 0, 1, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, start).second == 2
    with pytest.raises(ValueError, match="expected 5 fields"):
        cron_trigger("0 6 * *")
    with pytest.raises(ValueError, match="higher than the maximum"):
        cron_trigger("0 25 * * *")
