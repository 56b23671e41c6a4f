"""Allow-listed commands of the running agent, shared by MQTT requests and the control socket."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
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


def parse_request(payload: bytes) -> tuple[str | None, dict[str, Any]]:
    """The ``id`` and the parameters of a JSON request.

    Raises:
        CommandError: not a JSON object, or without a string ``id``.
    """
    try:
        request = json.loads(payload or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CommandError(f"request is not JSON: {err}") from err
    if not isinstance(request, dict):
        raise CommandError("request must be a JSON object with an \"id\"")
    request_id = request.get("id")
    if not isinstance(request_id, str | int) or request_id == "":
        raise CommandError("request needs an \"id\" (string)")
    return str(request_id), request
