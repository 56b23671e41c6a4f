"""The local web page for phones: exit status, live events, self-tests and the floor walk.

The server is ``agent.web.server.WebServer``; it is not imported here, so that the CLI (which
adds the ``agent web`` subcommands to every parser) and an agent without the page do not load
aiohttp (13 MiB of RSS, docs/performance.md).
"""

OFF = "the web page is off: set [web] listen in the config file (docs/web.md)"
"""The answer to ``agent web ...`` while the page does not run."""
