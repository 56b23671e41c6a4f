"""``agent tail``: subscribe to the store's topics and print one readable line per event, or
JSON Lines (``--raw``)."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho

from agent.config import Settings
from agent.mqtt import Topics, connect_args, make_client

LINE_BUDGET = 160
"""Characters of an event's ``key=value`` fields on its line; whole fields only, the rest counted
(``--raw`` has all). States and other messages show every field: they are asked for."""
CLOCK_NOTE = ("clock?: the agent's clock was not NTP-synchronised when it made the event "
              "(clocksynced=false); its time may be off")
RETAINED_KINDS = ("state/", "agent/status", "agent/selftest/")
"""Retained topics shown only with ``--states`` (``agent/availability`` is always shown)."""


def _value(value: Any) -> str:
    return value if isinstance(value, str) and value and " " not in value else \
        json.dumps(value, separators=(",", ":"))


def fields(data: dict[str, Any], *, skip: tuple[str, ...] = (), budget: int | None = None) -> str:
    """``key=value`` pairs; a value is never cut. With a ``budget`` (characters), the fields
    that do not fit are counted instead (``+2 more``)."""
    out: list[str] = []
    used = 0
    items = [(k, v) for k, v in data.items() if k not in skip]
    for i, (key, value) in enumerate(items):
        text = f"{key}={_value(value)}"
        if out and budget is not None and used + len(text) > budget:
            out.append(f"+{len(items) - i} more")
            break
        out.append(text)
        used += len(text) + 1
    return " ".join(out)


def format_event(env: dict[str, Any]) -> str:
    """``18:38:08.123 exit1-eas  eas.alarm  direction=out level=3 [exit1] #42``."""
    when = str(env.get("time", ""))[11:23]
    shown = fields(env.get("data") or {}, skip=("raw",), budget=LINE_BUDGET)
    flags = []
    if env.get("subject"):
        flags.append(f"[{env['subject']}]")
    if env.get("test"):
        flags.append("TEST")
    if env.get("clocksynced") is False:
        flags.append("clock?")
    return (f"{when} {env.get('deviceid', '?'):<14} {env.get('type', '?'):<22} {shown} "
            f"{' '.join(flags)} #{env.get('seq')}").rstrip()


def format_message(topics: Topics, topic: str, payload: bytes, *, states: bool = False) -> str | None:
    """One line for a message, or None for one that is not shown (retained states and
    reports unless ``states``)."""
    rest = topic.removeprefix(topics.root + "/")
    try:
        body = json.loads(payload) if payload else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if rest.startswith("events/") and isinstance(body, dict):
        return format_event(body)
    if rest.startswith(RETAINED_KINDS) and not states:
        return None
    return f"{'':12} {_describe(rest, body, payload)}"


def _describe(rest: str, body: Any, payload: bytes) -> str:
    if rest.startswith("state/"):
        text = f"state of {rest[6:]}: {fields(body) if isinstance(body, dict) else '(cleared)'}"
    elif rest == "agent/status":
        text = f"agent status updated ({len(payload)} bytes; `agent status` shows it)"
    elif rest.startswith("agent/selftest/") and isinstance(body, dict):
        text = (f"self-test of {rest[15:]}: {str(body.get('result', '?')).upper()} "
                f"({body.get('summary', '')})")
    elif isinstance(body, dict):
        text = f"{rest}: {fields(body)}"
    else:
        text = f"{rest}: {payload.decode(errors='replace')}"
    return text


def raw_line(topic: str, payload: bytes, retained: bool) -> str:
    """One JSON object per message (JSON Lines): topic, retained flag and the whole payload
    (as JSON when it is JSON, else as text)."""
    try:
        body: Any = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = payload.decode(errors="replace")
    return json.dumps({"topic": topic, "retained": retained, "payload": body},
                      separators=(",", ":"))


def tail(settings: Settings, *, raw: bool = False, count: int | None = None,
         timeout: float | None = None, states: bool = False) -> int:
    """Print events until interrupted (or ``count`` events, or ``timeout`` seconds)."""
    topics = Topics.of(settings.mqtt, settings.agent.store_id)
    client = make_client(settings.mqtt, f"agent-tail-{uuid.uuid4().hex[:8]}", paho.Client)
    done = threading.Event()
    seen = 0

    def on_connect(c: paho.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        if reason.is_failure:
            print(f"agent tail: broker refused the connection: {reason}", file=sys.stderr)
            done.set()
            return
        c.subscribe(f"{topics.root}/#", qos=1)

    def on_subscribe(c: paho.Client, u: Any, mid: Any, reasons: Any, p: Any) -> None:
        # once the broker confirmed: from now on nothing published to the store is missed
        print(f"listening on {topics.root}/# at {where}",
              file=sys.stderr, flush=True)

    explained = False

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        nonlocal seen, explained
        is_event = "/events/" in msg.topic
        if raw:
            print(raw_line(msg.topic, bytes(msg.payload), bool(msg.retain)), flush=True)
        else:
            line = format_message(topics, msg.topic, bytes(msg.payload), states=states)
            if line is not None:
                if not explained and is_event and " clock? #" in line:
                    explained = True
                    print(CLOCK_NOTE, file=sys.stderr, flush=True)
                print(line, flush=True)
        if is_event:
            seen += 1
            if count is not None and seen >= count:
                done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    for host, port in settings.mqtt.brokers():  # the first one that answers
        where = f"{host}:{port}"
        try:
            client.connect(**connect_args(settings.mqtt, (host, port)))  # type: ignore[arg-type]
            break
        except OSError as err:
            print(f"agent tail: broker {where} unreachable: {err}", file=sys.stderr)
    else:
        return 3
    client.loop_start()
    deadline = time.monotonic() + timeout if timeout else None
    try:
        while not done.wait(0.2):
            if deadline and time.monotonic() > deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
