"""``agent asyncapi``: the AsyncAPI 3.0 document of the MQTT topics, from the event schema and
the models of the retained and request/response payloads below."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent import __version__
from agent.events import CATALOGUE, ID_PATTERN, TIME_PATTERN, json_schema
from agent.runtime import REMOTE_COMMANDS

__all__ = ["asyncapi_document"]

COMPONENTS = "#/components/schemas/"
MQTT_BINDING = "0.2.0"
Timestamp = Annotated[str, Field(pattern=TIME_PATTERN, json_schema_extra={"format": "date-time"},
                                 description="RFC 3339 UTC with milliseconds")]


class _Open(BaseModel):
    # Payloads may grow (new status fields, driver state): consumers ignore what they don't know.
    model_config = ConfigDict(extra="allow")


class DeviceState(_Open):
    """``state/<device_id>``: the device's health; drivers add their own fields (their READMEs)."""

    online: bool
    since: Timestamp | None = Field(description="when it last went online or offline")
    reason: str | None = Field(default=None, description="why it is offline")


class StatusBroker(_Open):
    connected: bool
    host: str = Field(description="HOST:PORT of the broker in use (or being tried)")
    brokers: list[str] = Field(description="mqtt.hosts in the order tried, the preferred first")
    published: int
    reconnects: int
    rate_per_s: float
    last_error: str | None
    refusal: str | None = Field(description="what the broker's access control refused, in words")
    cert_days_left: float | None = Field(description="days until the client certificate expires")


class StatusBuffer(_Open):
    depth: int
    bytes: int
    oldest_age_s: float | None
    next_seq: int
    dropped: dict[str, int] = Field(description="events dropped so far, by reason")
    last_error: str | None


class StatusDevice(_Open):
    driver: str
    driver_version: str
    online: bool
    restarts: int
    finished: bool
    state: dict[str, Any] = Field(description="what state/<device_id> carries")


class SelftestSummary(_Open):
    result: Literal["pass", "fail", "incomplete"] | None = None
    summary: str | None = None
    finished: Timestamp | None = None
    trigger: str | None = None
    run_id: str | None = None
    running: str | None = Field(default=None, description="a test runs now, by this trigger")


class Postponed(_Open):
    reason: str
    retry_at: Timestamp | None


class SelftestPlan(_Open):
    schedule: str = Field(description="cron, local time")
    next: Timestamp | None
    postponed: Postponed | None = None


class StatusOutputDrop(_Open):
    count: int
    first_seq: int | None
    last_seq: int | None
    reason: str


class StatusOutput(_Open):
    """One ``[outputs.<name>]`` (docs/vms.md)."""

    kind: str
    target: str
    connected: bool = Field(description="the last delivery attempt worked")
    cursor: int = Field(description="the last seq delivered or skipped")
    lag_events: int
    lag_s: float
    delivered: int
    skipped: int
    dropped: int = Field(description="events the buffer dropped before this output had them")
    last_error: str | None
    last_drop: StatusOutputDrop | None


class Status(_Open):
    """``agent/status``: what ``agent status --json`` shows, refreshed every status_interval."""

    version: str
    storeid: str
    bootid: str
    config_hash: str
    started: Timestamp
    uptime_s: float
    clocksynced: bool
    broker: StatusBroker
    buffer: StatusBuffer
    devices: dict[str, StatusDevice]
    last_selftest: dict[str, SelftestSummary]
    selftest_schedule: dict[str, SelftestPlan]
    outputs: dict[str, StatusOutput] = Field(default_factory=dict,
                                             description="present when outputs are configured")


class SelftestStepReport(_Open):
    step: str
    result: Literal["pass", "fail", "skip"]
    detail: str
    latency_ms: float | None
    warning: bool = Field(default=False, description="present when it passed with a warning")


class SelftestReport(_Open):
    """``agent/selftest/<exit>``: the exit's last self-test report (docs/selftest.md)."""

    exit: str = Field(pattern=ID_PATTERN)
    run_id: str
    result: Literal["pass", "fail", "incomplete"]
    summary: str
    trigger: str = Field(description="cli, schedule or remote")
    walk: bool
    started: Timestamp
    finished: Timestamp
    duration_ms: float
    devices: dict[str, str] = Field(description="role (eas, door, ...) -> device id")
    steps: list[SelftestStepReport]


class Request(_Open):
    """``agent/request/<command>``: ``status`` takes only the id; ``selftest`` an ``exit``."""

    id: str | int = Field(description="echoed in the response")
    exit: str | None = Field(default=None, description="selftest: one exit (default: all)")


class Response(_Open):
    """``agent/response/<command>``, or the request's MQTT 5 Response Topic when it is under
    ``agent/response/`` (another one gets an error on the default topic)."""

    id: str | None = Field(description="the request's id; null when it had none or it was "
                           "refused unread (too large, too deep, an id too long)")
    status: Literal["ok", "error"]
    error: str | None = Field(default=None, description="what was wrong (status error)")
    retry_at: str | None = Field(default=None, description="a refused self-test: when the "
                                 "next is allowed (RFC 3339)")


PAYLOADS: tuple[type[BaseModel], ...] = (DeviceState, Status, SelftestReport, Request, Response)


def _retarget(node: Any) -> Any:
    """The event schema with its ``$defs`` references pointing into ``components/schemas``."""
    if isinstance(node, dict):
        return {k: (v.replace("#/$defs/", COMPONENTS) if k == "$ref" else _retarget(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_retarget(v) for v in node]
    return node


def _schemas() -> dict[str, Any]:
    event = _retarget(json_schema())
    schemas: dict[str, Any] = event.pop("$defs")
    for key in ("$schema", "$id"):  # an $id would move the base of the references above
        event.pop(key)
    schemas["Event"] = event
    for model in PAYLOADS:
        schema = model.model_json_schema(ref_template=COMPONENTS + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _param(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, **extra}


def _channel(address: str, message: str, description: str, **params: dict[str, Any]) -> dict:
    return {"address": "{topicRoot}/{storeId}/" + address, "description": description,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
            "parameters": {"topicRoot": {"$ref": "#/components/parameters/topicRoot"},
                           "storeId": {"$ref": "#/components/parameters/storeId"}, **params}}


def _message(name: str, schema: str, summary: str, content_type: str = "application/json",
             **extra: Any) -> dict[str, Any]:
    return {"name": name, "title": name, "summary": summary, "contentType": content_type,
            "payload": {"$ref": COMPONENTS + schema},
            "bindings": {"mqtt": {"contentType": content_type, "payloadFormatIndicator": 1,
                                  "bindingVersion": MQTT_BINDING}}, **extra}


def _send(channel: str, summary: str, *, retain: bool) -> dict[str, Any]:
    return {"action": "send", "summary": summary, "channel": {"$ref": f"#/channels/{channel}"},
            "bindings": {"mqtt": {"qos": 1, "retain": retain, "bindingVersion": MQTT_BINDING}}}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one agent's topics (DESIGN.md "MQTT topics"): what it
    sends (events, state, availability, status, self-test reports) and the requests it
    answers, a reply pattern correlated by the request's ``id`` (and MQTT 5 correlation data)."""
    device = {"$ref": "#/components/parameters/deviceId"}
    command = _param("an allow-listed command", enum=list(REMOTE_COMMANDS))
    return {
        "asyncapi": "3.0.0",
        "id": "urn:store-edge-agent:asyncapi",
        "info": {
            "title": "store-edge-agent",
            "version": __version__,
            "description": "One agent per store publishes its loss-prevention events "
                           "(CloudEvents 1.0, structured JSON mode), device states, status and "
                           "exit self-test reports, and answers allow-listed requests.",
        },
        "defaultContentType": "application/json",
        "servers": {"broker": {"host": "localhost:1883", "protocol": "mqtt",
                               "protocolVersion": "5",
                               "description": "the broker of [mqtt] host and port; MQTT 3.1.1 "
                                              "carries the same payloads without properties"}},
        "channels": {
            "events": _channel("events/{deviceId}/{eventType}", "event",
                               "One event per message, in seq order per agent.",
                               deviceId=device, eventType=_param(
                                   "the event type", enum=list(CATALOGUE))),
            "state": _channel("state/{deviceId}", "deviceState",
                              "The device's health and latest state (retained).",
                              deviceId=device),
            "availability": _channel("agent/availability", "availability",
                                     "online while the agent is connected; offline is its "
                                     "last will (retained)."),
            "status": _channel("agent/status", "status", "The agent's status (retained)."),
            "selftest": _channel("agent/selftest/{exit}", "selftestReport",
                                 "The exit's last self-test report (retained).",
                                 exit=_param("the exit name", examples=["exit1"])),
            "request": _channel("agent/request/{command}", "request",
                                "Requests to the agent; anything not allow-listed is refused.",
                                command=command),
            "response": _channel("agent/response/{command}", "response",
                                 "Answers, unless the request named an MQTT 5 Response Topic.",
                                 command=command),
        },
        "operations": {
            "sendEvent": _send("events", "an event, committed to the buffer first", retain=False),
            "sendState": _send("state", "a device's state when it changes", retain=True),
            "sendAvailability": _send("availability", "online / offline (last will)",
                                      retain=True),
            "sendStatus": _send("status", "the status, every status_interval", retain=True),
            "sendSelftestReport": _send("selftest", "the report when a self-test ends",
                                        retain=True),
            "answerRequest": {
                "action": "receive",
                "summary": "a request; the response carries the request's id",
                "channel": {"$ref": "#/channels/request"},
                "bindings": {"mqtt": {"qos": 1, "bindingVersion": MQTT_BINDING}},
                "reply": {
                    "channel": {"$ref": "#/channels/response"},
                    "address": {"location": "$message.header#/responseTopic",
                                "description": "MQTT 5 Response Topic of the request when it "
                                               "has one under agent/response/, else "
                                               "agent/response/<command>"},
                },
            },
        },
        "components": {
            "schemas": _schemas(),
            "parameters": {
                "topicRoot": _param("[mqtt] topic_root", default="retail"),
                "storeId": _param("[agent] store_id", examples=["0042"]),
                "deviceId": _param("a device id ([a-z0-9][a-z0-9_-]{0,62}; agent for the "
                                   "agent itself)", examples=["exit1-eas", "agent"]),
            },
            "messages": {
                "event": _message("event", "Event", "A CloudEvents 1.0 event (agent schema)",
                                  "application/cloudevents+json"),
                "deviceState": _message("deviceState", "DeviceState", "A device's state"),
                "availability": {
                    "name": "availability", "title": "availability", "contentType": "text/plain",
                    "summary": "online or offline",
                    "payload": {"type": "string", "enum": ["online", "offline"]},
                },
                "status": _message("status", "Status", "The agent's status"),
                "selftestReport": _message("selftestReport", "SelftestReport",
                                           "An exit's last self-test report"),
                "request": _message(
                    "request", "Request", "A request", correlationId={
                        "location": "$message.payload#/id",
                        "description": "echoed as the response's id; MQTT 5 correlation data "
                                       "is echoed too"}),
                "response": _message(
                    "response", "Response", "The answer to a request",
                    correlationId={"location": "$message.payload#/id"}),
            },
        },
    }
