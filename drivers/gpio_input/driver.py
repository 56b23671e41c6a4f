"""The gpio_input driver: a debounced digital input whose edges emit configured catalogue events."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.driver import Conformance, HealthCheck, timestamp
from drivers.gpio_common import simulator
from drivers.gpio_common.debounce import Change
from drivers.gpio_common.device import NO_GPIO_LIBRARY, GpioDriver
from drivers.gpio_common.factory import PinFactory
from drivers.gpio_common.watch import WatchedInput, epoch_of
from drivers.gpio_input.config import EDGE_EVENT_TYPES, GpioInputConfig

SIM_COMMANDS = ("high", "low", "pulse", "active", "inactive")


class GpioInputDriver(GpioDriver):
    """Emits ``on_active`` / ``on_inactive`` when the debounced input changes; state shows its level."""

    name = "gpio_input"
    version = "1.0.0"
    vendor = "store-edge-agent"
    description = "A debounced GPIO input (EAS alarm relay, sounder feedback, tamper loop)"
    emits = EDGE_EVENT_TYPES
    Config = GpioInputConfig
    conformance = Conformance(
        working={"pin": "GPIO17", "on_active": {"event": "eas.alarm", "data": {"direction": "out"}}},
        failing={"pin": "GPIO17"},
        failing_settings=NO_GPIO_LIBRARY,
        simulate=[("pulse", {})],
        expect=("eas.alarm",),
    )
    config: GpioInputConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._input: WatchedInput | None = None
        self._line: simulator.SimulatedLine | None = None
        self._changes = 0

    async def serve(self, factory: PinFactory) -> None:
        cfg = self.config
        prepare = None
        if self.simulated:
            def prepare(pin: Any) -> None:
                simulator.settle_input(factory, pin, idle_high=not cfg.active_high)
        with WatchedInput(factory, cfg.pin, pull=cfg.pull, debounce=cfg.debounce,
                          on_change=self._changed, prepare=prepare) as watched:
            self._input = watched
            self._line = simulator.SimulatedLine(watched.pin) if self.simulated else None
            try:
                self._publish(watched.level, None)
                self.set_online()
                await asyncio.Event().wait()
            finally:
                if self._line is not None:
                    self._line.cancel_pulse()
                self._input = self._line = None

    def _active(self, level: bool) -> bool:
        return level == self.config.active_high

    def _publish(self, level: bool, since: float | None) -> None:
        self.update_state(pin=self.config.pin, level="high" if level else "low",
                          active=self._active(level), active_since=timestamp(since) if self._active(level)
                          else None, changes=self._changes)

    def _changed(self, change: Change) -> None:
        self._changes += 1
        at = epoch_of(change.at)
        active = self._active(change.level)
        edge = self.config.event_for(active)
        if edge is not None:
            self.emit(edge.event, dict(edge.data), time=at)
        self._publish(change.level, at)

    async def at_rest(self) -> HealthCheck | None:
        """The input is inactive (an alarm relay released, a sounder silent)."""
        watched = self._input
        if watched is None:
            return HealthCheck("input inactive", False, "the input is not being read")
        level = "high" if watched.level else "low"
        if self._active(watched.level):
            return HealthCheck("input inactive", False, f"{self.config.pin} is active ({level})")
        return HealthCheck("input inactive", True, f"{self.config.pin} inactive ({level})")

    async def simulate(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """``high``/``low`` set the pin's level, ``active``/``inactive`` its meaning, ``pulse``
        drives it active for ``for`` seconds (default 200 ms).

        Raises:
            ActionError: not in simulation mode, not running, or an unknown command.
        """
        self.check_simulation(command, SIM_COMMANDS, running=self._line is not None)
        assert self._line is not None
        high = self.config.active_high
        if command == "pulse":
            seconds = simulator.pulse_seconds(params)
            self._line.pulse(high, seconds)
            return {"pin": self.config.pin, "pulse": "high" if high else "low", "for": seconds}
        level = {"high": True, "low": False, "active": high, "inactive": not high}[command]
        self._line.drive(level)
        return {"pin": self.config.pin, "level": "high" if level else "low"}
