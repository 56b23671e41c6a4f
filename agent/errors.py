"""The agent's exception tree: one root, each also subclassing the matching built-in."""

from __future__ import annotations

from pathlib import Path


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError, ValueError):
    """The configuration file or an override is invalid.

    ``problems`` holds one readable line per problem, each naming the file and key path.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class EventError(AgentError, ValueError):
    """A driver emitted an event outside the catalogue or with invalid data."""


class DriverLoadError(AgentError, ImportError):
    """A driver's entry point could not be imported or is not a Driver class."""


class ControlError(AgentError, ConnectionError):
    """The running agent could not be reached over its control socket."""


class AgentNotRunning(ControlError):
    """No agent listens on the control socket: no socket file, or a stale one."""


class InstanceLocked(AgentError, RuntimeError):
    """Another process runs on the same ``data_dir`` (it holds ``<data_dir>/agent.lock``)."""

    def __init__(self, data_dir: Path, pid: int | None, role: str = "") -> None:
        self.data_dir = data_dir
        self.pid = pid
        self.role = role
        who = f"PID {pid}" if pid is not None else "another process (PID not yet written)"
        what = f" ({role})" if role else ""
        super().__init__(f"data_dir {data_dir} is in use by {who}{what}: one agent per "
                         "data_dir")
