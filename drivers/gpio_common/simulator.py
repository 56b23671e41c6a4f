"""Simulation mode (``[gpio] pin_factory = "mock"``): drive input pins and wire outputs to inputs."""

from __future__ import annotations

import asyncio
from typing import Any

from gpiozero.pins.mock import MockConnectedPin, MockPin

from agent.driver import ActionError
from drivers.gpio_common.config import for_param
from drivers.gpio_common.factory import PinFactory

DEFAULT_PULSE = 0.2
"""Seconds an ``agent sim gpio DEVICE pulse`` holds the input active when no ``--for`` is given."""

MAX_PULSE = 600.0


def require_mock(kind: str, device_id: str) -> None:
    """Refuse simulation on real pins.

    Raises:
        ActionError: the agent is not in simulation mode.
    """
    if kind != "mock":
        raise ActionError(f"device {device_id!r}: simulation needs [gpio] pin_factory = \"mock\" "
                          f"(this agent uses {kind!r})")


def pulse_seconds(params: dict[str, Any]) -> float:
    """A simulated pulse's ``for`` (default ``DEFAULT_PULSE``).

    Raises:
        ActionError: not a duration, or not above 0 and at most ``MAX_PULSE`` seconds.
    """
    return for_param(params, default=DEFAULT_PULSE, maximum=MAX_PULSE)


class SimulatedLine:
    """Drives one mock input pin as if its hardware did, and undoes a pending pulse on close."""

    def __init__(self, pin: MockPin) -> None:
        self.pin = pin
        self._pulse_end: asyncio.TimerHandle | None = None

    def drive(self, high: bool) -> None:
        """Set the pin's level (the edge reaches the driver as a real one would)."""
        self.cancel_pulse()
        self._set(high)

    def _set(self, high: bool) -> None:
        if high:
            self.pin.drive_high()
        else:
            self.pin.drive_low()

    def pulse(self, high: bool, seconds: float) -> None:
        """Drive to ``high`` now and back to the other level after ``seconds``."""
        self.drive(high)
        self._pulse_end = asyncio.get_running_loop().call_later(seconds, self._set, not high)

    def cancel_pulse(self) -> None:
        if self._pulse_end is not None:
            self._pulse_end.cancel()
            self._pulse_end = None


class WiredPin(MockConnectedPin):
    """An output pin wired to an input pin: the input follows it, inverted when ``invert``.

    gpiozero's ``MockConnectedPin`` copies its level to ``input_pin``; inverting lets an active-low
    relay output drive an active-high input (the wire models "output on -> input active").
    """

    def __init__(self, factory: Any, info: Any, input_pin: MockPin | None = None,
                 invert: bool = False) -> None:
        self.invert = invert
        super().__init__(factory, info, input_pin=input_pin)

    def _change_state(self, value: bool) -> bool:
        self._drive_input(value)
        return MockPin._change_state(self, value)

    def _drive_input(self, value: bool) -> None:
        if self.input_pin is not None and self.input_pin.function == "input":
            level = bool(value) != self.invert
            if level:
                self.input_pin.drive_high()
            else:
                self.input_pin.drive_low()

    def cut(self, off_state: bool) -> None:
        """Cut the wire: the input, no longer driven, reads what the output gives when off
        (``off_state``, the output's electrical level when off), even during a pulse."""
        self._drive_input(off_state)
        self.input_pin = None


def _info(factory: PinFactory, name: str) -> Any:
    for _header, info in factory.board_info.find_pin(name):
        return info
    raise ValueError(f"no pin {name} on the simulated board")


def wire(factory: PinFactory, output: str, input_: str, *, invert: bool) -> WiredPin:
    """Make ``output`` (not yet claimed by any device) a ``WiredPin`` driving ``input_``.

    gpiozero creates a pin object once per factory and reuses it, so the wired pin must exist
    before the output device claims it; the input pin may already be in use by its device (it is
    the same object either way), so start order does not matter.
    """
    info = _info(factory, output)
    target = factory.pin(input_)
    pin = factory.pins.get(info)
    if not isinstance(pin, WiredPin):
        pin = WiredPin(factory, info, input_pin=target, invert=invert)
        factory.pins[info] = pin
    pin.input_pin = target
    pin.invert = invert
    return pin


def settle_input(factory: PinFactory, input_pin: MockPin, idle_high: bool) -> None:
    """Give a just-claimed mock input its starting level: an output wired to it sets it, else
    its idle level (a closed door, an inactive relay).

    Claiming an input sets its pull, which drives a mock pin to the pull's level: that would
    hide the level of a wired output that started first, and read an unpulled pin as low.
    """
    for pin in list(factory.pins.values()):
        if isinstance(pin, WiredPin) and pin.input_pin is input_pin and pin.function == "output":
            pin._change_state(pin.state)
            return
    SimulatedLine(input_pin).drive(idle_high)
