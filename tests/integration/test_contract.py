"""The contract dashboards build on, seen from a subscriber: schema, time formats, MQTT 5."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import AgentProcess, Subscriber, agent_config, metrics_port, wait_until
from test_selftest import exit1

from agent.events import TIME_PATTERN

ROOT = "retail/t1"
EPOCH_RANGE = (1.0e9, 4.0e9)  # 2001..2096 in epoch seconds: a number here is a timestamp
DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:")
PROMTOOL = shutil.which("promtool") or "promtool"  # Debian's prometheus package (scripts/setup)


def _bad_times(value: Any, path: str = "") -> list[str]:
    """Every epoch number and every date string that is not RFC 3339 UTC with milliseconds."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _bad_times(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _bad_times(v, f"{path}[{i}]")]
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and EPOCH_RANGE[0] < value < EPOCH_RANGE[1]:
        return [f"{path} = {value} (epoch seconds)"]
    if isinstance(value, str) and DATE_LIKE.match(value) and not re.match(TIME_PATTERN, value):
        return [f"{path} = {value!r}"]
    return []


def test_every_time_in_state_status_and_selftest_reports_is_rfc3339_utc_ms(
        tmp_path, broker, subscriber, agents):
    cfg = agent_config(tmp_path, broker, exit1(), exits={"exit1": {
        "eas": "exit1-eas", "door": "exit1-door", "test_tag": "exit1-testtag",
        "alarm_within": "1s", "schedule": "0 3 * * *"}})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0
    assert agent.run_cli("sim", "gpio", "exit1-door", "close").returncode == 0
    result = agent.run_cli("selftest", "--json")  # pulses the tag: the pedestal input alarms
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: subscriber.payloads(f"{ROOT}/agent/selftest/exit1"), 10,
               "the retained self-test report")

    def status_with_selftest() -> dict[str, Any] | None:
        payloads = subscriber.payloads(f"{ROOT}/agent/status")
        last = json.loads(payloads[-1]) if payloads else {}
        return last if last.get("last_selftest", {}).get("exit1") else None

    status = wait_until(status_with_selftest, 10, "a status with the self-test")
    seen: dict[str, Any] = {"status --json": json.loads(agent.run_cli("status", "--json").stdout)}
    for msg in list(subscriber.messages):
        if "/state/" in msg.topic or "/agent/status" in msg.topic or "/agent/selftest/" in \
                msg.topic:
            seen.setdefault(msg.topic, []).append(json.loads(msg.payload))
    problems = [p for topic, payload in seen.items() for p in _bad_times(payload, topic)]
    assert problems == []
    # the times that must be there, to show that the walk above saw them
    door = seen[f"{ROOT}/state/exit1-door"][-1]
    assert re.match(TIME_PATTERN, door["since"]) and re.match(TIME_PATTERN, door["door_since"])
    assert re.match(TIME_PATTERN, status["started"])
    assert re.match(TIME_PATTERN, status["selftest_schedule"]["exit1"]["next"])
    assert re.match(TIME_PATTERN, status["last_selftest"]["exit1"]["finished"])
    tag = seen[f"{ROOT}/state/exit1-testtag"][-1]
    assert re.match(TIME_PATTERN, tag["output_since"])
    assert re.match(TIME_PATTERN, tag["last_action"]["at"])
    assert agent.stop() == 0


def test_an_event_that_agent_schema_rejects_fails_the_test(broker, subscriber):
    """The hook in tests/support.py: every event a test reads is validated by `jsonschema`."""
    subscriber.client.publish(f"{ROOT}/events/r1/eas.alarm",
                              json.dumps({"type": "eas.alarm", "seq": 0}), qos=1)
    subscriber.sync()
    with pytest.raises(AssertionError, match=r"seq: 0 is less than the minimum of 1"):
        subscriber.events()
    subscriber.invalid.clear()  # so that closing the fixture does not fail this test again


def test_mqtt5_content_type_and_payload_format_on_events_state_and_status(
        tmp_path, broker, subscriber, agents):
    rec = tmp_path / "rec.jsonl"
    rec.write_text(json.dumps({"type": "door.opened"}) + "\n")
    agent = AgentProcess(tmp_path / "a", agent_config(
        tmp_path, broker, {"r1": {"driver": "replay", "file": str(rec)}}))
    agents.append(agent)
    agent.start(wait_connected=True)
    subscriber.wait_events(1, "door.opened")
    wait_until(lambda: subscriber.payloads(f"{ROOT}/agent/status"), 10, "the status")
    wait_until(lambda: subscriber.payloads(f"{ROOT}/state/r1"), 10, "the state")
    expected = {f"{ROOT}/events/r1/door.opened": "application/cloudevents+json",
                f"{ROOT}/state/r1": "application/json", f"{ROOT}/agent/status": "application/json"}
    for topic, content_type in expected.items():
        msg = next(m for m in list(subscriber.messages) if m.topic == topic)
        props = msg.properties
        assert getattr(props, "ContentType", None) == content_type, topic
        assert getattr(props, "PayloadFormatIndicator", None) == 1, topic  # UTF-8
    assert agent.stop() == 0


def test_mqtt311_subscribers_get_the_same_events(tmp_path, broker, agents):
    """MQTT 3.1.1 has no properties: the event is the same structured-mode JSON."""
    rec = tmp_path / "rec.jsonl"
    rec.write_text(json.dumps({"type": "door.opened"}) + "\n")
    sub = Subscriber(broker, f"{ROOT}/#")
    agent = AgentProcess(tmp_path / "a", agent_config(
        tmp_path, broker, {"r1": {"driver": "replay", "file": str(rec)}},
        mqtt={"protocol": "3.1.1"}))
    agents.append(agent)
    agent.start(wait_connected=True)
    (event,) = sub.wait_events(1, "door.opened")
    assert event["datacontenttype"] == "application/json" and event["specversion"] == "1.0"
    assert agent.stop() == 0
    sub.close()


def test_metrics_pass_promtool_and_show_selftests_devices_and_the_buffer_limit(
        tmp_path, broker, agents):
    cfg = agent_config(tmp_path, broker, exit1(), exits={"exit1": {
        "eas": "exit1-eas", "door": "exit1-door", "test_tag": "exit1-testtag",
        "alarm_within": "1s"}, "exit2": {"door": "exit1-door"}},
        metrics={"listen": "127.0.0.1:0"}, buffer={"max_bytes": "64MiB"})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    port = wait_until(lambda: metrics_port(agent.output()), 10, "the metrics port in the log")
    before = time.time()
    result = agent.run_cli("selftest", "--exit", "exit1", "--json")
    assert result.returncode == 0, result.stdout + result.stderr

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout + lint.stderr == ""  # no lint warnings either

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes",
            "process_open_fds"} <= names
    assert not [n for n in names if n.endswith("_created")]

    def m(name: str, **labels: str) -> float | None:
        return samples.get((f"store_edge_agent_{name}", tuple(sorted(labels.items()))))

    assert m("selftest_last_result", exit="exit1", result="pass") == 1
    assert m("selftest_last_result", exit="exit1", result="fail") == 0
    assert before <= m("selftest_last_timestamp_seconds", exit="exit1") <= time.time()
    assert m("selftest_last_result", exit="exit2", result="pass") == 0   # never tested
    assert m("selftest_last_timestamp_seconds", exit="exit2") == 0
    assert m("device_up", device="exit1-door", driver="gpio_door") == 1
    assert m("buffer_max_bytes") == 64 * 1024**2
    assert agent.stop() == 0
