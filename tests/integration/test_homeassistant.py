"""Home Assistant MQTT discovery: opt-in, valid by HA's documented schema, and its entities
follow what the real agent publishes."""

from __future__ import annotations

import json
from typing import Any

import jinja2
from jsonschema import Draft202012Validator
from support import AgentProcess, Subscriber, agent_config, wait_until
from test_selftest import exit1

from agent.config import load_config
from agent.homeassistant import discovery_messages
from agent.testing import write_config

# Home Assistant's documented configuration variables for MQTT discovery
# (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery, .../binary_sensor.mqtt/,
# .../sensor.mqtt/): the keys we may use, their types, and the documented device classes.
_COMMON: dict[str, Any] = {
    "name": {"type": ["string", "null"]},
    "unique_id": {"type": "string"},
    "state_topic": {"type": "string", "minLength": 1},
    "value_template": {"type": "string"},
    "availability_topic": {"type": "string"},
    "availability": {"type": "array"},
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "payload_available": {"type": "string"},
    "payload_not_available": {"type": "string"},
    "json_attributes_topic": {"type": "string"},
    "json_attributes_template": {"type": "string"},
    "entity_category": {"enum": ["config", "diagnostic"]},
    "enabled_by_default": {"type": "boolean"},
    "expire_after": {"type": "integer", "minimum": 0},
    "force_update": {"type": "boolean"},
    "icon": {"type": "string"},
    "qos": {"enum": [0, 1, 2]},
    "encoding": {"type": "string"},
    "object_id": {"type": "string"},
    "device": {"type": "object", "additionalProperties": False, "properties": {
        "identifiers": {"type": ["string", "array"]}, "connections": {"type": "array"},
        "name": {"type": "string"}, "manufacturer": {"type": "string"},
        "model": {"type": "string"}, "model_id": {"type": "string"},
        "sw_version": {"type": "string"}, "hw_version": {"type": "string"},
        "serial_number": {"type": "string"}, "suggested_area": {"type": "string"},
        "configuration_url": {"type": "string"}, "via_device": {"type": "string"}},
        "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}]},
    "origin": {"type": "object", "required": ["name"], "additionalProperties": False,
               "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"},
                              "support_url": {"type": "string"}}},
}
HA_SCHEMA: dict[str, dict[str, Any]] = {
    "binary_sensor": {
        "type": "object", "required": ["state_topic"], "additionalProperties": False,
        "properties": {**_COMMON, "payload_on": {"type": "string"},
                       "payload_off": {"type": "string"},
                       "off_delay": {"type": "integer", "minimum": 0},
                       "device_class": {"enum": [
                           "battery", "battery_charging", "carbon_monoxide", "cold",
                           "connectivity", "door", "garage_door", "gas", "heat", "light",
                           "lock", "moisture", "motion", "moving", "occupancy", "opening",
                           "plug", "power", "presence", "problem", "running", "safety",
                           "smoke", "sound", "tamper", "update", "vibration", "window"]}},
        "not": {"required": ["availability", "availability_topic"]}},
    "sensor": {
        "type": "object", "required": ["state_topic"], "additionalProperties": False,
        "properties": {**_COMMON, "device_class": {"type": "string"},
                       "options": {"type": "array", "items": {"type": "string"}},
                       "unit_of_measurement": {"type": "string"},
                       "state_class": {"enum": ["measurement", "total", "total_increasing"]},
                       "suggested_display_precision": {"type": "integer"}},
        # options only for an enum sensor, which has neither unit nor state class
        "if": {"required": ["options"]},
        "then": {"properties": {"device_class": {"const": "enum"}},
                 "required": ["device_class"],
                 "not": {"anyOf": [{"required": ["unit_of_measurement"]},
                                   {"required": ["state_class"]}]}},
        "not": {"required": ["availability", "availability_topic"]}},
}
TOPIC = r"^homeassistant/(binary_sensor|sensor)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$"
ROOT = "retail/t1"


def render(template: str, payload: bytes) -> str:
    """What Home Assistant makes of ``payload`` with ``template`` (Jinja, ``value_json``)."""
    return jinja2.Environment(autoescape=False).from_string(template).render(
        value=payload.decode(), value_json=json.loads(payload))


def test_discovery_is_off_unless_asked_for(tmp_path):
    cfg = agent_config(tmp_path, None, exit1(), exits={"exit1": {"eas": "exit1-eas"}})
    assert discovery_messages(load_config(write_config(tmp_path / "a.toml", cfg))) == []


def test_discovery_configs_fit_home_assistants_schema_and_follow_the_store(
        tmp_path, broker, subscriber, agents):
    live = Subscriber(broker, "homeassistant/#")
    cfg = agent_config(tmp_path, broker, exit1(), exits={"exit1": {
        "eas": "exit1-eas", "door": "exit1-door", "test_tag": "exit1-testtag",
        "alarm_within": "1s"}}, homeassistant={"discovery": True})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    wait_until(lambda: len(live.messages) >= 4, 10, "four discovery configs")
    live.close()
    ha = Subscriber(broker, "homeassistant/#")  # Home Assistant starting later: retained
    wait_until(lambda: len(ha.messages) >= 4, 10, "four discovery configs")
    configs = {m.topic: json.loads(m.payload) for m in list(ha.messages)}
    assert all(m.retain for m in ha.messages)
    for topic, config in configs.items():
        assert Draft202012Validator({"type": "string", "pattern": TOPIC}).is_valid(topic), topic
        component = topic.split("/")[1]
        problems = [e.message for e in Draft202012Validator(HA_SCHEMA[component]).iter_errors(
            config)]
        assert problems == [], f"{topic}: {problems}"
    by_id = {c["unique_id"]: c for c in configs.values()}
    node = "store-edge-agent-t1"
    assert set(by_id) == {f"{node}-agent", f"{node}-exit1_alarm", f"{node}-exit1_door",
                          f"{node}-exit1_selftest"}
    assert len({json.dumps(c["device"], sort_keys=True) for c in by_id.values()}) == 1

    # the agent entity reads the availability the agent publishes
    agent_entity = by_id[f"{node}-agent"]
    assert subscriber.payloads(agent_entity["state_topic"])[-1].decode() == \
        agent_entity["payload_on"]
    # the door entity: ON when the door opens
    door = by_id[f"{node}-exit1_door"]
    assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0
    wait_until(lambda: render(door["value_template"], subscriber.payloads(
        door["state_topic"])[-1]) == "ON", 10, "the door entity to turn on")
    assert agent.run_cli("sim", "gpio", "exit1-door", "close").returncode == 0
    wait_until(lambda: render(door["value_template"], subscriber.payloads(
        door["state_topic"])[-1]) == "OFF", 10, "the door entity to turn off")
    # a self-test: its alarm (test: true) does not turn the alarm entity on, the result shows
    assert agent.run_cli("selftest").returncode == 0
    alarm, selftest = by_id[f"{node}-exit1_alarm"], by_id[f"{node}-exit1_selftest"]
    (test_alarm,) = subscriber.wait_events(1, "eas.alarm")
    assert render(alarm["value_template"], json.dumps(test_alarm).encode()) == "OFF"
    assert render(alarm["value_template"], json.dumps({**test_alarm, "test": False}).encode()) \
        == "ON"
    report = wait_until(lambda: subscriber.payloads(selftest["state_topic"]), 10, "the report")
    assert render(selftest["value_template"], report[-1]) == "pass"
    attributes = json.loads(render(selftest["json_attributes_template"], report[-1])
                            .replace("'", '"'))
    assert attributes["trigger"] == "cli" and attributes["finished"].endswith("Z")
    assert agent.stop() == 0
    ha.close()
