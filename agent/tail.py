"""``agent tail``: subscribe to the store's topics and print one readable line per event."""

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

_MAIN_FIELDS = 4


def format_event(env: dict[str, Any]) -> str:
    """``18:38:08.123 exit1-eas  eas.alarm  direction=out level=3 [exit1] #42``."""
    when = str(env.get("time", ""))[11:23]
    data = env.get("data") or {}
    fields = " ".join(f"{k}={v}" for k, v in list(data.items())[:_MAIN_FIELDS] if k != "raw")
    flags = []
    if env.get("subject"):
        flags.append(f"[{env['subject']}]")
    if env.get("test"):
        flags.append("TEST")
    if env.get("clocksynced") is False:
        flags.append("clock?")
    return (f"{when} {env.get('deviceid', '?'):<14} {env.get('type', '?'):<22} {fields} "
            f"{' '.join(flags)} #{env.get('seq')}").rstrip()


def format_message(topics: Topics, topic: str, payload: bytes, *, states: bool = False) -> str | None:
    """One line for a message, or None for one that is not shown (states unless asked)."""
    rest = topic.removeprefix(topics.root + "/")
    try:
        body = json.loads(payload) if payload else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if rest.startswith("events/") and isinstance(body, dict):
        return format_event(body)
    if rest.startswith("state/"):
        if not states:
            return None
        return f"{'':12} state of {rest[6:]}: {json.dumps(body) if body else '(cleared)'}"
    text = payload.decode(errors="replace")
    if rest == "agent/status":
        return f"{'':12} agent status updated ({len(payload)} bytes)" if states else None
    return f"{'':12} {rest}: {text[:200]}"


def tail(settings: Settings, *, raw: bool = False, count: int | None = None,
         timeout: float | None = None, states: bool = False) -> int:
    """Print events until interrupted (or ``count`` events, or ``timeout`` seconds)."""
    topics = Topics.of(settings.mqtt, settings.agent.store_id)
    client = make_client(settings.mqtt, f"agent-tail-{uuid.uuid4().hex[:8]}")
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

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        nonlocal seen
        is_event = "/events/" in msg.topic
        if raw:
            print(msg.payload.decode(errors="replace") if is_event else f"{msg.topic} "
                  f"{msg.payload.decode(errors='replace')[:200]}", flush=True)
        else:
            line = format_message(topics, msg.topic, bytes(msg.payload), states=states)
            if line is not None:
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
