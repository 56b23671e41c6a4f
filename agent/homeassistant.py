"""Home Assistant MQTT discovery (``[homeassistant] discovery = true``): one HA device per store
with each exit's alarm, door and last self-test, and the agent's connectivity."""

from __future__ import annotations

from typing import Any

from agent import __version__
from agent.config import Config
from agent.mqtt import Topics

__all__ = ["discovery_messages"]

ALARM_OFF_AFTER = 30
"""Seconds an exit's alarm entity stays on after an ``eas.alarm`` (events have no "off")."""


def discovery_messages(config: Config) -> list[tuple[str, dict[str, Any]]]:
    """(topic, retained payload) of every discovery config; entities read the agent's own
    topics, nothing is published twice. Nothing when discovery is off."""
    settings = config.settings
    if not settings.homeassistant.discovery:
        return []
    store = settings.agent.store_id
    topics = Topics.of(settings.mqtt, store)
    node = f"store-edge-agent-{store}"
    prefix = settings.homeassistant.prefix
    common = {
        "device": {"identifiers": [node], "name": f"Store {store}",
                   "manufacturer": "store-edge-agent", "model": "store edge agent",
                   "sw_version": __version__},
        "origin": {"name": "store-edge-agent", "sw_version": __version__},
    }
    available = {"availability_topic": topics.availability, "payload_available": "online",
                 "payload_not_available": "offline"}

    def entity(component: str, object_id: str, name: str, **keys: Any) -> tuple[str, dict]:
        return (f"{prefix}/{component}/{node}/{object_id}/config",
                {"name": name, "unique_id": f"{node}-{object_id}", **common, **keys})

    out = [entity("binary_sensor", "agent", "Agent", state_topic=topics.availability,
                  payload_on="online", payload_off="offline", device_class="connectivity",
                  entity_category="diagnostic")]
    for name, ex in sorted(settings.exits.items()):
        if ex.eas:
            # A real alarm turns it on; a self-test's (test: true) does not.
            out.append(entity(
                "binary_sensor", f"{name}_alarm", f"{name} alarm",
                state_topic=topics.event(ex.eas, "eas.alarm"),
                value_template="{{ 'OFF' if value_json.test else 'ON' }}",
                off_delay=ALARM_OFF_AFTER, device_class="safety", **available))
        if ex.door:
            out.append(entity(
                "binary_sensor", f"{name}_door", f"{name} door",
                state_topic=topics.state(ex.door),
                value_template="{{ 'ON' if value_json.door == 'open' else 'OFF' }}",
                device_class="door", **available))
        selftest = topics.selftest(name)
        out.append(entity(
            "sensor", f"{name}_selftest", f"{name} last self-test", state_topic=selftest,
            value_template="{{ value_json.result }}", device_class="enum",
            options=["pass", "fail", "incomplete"], json_attributes_topic=selftest,
            json_attributes_template="{{ {'finished': value_json.finished, 'summary': "
                                     "value_json.summary, 'trigger': value_json.trigger} "
                                     "| tojson }}",
            **available))
    return out
