"""The CloudEvents envelope, the v1 event catalogue and the JSON Schema built from them."""

from __future__ import annotations

import json
import os
import random
import re
import time as _time
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import EventError

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Device ids and exit names; ``agent`` is reserved for the agent's own events."""
ID_RE = re.compile(ID_PATTERN)
AGENT_DEVICE = "agent"


class _Data(BaseModel):
    # Fields may grow (DESIGN.md): a vendor may add data, but the catalogue's fields are checked.
    model_config = ConfigDict(extra="allow")


class _NoData(_Data):
    pass


class EasAlarm(_Data):
    direction: Literal["in", "out", "unknown"] = "unknown"
    pedestal: str | int | None = None
    level: float | None = None
    raw: str | None = None


class EasInterference(_Data):
    inhibit: bool
    level: float | None = None
    raw: str | None = None


class EasFault(_Data):
    reason: str
    raw: str | None = None


class EasPeopleCount(_Data):
    in_: int = Field(alias="in", ge=0)
    out: int = Field(ge=0)
    interval_s: float | None = None
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class DoorHeldOpen(_Data):
    open_for_s: float


class DoorInputTrouble(_Data):
    condition: Literal["open", "short", "tamper"]


class CameraMotion(_Data):
    active: bool
    topic: str
    source: str | None = None


class CameraTamper(_Data):
    active: bool
    kind: str
    topic: str


class CameraInput(_Data):
    input: str
    active: bool


class CameraSnapshot(_Data):
    path: str
    sha256: str
    bytes: int
    trigger_id: str


class DeviceOffline(_Data):
    reason: str


class AgentLifecycle(_Data):
    version: str
    config_hash: str


class ConfigReloaded(_Data):
    config_hash: str = Field(description="hash of the configuration now in force (as `agent "
                             "config check` prints it)")
    changed: list[str] = Field(description="device ids and sections that changed, e.g. "
                               "['exit1-door', 'mqtt', 'exits.exit1']; empty when none did")


class EventsDropped(_Data):
    count: int | None = Field(description="events dropped; null when unknown (a corrupt buffer)")
    first_seq: int | None
    last_seq: int | None
    reason: str


class _SelftestOf(_Data):
    exit: str
    run_id: str


class SelftestRun(_SelftestOf):
    trigger: str | None = Field(default=None, description="cli, schedule, remote or web")


class SelftestOutcome(SelftestRun):
    result: Literal["pass", "fail", "incomplete"] | None = Field(
        default=None, description="incomplete: no step failed, but the alarm chain was not "
        "tested (no test tag and no walk test)")
    summary: str | None = None


class SelftestStep(_SelftestOf):
    step: str
    result: Literal["pass", "fail", "skip"]
    detail: str = ""
    latency_ms: float | None = None
    warning: bool = Field(default=False, description="passed with a warning (broker "
                          "unreachable, clock not synchronised)")


CATALOGUE: dict[str, type[_Data]] = {
    "eas.alarm": EasAlarm,
    "eas.interference": EasInterference,
    "eas.fault": EasFault,
    "eas.people_count": EasPeopleCount,
    "door.opened": _NoData,
    "door.closed": _NoData,
    "door.held_open": DoorHeldOpen,
    "door.forced": _NoData,
    "door.input_trouble": DoorInputTrouble,
    "camera.motion": CameraMotion,
    "camera.tamper": CameraTamper,
    "camera.input": CameraInput,
    "camera.snapshot": CameraSnapshot,
    "device.online": _NoData,
    "device.offline": DeviceOffline,
    "agent.started": AgentLifecycle,
    "agent.stopping": AgentLifecycle,
    "agent.clock_synced": _NoData,
    "agent.config_reloaded": ConfigReloaded,
    "agent.events_dropped": EventsDropped,
    "selftest.started": SelftestRun,
    "selftest.step": SelftestStep,
    "selftest.passed": SelftestOutcome,
    "selftest.failed": SelftestOutcome,
}
"""Event type -> model of its ``data`` (catalogue v1, DESIGN.md)."""

# Priority when the buffer is full: lowest is dropped first (DESIGN.md "Durability").
PRIORITY_TELEMETRY, PRIORITY_NORMAL, PRIORITY_FAULT, PRIORITY_ALARM = 0, 1, 2, 3
PRIORITIES = range(PRIORITY_TELEMETRY, PRIORITY_ALARM + 1)
"""Lowest first: the order in which a full buffer (or hold) drops."""
_PRIORITY = {
    "eas.people_count": PRIORITY_TELEMETRY,
    "eas.fault": PRIORITY_FAULT,
    "eas.interference": PRIORITY_FAULT,
    "door.input_trouble": PRIORITY_FAULT,
    "door.held_open": PRIORITY_FAULT,
    "camera.tamper": PRIORITY_FAULT,
    "device.offline": PRIORITY_FAULT,
    "device.online": PRIORITY_FAULT,
    "eas.alarm": PRIORITY_ALARM,
    "door.forced": PRIORITY_ALARM,
    "agent.events_dropped": PRIORITY_ALARM,
}


def priority_of(event_type: str) -> int:
    """Buffer priority of ``event_type``: alarms and self-test results are kept longest."""
    if event_type.startswith("selftest."):
        return PRIORITY_ALARM
    if event_type.startswith("agent."):
        return PRIORITY_FAULT
    return _PRIORITY.get(event_type, PRIORITY_NORMAL)


_REQUIRED = {name: tuple((field, info.alias or field) for field, info in model.model_fields.items()
                         if info.is_required())
             for name, model in CATALOGUE.items()}
"""Per type, the required fields (attribute, JSON name): kept as null when None."""


def validate_data(event_type: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """Check ``data`` against the catalogue and return its JSON form.

    Raises:
        EventError: ``event_type`` is not in the catalogue, or ``data`` does not fit it.
    """
    model_type = CATALOGUE.get(event_type)
    if model_type is None:
        raise EventError(
            f"event type {event_type!r} is not in the catalogue; known: {', '.join(CATALOGUE)}"
        )
    try:
        # The model's own validator and serialiser: the same checks as ``model_validate`` and
        # ``model_dump``, without their Python wrappers (half the time per event).
        model = model_type.__pydantic_validator__.validate_python(data or {})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in err.errors()
        )
        raise EventError(f"invalid data for {event_type}: {problems}") from err
    dumped: dict[str, Any] = model_type.__pydantic_serializer__.to_python(
        model, mode="json", by_alias=True, exclude_none=True)
    # A required field that may be null (``count`` of a drop whose size is unknown) is kept as
    # null: leaving it out would make the payload invalid against the schema.
    for field, key in _REQUIRED[event_type]:
        if getattr(model, field) is None:
            dumped[key] = None
    return dumped


_random = random.Random(os.urandom(32))
"""The random bits of ids: seeded from the OS once (an ``os.urandom`` call per event costs a
system call; ids need to be unique, not secret)."""


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort roughly by emission."""
    ms = _time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = _random.getrandbits(80)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{value:032x}"  # formatted directly: uuid.UUID() costs as much as the rest of emit()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_second_cache: tuple[int, str] = (-1, "")


def rfc3339(when: datetime | float | None = None) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-23T18:38:08.123Z``."""
    global _second_cache
    if when is None:
        when = _time.time()
    if isinstance(when, int | float):
        # Every event is stamped: format each second once, then only the milliseconds.
        second = int(when // 1)
        cached_second, prefix = _second_cache
        if second != cached_second:
            prefix = _time.strftime("%Y-%m-%dT%H:%M:%S.", _time.gmtime(second))
            _second_cache = (second, prefix)
        return f"{prefix}{int((when - second) * 1000):03d}Z"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
"""RFC 3339 UTC with milliseconds, the only time format the agent publishes."""
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class Envelope(BaseModel):
    """One event as published: CloudEvents 1.0, structured JSON mode (DESIGN.md)."""

    model_config = ConfigDict(extra="forbid", title="Event")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(pattern=UUID_PATTERN,
                    description="UUIDv7, stable across retries and restarts: the dedupe key")
    source: str = Field(pattern=r"^urn:store-edge-agent:[^:]+:[a-z0-9][a-z0-9_-]{0,62}$")
    type: str
    time: str = Field(pattern=TIME_PATTERN, json_schema_extra={"format": "date-time"},
                      description="RFC 3339 UTC with milliseconds: when the observation was made")
    subject: str | None = Field(default=None, description="the exit or zone, when known")
    datacontenttype: Literal["application/json"] = "application/json"
    storeid: str
    deviceid: str = Field(pattern=ID_PATTERN)
    seq: int = Field(ge=1, description="per agent, in buffer-commit order, never reused or skipped")
    bootid: str = Field(pattern=UUID_PATTERN, description="this agent process start")
    clocksynced: bool
    test: bool = False
    data: dict[str, Any]


def parse_envelope(payload: bytes | str) -> Envelope:
    """Parse and check one published event, including its ``data`` against the catalogue.

    Raises:
        EventError: the payload is not a valid event.
    """
    try:
        env = Envelope.model_validate_json(payload)
    except ValidationError as err:
        raise EventError(f"invalid envelope: {err}") from err
    validate_data(env.type, env.data)
    return env


SCHEMA_ID = "urn:store-edge-agent:schema:events:v1"


def json_schema() -> dict[str, Any]:
    """One JSON Schema 2020-12 document that validates a whole event (what ``agent schema``
    prints): the envelope, ``type`` from the catalogue, and ``data`` by the ``$defs`` entry of
    its type, chosen with ``if``/``then``."""
    defs: dict[str, Any] = {}
    envelope = Envelope.model_json_schema(ref_template="#/$defs/{model}")
    defs.update(envelope.pop("$defs", {}))
    envelope["properties"]["type"] = {"enum": list(CATALOGUE), "description": "the event type"}
    by_type = []
    for name, model in CATALOGUE.items():
        data = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs.update(data.pop("$defs", {}))
        data["title"] = f"data of {name}"
        defs[name] = data
        by_type.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                        "then": {"properties": {"data": {"$ref": f"#/$defs/{name}"}}}})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "store-edge-agent event (CloudEvents 1.0, catalogue v1)",
        **{k: v for k, v in envelope.items() if k != "title"},
        "allOf": by_type,
        "$defs": defs,
    }


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, the form every payload is published in.

    orjson: a tenth of the standard library's time per event. What it does not take (an
    integer beyond 64 bits) goes through the standard library, with the same result.
    """
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
