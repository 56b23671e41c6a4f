"""The local web page for phones: exit status, live events, self-tests and the floor walk."""

from agent.web.server import WebServer

__all__ = ["WebServer"]
