"""The gpio_output driver: a relay output with on/off/pulse actions and a safe state at start and stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.driver import ActionError, Conformance, HealthCheck, timestamp
from drivers.gpio_common import simulator
from drivers.gpio_common.config import active_high, for_param
from drivers.gpio_common.device import NO_GPIO_LIBRARY, GpioDriver
from drivers.gpio_common.factory import PinFactory
from drivers.gpio_common.pins import canonical_pin
from drivers.gpio_output.config import GpioOutputConfig

SIM_COMMANDS = ("on", "off", "pulse", "wire", "unwire")


class GpioOutputDriver(GpioDriver):
    """Drives one relay; every actuation (including the safe state) shows in the device state."""

    name = "gpio_output"
    version = "1.0.0"
    vendor = "store-edge-agent"
    description = "A GPIO relay output (test-tag coil, sounder, lamp) with on/off/pulse"
    emits = ()
    actions = ("on", "off", "pulse")
    Config = GpioOutputConfig
    conformance = Conformance(
        working={"pin": "GPIO27"},
        failing={"pin": "GPIO27"},
        failing_settings=NO_GPIO_LIBRARY,
        simulate=[("on", {}), ("off", {})],
    )
    config: GpioOutputConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._device: Any = None
        self._wire: simulator.WiredPin | None = None
        self._pulse_end: asyncio.TimerHandle | None = None
        self._actuations = 0

    # -- hardware -------------------------------------------------------------------------------

    async def serve(self, factory: PinFactory) -> None:
        from gpiozero import OutputDevice

        cfg = self.config
        if cfg.sim_drives and self.simulated:
            self._wire = self._wire_to(factory, cfg.sim_drives)
        safe_on = cfg.safe_state == "on"
        self._device = OutputDevice(cfg.pin, active_high=cfg.active_high, initial_value=safe_on,
                                    pin_factory=factory)
        try:
            self._actuated(safe_on, "safe_state", reason="start")
            self.set_online()
            await asyncio.Event().wait()
        finally:
            self._cancel_pulse()
            device, self._device = self._device, None
            try:
                device.value = safe_on
                self._actuated(safe_on, "safe_state", reason="stop")
            finally:
                device.close()
                self._wire = None

    def _wire_to(self, factory: PinFactory, target: str) -> simulator.WiredPin:
        table = self.context.settings.devices[target]
        input_pin = canonical_pin(table["pin"])
        input_high = active_high(str(table.get("pull", "up")), table.get("active"))
        # "output on" must mean "input active", whatever the two polarities are.
        wired = simulator.wire(factory, self.config.pin, input_pin,
                               invert=self.config.active_high != input_high)
        self.log.info("simulation: %s drives %s (%s)", self.config.pin, target, input_pin)
        return wired

    def _set(self, on: bool) -> None:
        if self._device is None:
            raise ActionError(f"device {self.device_id!r} is not running (see agent status)")
        self._device.value = on

    def _actuated(self, on: bool, action: str, **details: Any) -> dict[str, Any]:
        self._actuations += 1
        now = time.time()
        last = {"action": action, "at": timestamp(now), **details}
        self.update_state(pin=self.config.pin, output="on" if on else "off",
                          level="high" if on == self.config.active_high else "low",
                          output_since=timestamp(now), actuations=self._actuations, last_action=last,
                          wired_to=self._wired_target())
        return {"output": "on" if on else "off", **details}

    def _wired_target(self) -> str | None:
        if self._wire is None or self._wire.input_pin is None:
            return None
        return self.config.sim_drives

    def _cancel_pulse(self) -> None:
        if self._pulse_end is not None:
            self._pulse_end.cancel()
            self._pulse_end = None

    def _end_pulse(self, action: str = "pulse_end") -> None:
        self._pulse_end = None
        if self._device is not None:
            self._set(False)
            self._actuated(False, action)

    # -- actions ----------------------------------------------------------------------------------

    async def action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """``on``, ``off``, or ``pulse`` (on now, off after ``for`` seconds; returns at once).
        An ``on`` away from an ``off`` safe state ends after ``max_on`` (``max_on_end``).

        Raises:
            ActionError: unknown action, bad ``for``, or the device is not running.
        """
        if name not in self.actions:
            return await super().action(name, params)
        seconds = None
        if name == "pulse":
            seconds = for_param(params, default=self.config.pulse, maximum=self.config.max_pulse)
        self._cancel_pulse()  # a new command replaces a pulse in progress
        on = name != "off"
        self._set(on)
        limit = self.config.max_on if name == "on" and self.config.safe_state == "off" else 0
        if limit:
            self._pulse_end = asyncio.get_running_loop().call_later(limit, self._end_pulse,
                                                                    "max_on_end")
            return self._actuated(True, "on", until=time.time() + limit)
        if seconds is None:
            return self._actuated(on, name)
        self._pulse_end = asyncio.get_running_loop().call_later(seconds, self._end_pulse)
        return self._actuated(True, "pulse", **{"for": seconds})

    # -- self-tests ------------------------------------------------------------------------------

    async def at_rest(self) -> HealthCheck | None:
        """The output is at its safe state."""
        safe = self.config.safe_state
        if self._device is None:
            return HealthCheck("output safe", False, "the output is not being driven")
        now = "on" if self._device.value else "off"
        return HealthCheck("output safe", now == safe and self._pulse_end is None,
                           f"{self.config.pin} {now}" + ("" if now == safe else f", safe is {safe}")
                           + (", pulse in progress" if self._pulse_end is not None else ""))

    async def restore(self) -> HealthCheck | None:
        """End a pulse in progress and drive the safe state."""
        if self._device is None:
            return HealthCheck("output safe", False, "the output is not being driven")
        self._cancel_pulse()
        safe_on = self.config.safe_state == "on"
        self._set(safe_on)
        self._actuated(safe_on, "safe_state", reason="selftest")
        return await self.at_rest()

    async def simulate(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """``on``/``off``/``pulse`` as the actions; ``unwire``/``wire`` cut and restore the
        simulated wire to ``sim_drives`` (a dead pedestal without a restart).

        Raises:
            ActionError: not in simulation mode, not running, no wire, or an unknown command.
        """
        self.check_simulation(command, SIM_COMMANDS, running=self._device is not None)
        if command in self.actions:
            return await self.action(command, params)
        if self._wire is None:
            raise ActionError(f"device {self.device_id!r} has no simulated wire (set sim_drives)")
        if command == "unwire":
            self._wire.cut(off_state=not self.config.active_high)
        else:
            factory = self._wire.factory
            self._wire = self._wire_to(factory, str(self.config.sim_drives))
            self._wire._change_state(self._wire.state)
        self.update_state(wired_to=self._wired_target())
        return {"wired_to": self._wired_target()}
