"""Driver discovery through the ``store_edge_agent.drivers`` entry-point group."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib import metadata

from agent.driver import Driver
from agent.errors import DriverLoadError

GROUP = "store_edge_agent.drivers"
ALLOW_ENV = "AGENT_DRIVERS_ALLOW"
"""Comma-separated driver names; when set, only these load (like Datasette's plugin allowlist)."""

log = logging.getLogger(__name__)


@dataclass
class DriverInfo:
    """One installed driver as ``agent drivers`` shows it."""

    name: str
    package: str
    package_version: str
    entry_point: str
    cls: type[Driver] | None = None
    """The driver class once ``load()`` imported it."""
    error: str | None = None
    allowed: bool = True
    _entry: metadata.EntryPoint | None = field(default=None, repr=False, compare=False)

    def load(self) -> type[Driver] | None:
        """Import the driver's module (once) and return its class; a failure is recorded in
        ``error`` and logged, never raised. Importing only the drivers a config uses keeps the
        others' libraries (pymodbus, gpiozero, pyserial...) out of the agent's memory."""
        if self.cls is not None or self.error is not None or self._entry is None:
            return self.cls
        try:
            cls = self._entry.load()
        except Exception as err:  # a vendor package may fail in any way on import
            self.error = f"import failed: {type(err).__name__}: {err}"
            log.warning("driver %r from %s skipped: %s", self.name, self.package, self.error)
            return None
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            self.error = f"{self.entry_point} is not a subclass of agent.driver.Driver"
            return None
        self.cls = cls
        return cls

    @property
    def loads(self) -> bool:
        return self.load() is not None


def _allowlist(allow: list[str] | None) -> set[str] | None:
    env = os.environ.get(ALLOW_ENV)
    if env is not None:
        return {name.strip() for name in env.split(",") if name.strip()}
    return set(allow) if allow is not None else None


def discover(allow: list[str] | None = None) -> dict[str, DriverInfo]:
    """Every installed driver, from the packages' metadata; none is imported yet (``load()``).

    ``allow`` (``[agent] drivers``) or the ``AGENT_DRIVERS_ALLOW`` variable limits which load.
    """
    allowed = _allowlist(allow)
    found: dict[str, DriverInfo] = {}
    for ep in metadata.entry_points(group=GROUP):
        dist = ep.dist
        info = DriverInfo(
            name=ep.name,
            package=dist.name if dist else "?",
            package_version=dist.version if dist else "?",
            entry_point=ep.value,
            _entry=ep,
        )
        if ep.name in found:
            info.error = f"name also registered by {found[ep.name].package}; ignored"
            log.warning("driver %r from %s: %s", ep.name, info.package, info.error)
            continue
        found[ep.name] = info
        if allowed is not None and ep.name not in allowed:
            info.allowed = False
            info.error = f"not in the driver allowlist ([agent] drivers or {ALLOW_ENV})"
    return found


def load(name: str, drivers: dict[str, DriverInfo]) -> type[Driver]:
    """The driver class called ``name``.

    Raises:
        DriverLoadError: not installed, not allowed, or failed to import.
    """
    info = drivers.get(name)
    if info is None:
        known = ", ".join(sorted(drivers)) or "none"
        raise DriverLoadError(f"no driver called {name!r} is installed (installed: {known})")
    cls = info.load()
    if cls is None:
        raise DriverLoadError(f"driver {name!r} from {info.package} cannot be used: {info.error}")
    return cls
