"""The gpio_door driver: a door contact with held-open, and forced-door detection against a REX input."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Any

from agent.driver import ActionError, Conformance, HealthCheck, timestamp
from agent.units import format_clock
from drivers.gpio_common import simulator
from drivers.gpio_common.debounce import Change
from drivers.gpio_common.device import NO_GPIO_LIBRARY, GpioDriver
from drivers.gpio_common.factory import PinFactory
from drivers.gpio_common.watch import WatchedInput, epoch_of
from drivers.gpio_door.config import GpioDoorConfig
from drivers.gpio_door.logic import DoorEvent, DoorLogic

SIM_COMMANDS = ("open", "close", "high", "low", "pulse", "rex")
SCHEDULE_RECHECK = 60.0
"""Arming windows are whole minutes: a scheduled door re-reads its arming once a minute."""


class GpioDoorDriver(GpioDriver):
    """Emits door.opened/closed/held_open/forced; retained state: open or closed, since, armed."""

    name = "gpio_door"
    version = "1.0.0"
    vendor = "store-edge-agent"
    description = "A door contact on a GPIO pin, with an optional request-to-exit input"
    emits = ("door.opened", "door.closed", "door.held_open", "door.forced")
    Config = GpioDoorConfig
    conformance = Conformance(
        working={"pin": "GPIO5", "rex_pin": "GPIO6"},
        failing={"pin": "GPIO5"},
        failing_settings=NO_GPIO_LIBRARY,
        simulate=[("pulse", {"for": 0.3})],  # open for 300 ms: longer than the debounce
        expect=("door.opened", "door.closed"),
    )
    config: GpioDoorConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schedule = self.config.schedule
        self._logic: DoorLogic | None = None
        self._wake = asyncio.Event()
        self._door_line: simulator.SimulatedLine | None = None
        self._rex_line: simulator.SimulatedLine | None = None

    def armed_at(self, mono: float) -> bool:
        """Whether the door is armed at monotonic time ``mono`` (local wall-clock schedule)."""
        return self._schedule.armed_at(datetime.fromtimestamp(epoch_of(mono)))

    async def serve(self, factory: PinFactory) -> None:
        cfg = self.config
        # A simulated door starts closed and its REX released (an unwired pull-up would read
        # as an open NC contact).
        def idle(high: bool) -> Any:
            if not self.simulated:
                return None
            return lambda pin: simulator.settle_input(factory, pin, idle_high=high)

        with contextlib.ExitStack() as stack:
            door = stack.enter_context(WatchedInput(
                factory, cfg.pin, pull=cfg.pull, debounce=cfg.debounce,
                on_change=self._door_changed, prepare=idle(not cfg.open_high)))
            rex = None
            if cfg.rex_pin is not None:
                rex = stack.enter_context(WatchedInput(
                    factory, cfg.rex_pin, pull=cfg.rex_pull, debounce=cfg.debounce,
                    on_change=self._rex_changed, prepare=idle(not cfg.rex_high)))
            now = time.monotonic()
            self._logic = DoorLogic(
                is_open=door.level == cfg.open_high, now=now, held_open_after=cfg.held_open_after,
                repeat=cfg.held_open_repeat, shunt=cfg.shunt,
                rex_active=rex is not None and rex.level == cfg.rex_high,
            )
            if self.simulated:
                self._door_line = simulator.SimulatedLine(door.pin)
                self._rex_line = simulator.SimulatedLine(rex.pin) if rex is not None else None
            try:
                self._publish()
                self.set_online()
                await self._timers()
            finally:
                for line in (self._door_line, self._rex_line):
                    if line is not None:
                        line.cancel_pulse()
                self._logic = self._door_line = self._rex_line = None

    async def _timers(self) -> None:
        """Emit held-open events when due and keep a scheduled door's ``armed`` state current."""
        while True:
            logic = self._logic
            assert logic is not None
            deadline = logic.next_deadline
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._schedule.scheduled:
                wait = min(wait if wait is not None else SCHEDULE_RECHECK, SCHEDULE_RECHECK)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            events = logic.tick(time.monotonic())
            self._emit(events)
            if events or self._schedule.scheduled:
                self._publish()

    def _emit(self, events: list[DoorEvent]) -> None:
        for ev in events:
            self.emit(ev.type, ev.data or None, time=epoch_of(ev.at))

    def _publish(self) -> None:
        logic = self._logic
        if logic is None:
            return
        now = time.monotonic()
        self.update_state(
            door="open" if logic.is_open else "closed",
            door_since=timestamp(epoch_of(logic.since)),
            armed=self.armed_at(now),
            forced=logic.forced,
            held_open=logic.held_open,
            rex_active=logic.rex_active if self.config.rex_pin else None,
            openings=logic.openings,
        )

    def _door_changed(self, change: Change) -> None:
        if self._logic is None:
            return
        is_open = change.level == self.config.open_high
        self._emit(self._logic.contact(is_open, change.at, armed=self.armed_at(change.at)))
        self._publish()
        self._wake.set()

    def _rex_changed(self, change: Change) -> None:
        if self._logic is None:
            return
        self._logic.rex(change.level == self.config.rex_high, change.at)
        self._publish()

    async def at_rest(self) -> HealthCheck | None:
        """The door is closed."""
        logic = self._logic
        if logic is None:
            return HealthCheck("door closed", False, "the door contact is not being read")
        if not logic.is_open:
            return HealthCheck("door closed", True, "closed")
        return HealthCheck("door closed", False,
                           f"the door is open (since {format_clock(epoch_of(logic.since))})")

    async def simulate(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """``open``/``close`` the door, ``high``/``low`` its contact pin, ``pulse`` it open for
        ``for`` seconds, ``rex`` press the request-to-exit for ``for`` seconds (default 200 ms).

        Raises:
            ActionError: not in simulation mode, not running, no REX pin, or an unknown command.
        """
        self.check_simulation(command, SIM_COMMANDS, running=self._door_line is not None)
        assert self._door_line is not None
        cfg = self.config
        if command == "rex":
            if self._rex_line is None:
                raise ActionError(f"device {self.device_id!r} has no rex_pin")
            seconds = simulator.pulse_seconds(params)
            self._rex_line.pulse(cfg.rex_high, seconds)
            return {"rex_pin": cfg.rex_pin, "for": seconds}
        if command == "pulse":
            seconds = simulator.pulse_seconds(params)
            self._door_line.pulse(cfg.open_high, seconds)
            return {"pin": cfg.pin, "door": "open", "for": seconds}
        level = {"open": cfg.open_high, "close": not cfg.open_high, "high": True,
                 "low": False}[command]
        self._door_line.drive(level)
        return {"pin": cfg.pin, "level": "high" if level else "low",
                "door": "open" if level == cfg.open_high else "closed"}
