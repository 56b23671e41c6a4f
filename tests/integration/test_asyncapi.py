"""`agent asyncapi`: valid by the official AsyncAPI tool, complete, and true of live payloads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import AGENT_BIN, AgentProcess, agent_config, wait_until
from test_selftest import exit1

from agent.events import CATALOGUE

ROOT = "retail/t1"
REPO = Path(__file__).resolve().parents[2]
ASYNCAPI = REPO / "var" / "asyncapi" / "node_modules" / ".bin" / "asyncapi"
UNAVAILABLE = REPO / "var" / "asyncapi" / "unavailable"  # written by scripts/setup


def document() -> dict[str, Any]:
    out = subprocess.run([AGENT_BIN, "asyncapi"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def asyncapi_validate(path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    """The official validator, offline: no analytics, and no network at all where we can make a
    namespace without one."""
    if not ASYNCAPI.exists():
        if UNAVAILABLE.exists():
            pytest.skip(f"@asyncapi/cli is not installed: {UNAVAILABLE.read_text().strip()}")
        pytest.fail("@asyncapi/cli is missing: run scripts/setup")
    settings = tmp / "asyncapi-analytics.json"
    settings.write_text('{"analyticsEnabled": "false", "infoMessageShown": "true"}')
    command = [str(ASYNCAPI), "validate", str(path), "--fail-severity", "warn"]
    isolated = ["unshare", "-rn", *command]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"],
                                                  capture_output=True).returncode == 0:
        command = isolated
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), "CI": "true",
                               "ASYNCAPI_METRICS_CONFIG_PATH": str(settings)})


def test_the_official_asyncapi_tool_finds_no_error_or_warning(tmp_path):
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    good = tmp_path / "asyncapi.json"
    good.write_text(json.dumps(doc))
    result = asyncapi_validate(good, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors, 0 warnings" in result.stdout + result.stderr

    # and it would tell: the same document with one dangling reference is refused
    doc["channels"]["events"]["messages"]["event"]["$ref"] = "#/components/messages/nope"
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps(doc))
    result = asyncapi_validate(bad, tmp_path)
    assert result.returncode != 0 and "nope' does not exist" in result.stdout + result.stderr


def test_every_topic_of_the_contract_is_described():
    doc = document()
    addresses = {ch["address"] for ch in doc["channels"].values()}
    root = "{topicRoot}/{storeId}/"
    assert addresses == {root + a for a in (
        "events/{deviceId}/{eventType}", "state/{deviceId}", "agent/availability",
        "agent/status", "agent/selftest/{exit}", "agent/request/{command}",
        "agent/response/{command}")}
    assert doc["channels"]["events"]["parameters"]["eventType"]["enum"] == list(CATALOGUE)
    event = doc["components"]["messages"]["event"]
    assert event["payload"] == {"$ref": "#/components/schemas/Event"}
    assert event["contentType"] == "application/cloudevents+json"
    answer = doc["operations"]["answerRequest"]
    assert answer["action"] == "receive"
    assert answer["reply"]["channel"] == {"$ref": "#/channels/response"}
    assert doc["components"]["messages"]["request"]["correlationId"]["location"] == \
        "$message.payload#/id"
    retained = {name for name, op in doc["operations"].items()
                if op.get("bindings", {}).get("mqtt", {}).get("retain")}
    assert retained == {"sendState", "sendAvailability", "sendStatus", "sendSelftestReport"}


def validator_for(doc: dict[str, Any], schema: str) -> Draft202012Validator:
    return Draft202012Validator({"components": doc["components"],
                                 "$ref": f"#/components/schemas/{schema}"},
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_live_payloads_fit_the_document(tmp_path, broker, subscriber, agents):
    """What a real agent publishes on each topic fits the message schema the document gives it."""
    doc = document()
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, exit1(), exits={
        "exit1": {"eas": "exit1-eas", "door": "exit1-door", "test_tag": "exit1-testtag",
                  "alarm_within": "1s", "schedule": "0 3 * * *"}}))
    agents.append(agent)
    agent.start(wait_connected=True)
    wait_until(lambda: subscriber.payloads(f"{ROOT}/state/exit1-door"), 10, "the door's state")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = f"{ROOT}/agent/response/test-{uuid.uuid4().hex}"
    props.CorrelationData = b"c1"
    for command, request in (("selftest", {"id": "r1", "exit": "exit1"}),
                             ("status", {"id": "r2"}), ("sim", {"id": "r3"})):
        subscriber.client.publish(f"{ROOT}/agent/request/{command}", json.dumps(request), qos=1,
                                  properties=props)
    wait_until(lambda: len(subscriber.payloads(props.ResponseTopic)) == 3, 30, "three responses")
    wait_until(lambda: subscriber.payloads(f"{ROOT}/agent/selftest/exit1"), 10, "the report")

    topics = {"Status": f"{ROOT}/agent/status", "SelftestReport": f"{ROOT}/agent/selftest/exit1",
              "Response": props.ResponseTopic}
    checked: dict[str, int] = {}
    for msg in list(subscriber.messages):
        schema = next((s for s, t in topics.items() if msg.topic == t), None)
        if re.match(rf"{ROOT}/state/", msg.topic):
            schema = "DeviceState"
        if schema is None:
            continue
        payload = json.loads(msg.payload)
        problems = [e.message for e in validator_for(doc, schema).iter_errors(payload)]
        assert problems == [], f"{msg.topic}: {payload}"
        checked[schema] = checked.get(schema, 0) + 1
    assert set(checked) == {"Status", "SelftestReport", "Response", "DeviceState"}
    availability = subscriber.payloads(f"{ROOT}/agent/availability")[-1].decode()
    assert availability in doc["components"]["messages"]["availability"]["payload"]["enum"]
    # the document's schemas are not "anything goes"
    assert list(validator_for(doc, "Status").iter_errors({"version": 1}))
    assert agent.stop() == 0
