"""Allow-listed commands of the running agent, shared by MQTT requests and the control socket."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class CommandError(AgentError, ValueError):
    """A request that is malformed, not allowed, or failed; the message goes back to the caller."""


class Commands:
    """Name -> handler. Only registered names can be called, from anywhere."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        self._handlers[name] = handler

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    async def call(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run command ``name``.

        Raises:
            CommandError: unknown command, or the handler refused the parameters.
        """
        handler = self._handlers.get(name)
        if handler is None:
            raise CommandError(f"unknown command {name!r}; allowed: {', '.join(self.names)}")
        return await handler(params)


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on one request (``[limits]``): payload bytes, ``id`` characters, JSON depth."""

    max_bytes: int = 64 * 1024
    id_max: int = 128
    max_depth: int = 16


def json_depth(payload: bytes, limit: int) -> int:
    """The nesting depth of a JSON text, counted without parsing (so a 400k-deep document
    costs one pass, not a recursion); stops counting once past ``limit``."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in payload:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_request(payload: bytes, limits: RequestLimits | None = None
                  ) -> tuple[str | None, dict[str, Any]]:
    """The ``id`` and the parameters of a JSON request, within ``limits``.

    Raises:
        CommandError: too large, too deep, not a JSON object, or without a string ``id`` of at
            most ``limits.id_max`` characters. The message never repeats the request.
    """
    limits = limits or RequestLimits()
    if len(payload) > limits.max_bytes:
        raise CommandError(f"request is {len(payload)} bytes, more than limits.request_max_bytes "
                           f"{limits.max_bytes}: refused unread")
    if json_depth(payload, limits.max_depth) > limits.max_depth:
        raise CommandError(f"request is nested deeper than limits.request_max_depth "
                           f"{limits.max_depth}")
    try:
        request = json.loads(payload or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CommandError(f"request is not JSON: {err}") from err
    if not isinstance(request, dict):
        raise CommandError("request must be a JSON object with an \"id\"")
    request_id = request.get("id")
    if not isinstance(request_id, str | int) or request_id == "":
        raise CommandError("request needs an \"id\" (string)")
    request_id = str(request_id)
    if len(request_id) > limits.id_max:
        raise CommandError(f"request \"id\" is {len(request_id)} characters, more than "
                           f"limits.request_id_max {limits.id_max}")
    return request_id, request


class RateLimit:
    """A token bucket: ``per_minute`` requests a minute, bursts of up to as many."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._tokens = self.capacity
        self._at = time.monotonic()
        self.refused = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Take a token if there is one (safe from any thread)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            self.refused += 1
            return False
