"""The driver SDK: the base class a hardware driver subclasses, its config model and context."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, overload

from pydantic import BaseModel, ConfigDict

from agent.errors import AgentError
from agent.events import rfc3339
from agent.units import format_clock, format_duration

if TYPE_CHECKING:
    from agent.config import Settings

__all__ = [
    "ActionError",
    "Conformance",
    "Driver",
    "DriverConfig",
    "DriverContext",
    "HealthCheck",
    "HostProblem",
    "missing_serial_port",
    "timestamp",
]


@overload
def timestamp(epoch: float) -> str: ...
@overload
def timestamp(epoch: None) -> None: ...
def timestamp(epoch: float | None) -> str | None:
    """A time for the retained state: RFC 3339 UTC with milliseconds, like every time the agent
    publishes (``None`` stays ``None``: never happened)."""
    return None if epoch is None else rfc3339(epoch)


CONDITION_TYPES: dict[str, tuple[str, str | None]] = {
    "eas.interference": ("interference", "inhibit"),
    "eas.fault": ("fault", None),
    "camera.tamper": ("tamper", "active"),
}
"""Event types that report a condition: type -> (name, the data flag that says it is active;
``None``: every such event is active)."""
FAULT_HOLD = 300.0
"""Seconds an ``eas.fault`` keeps a device out of its resting state."""


class DriverConfig(BaseModel):
    """Base of a driver's ``[devices.<id>]`` model. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def resources(self) -> list[str]:
        """Exclusive resources this device claims, e.g. ``["gpio:17"]`` or ``["serial:/dev/ttyUSB0"]``.

        Two devices claiming one resource is a configuration error naming both.
        """
        return []


@dataclass(frozen=True)
class HealthCheck:
    """One read-only check a self-test shows: ``serial port open``, ``clock offset``..."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class HostProblem:
    """Something this machine lacks for a configured device (``Driver.check_host``).

    ``fatal``: the device cannot work here as configured (no GPIO library): ``agent config
    check`` and ``agent run`` exit 2. Otherwise a warning: it may be fine later (a USB serial
    adapter that is not plugged in yet).
    """

    device_id: str
    message: str
    fatal: bool = True


def missing_serial_port(device_id: str, port: str | None) -> list[HostProblem]:
    """A warning when ``port`` is a device path (not a ``socket://``-style URL) that does not
    exist now. Not fatal: the driver waits for an adapter that is plugged in later."""
    if not port or "://" in port or Path(port).exists():
        return []
    return [HostProblem(device_id, f"serial port {port} does not exist now; the agent waits for "
                        "it (check the cable and the name: ls -l /dev/serial/by-id/ "
                        "/dev/serial/by-path/; docs/service.md, serial ports)", fatal=False)]


@dataclass(frozen=True)
class Conformance:
    """How the conformance kit (``agent drivers check``) runs a driver without hardware.

    ``working`` and ``failing`` are ``[devices.<id>]`` keys: a device on the driver's simulated
    transport, and one whose transport fails at once (a refused port, no GPIO library).
    """

    working: Mapping[str, Any]
    failing: Mapping[str, Any]
    simulate: Sequence[tuple[str, Mapping[str, Any]]] = ()
    """``agent sim`` commands (name, params) sent to the working device once it is online."""
    expect: Sequence[str] = ()
    """Event types the working device must emit (after those commands)."""
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Other agent.toml sections for both cases, e.g. ``{"gpio": {"pin_factory": "mock"}}``."""
    failing_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Sections merged over ``settings`` for the failing case only."""


class ActionError(AgentError, ValueError):
    """An action that the driver does not accept, or with bad parameters."""


class DriverContext(Protocol):
    """What the core gives a driver. Every method is safe to call from any thread."""

    @property
    def store_id(self) -> str: ...

    @property
    def settings(self) -> Settings:
        """The running configuration (a reload replaces it)."""
        ...

    def emit(
        self,
        device_id: str,
        event_type: str,
        data: dict[str, Any] | None,
        *,
        time: float | None = None,
        subject: str | None = None,
    ) -> str:
        """Validate, stamp and queue one event for the durable buffer; return its id."""
        ...

    def publish_state(self, device_id: str, state: dict[str, Any]) -> None:
        """Replace the device's retained state (``<root>/state/<device_id>``)."""
        ...

    async def room(self) -> None:
        """Return when the core can take more events without dropping any.

        ``emit()`` never blocks; when events arrive faster than they can be committed (or the
        disk is full) the core holds a bounded number and then drops the lowest priority. A
        driver that can slow down (replay, polling) awaits this between batches instead.
        """
        ...

    def data_dir(self, device_id: str) -> Path:
        """A directory of the device's own under the agent's data directory (created)."""
        ...

    def keep(self, device_id: str, name: str, value: dict[str, Any]) -> None:
        """Keep ``value`` (JSON-able) as the device's state ``name`` across restarts.

        It is committed to the event buffer never before an event emitted before this call
        and never after one emitted after it. To bind it to the events counted from it (a
        counter's last value and the alarms it counted), emit them and keep it inside
        ``together()``: then both are committed in one transaction, so after a crash or a
        power cut the state matches the events that survived. Cheap: no write of its own;
        only the latest value per name is committed.
        """
        ...

    def together(self) -> AbstractContextManager[None]:
        """``with context.together(): ...``: the events emitted and the states kept inside
        reach the buffer in one transaction (all or nothing after a crash). Keep it short and
        synchronous: a poll's events and its state, no ``await`` inside; what it holds is
        committed when it ends."""
        ...

    def kept(self, device_id: str, name: str) -> dict[str, Any] | None:
        """The device's state ``name`` as last kept (in this run or an earlier one), or
        ``None``. A small disk read: call it at start, not per event."""
        ...

    def exit_of(self, device_id: str) -> str | None:
        """The exit a device belongs to (``[exits.*]``), which is also its events' subject."""
        ...

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener(envelope)`` for every committed event of any device; returns an
        unsubscribe function. Runs on the buffer's writer thread: hand work over, never block.
        """
        ...

    def undelivered_since(self) -> float | None:
        """When (epoch seconds) the oldest event not yet acknowledged by the broker was emitted
        (``None``: all delivered); every event emitted since is unpublished too. A small disk
        read: call it from a thread, not in a tight loop."""
        ...


class Driver:
    """A driver: one instance per configured device, running as a long-lived task.

    Subclasses set the metadata class attributes and ``Config``, and implement ``run()``.
    ``run()`` reconnects on its own with backoff (see ``agent.backoff.Backoff``) and reports
    losing the hardware with ``set_offline(reason)``; if it raises, the core logs it and
    restarts it after a delay.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    vendor: ClassVar[str] = ""
    description: ClassVar[str] = ""
    emits: ClassVar[tuple[str, ...]] = ()
    """Catalogue event types this driver emits (``device.*`` is implied)."""
    actions: ClassVar[tuple[str, ...]] = ()
    """Actions accepted by ``action()``, e.g. ``("on", "off", "pulse")``."""
    Config: ClassVar[type[DriverConfig]] = DriverConfig
    conformance: ClassVar[Conformance | None] = None
    """How ``agent drivers check`` runs this driver without hardware (docs/writing-drivers.md)."""

    def __init__(self, device_id: str, config: DriverConfig, context: DriverContext) -> None:
        self.device_id = device_id
        self.config = config
        self.context = context
        self.log = logging.LoggerAdapter(
            logging.getLogger(f"drivers.{self.name or type(self).__name__}"),
            {"device": device_id, "driver": self.name},
        )
        self._lock = threading.Lock()
        self._online: bool | None = None
        self._offline_at: float | None = None
        """When the current outage began (``since`` in the state is text)."""
        self._state: dict[str, Any] = {"online": False, "since": None}
        self._conditions: dict[str, tuple[float, str]] = {}

    @classmethod
    def check_host(cls, settings: Settings, devices: Mapping[str, DriverConfig]) -> list[HostProblem]:
        """What this machine lacks for ``devices`` (this driver's, by id), asked by ``agent config
        check`` and before ``agent run`` starts. It must not claim the hardware (the service may
        hold it) nor take more than a moment. The default warns about serial ports (the
        ``serial:<port>`` resources of ``DriverConfig.resources``) that do not exist now."""
        return [problem for device_id, config in devices.items() for res in config.resources()
                if res.startswith("serial:")
                for problem in missing_serial_port(device_id, res.removeprefix("serial:"))]

    async def run(self) -> None:
        """Talk to the hardware until cancelled. Must stop within 2 s of cancellation."""
        raise NotImplementedError

    async def health(self) -> list[HealthCheck]:
        """Read-only checks for self-tests; the default reports whether the device is online."""
        reason = self._state.get("reason", "")
        return [HealthCheck("online", bool(self._online), "" if self._online else str(reason))]

    async def at_rest(self) -> HealthCheck | None:
        """Whether the device is in its resting state, for a self-test's ``rest`` and ``restore``
        steps: door closed, alarm input inactive, output at its safe state, no interference or
        fault reported. ``None`` when the driver has no resting state to tell.

        The default judges the conditions the device itself reported (see ``conditions``):
        an ``eas.interference`` with ``inhibit`` true until one with ``inhibit`` false, an
        ``eas.fault`` for ``FAULT_HOLD`` seconds (catalogue v1 has no "fault cleared" event),
        a ``camera.tamper`` with ``active`` true until one with ``active`` false.
        """
        if not set(self.emits) & set(CONDITION_TYPES):
            return None
        active = self.conditions()
        if not active:
            return HealthCheck("at rest", True, "no interference, fault or tamper reported")
        return HealthCheck("at rest", False, "; ".join(active))

    async def restore(self) -> HealthCheck | None:
        """Put outputs back in their safe state after a self-test; ``None`` when there is
        nothing to restore (the default: inputs only)."""
        return None

    def conditions(self) -> list[str]:
        """Conditions the device reported that are still active, readable:
        ``fault (antenna fault) reported at 06:01:02``."""
        now = time.time()
        with self._lock:
            reported = dict(self._conditions)
        active = []
        for kind, (since, detail) in sorted(reported.items()):
            if kind == "fault" and now - since > FAULT_HOLD:
                continue
            active.append(f"{kind}{' ' + detail if detail else ''} reported at "
                          f"{format_clock(since)}")
        return active

    async def action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Carry out one of ``actions``; return what was done.

        Raises:
            ActionError: unknown action or bad parameters.
        """
        raise ActionError(f"device {self.device_id!r} ({self.name}) accepts no action {name!r}")

    async def simulate(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """Drive this device's simulated hardware (``agent sim``); only in simulation mode.

        Raises:
            ActionError: the driver has no simulation, or not this command.
        """
        raise ActionError(f"device {self.device_id!r} ({self.name}) has no simulated command "
                          f"{command!r}")

    # -- helpers for subclasses ---------------------------------------------------------

    def emit(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        *,
        time: float | None = None,
        subject: str | None = None,
    ) -> str:
        """Emit one catalogue event from this device; ``time`` is when it was observed (epoch s).

        Raises:
            EventError: the type is not in the catalogue or ``data`` does not fit it.
        """
        event_id = self.context.emit(self.device_id, event_type, data, time=time,
                                     subject=subject)
        if event_type in CONDITION_TYPES:
            self._note_condition(event_type, data or {}, time)
        return event_id

    def _note_condition(self, event_type: str, data: dict[str, Any], at: float | None) -> None:
        kind, flag = CONDITION_TYPES[event_type]
        active = True if flag is None else bool(data.get(flag))
        detail = str(data.get("reason") or data.get("kind") or "")
        with self._lock:
            if active:
                self._conditions[kind] = (at or time.time(), f"({detail})" if detail else "")
            else:
                self._conditions.pop(kind, None)

    @property
    def online(self) -> bool:
        """Whether the device was last reported online."""
        return bool(self._online)

    def set_online(self) -> None:
        """Report the device reachable; emits ``device.online`` and logs it only on a change
        (after an outage, with how long it lasted and why)."""
        with self._lock:
            if self._online:
                return
            outage = self._online is False
            down_since, reason = self._offline_at, self._state.pop("reason", None)
            self._online = True
        self.emit("device.online")
        now = time.time()
        if outage and down_since is not None:
            self.log.info("online again after %s offline (%s)",
                          format_duration(now - down_since), reason)
        else:
            self.log.info("online")
        self.update_state(online=True, since=timestamp(now))

    def set_offline(self, reason: str) -> None:
        """Report the device lost: one ``device.offline`` (and one log line) per outage.

        While it stays offline, a new ``reason`` (a port that was lost and now cannot be
        opened) only replaces the one in the retained state: a dashboard counting
        ``device.offline`` events counts outages.
        """
        with self._lock:
            outage = self._online is False
            previous = self._state.get("reason")
            self._online = False
        if outage:
            self.log.debug("still offline: %s", reason)  # every failed retry, for support
            if reason != previous:
                self.update_state(reason=reason)
            return
        self.emit("device.offline", {"reason": reason})
        self.log.warning("offline: %s", reason)
        self._offline_at = time.time()
        self.update_state(online=False, since=timestamp(self._offline_at), reason=reason)

    def update_state(self, **fields: Any) -> None:
        """Merge ``fields`` into the device's retained state and publish it."""
        with self._lock:
            self._state.update(fields)
            state = dict(self._state)
        self.context.publish_state(self.device_id, state)

    @property
    def state(self) -> dict[str, Any]:
        """A copy of the device's current state, as published."""
        with self._lock:
            return dict(self._state)
