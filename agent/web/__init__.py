"""The local web page for phones: exit status, live events, self-tests and the floor walk.

The server is ``agent.web.server.WebServer``; it is not imported here, so that the agent and the
``agent web`` commands load aiohttp only when the page is on.
"""

OFF = "the web page is off: set [web] listen in the config file (docs/web.md)"
"""The answer to ``agent web ...`` while the page does not run."""
