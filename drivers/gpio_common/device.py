"""The base of the GPIO drivers: hold the shared pin factory, open the pins, retry with backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent.backoff import Backoff
from agent.driver import ActionError, Driver, DriverConfig, HostProblem
from drivers.gpio_common import simulator
from drivers.gpio_common.factory import FactoryError, PinFactory, acquire, current, probe, release

if TYPE_CHECKING:
    from agent.config import Settings

STABLE_AFTER = 30.0
"""Pins that worked this long before failing are retried from the shortest delay again."""

NO_GPIO_LIBRARY = {"gpio": {"pin_factory": "lgpio"}}
"""The conformance kit's failing transport: a GPIO library this machine lacks (CI, not a Pi)."""


class GpioDriver(Driver):
    """Subclasses implement ``serve(factory)``: claim the pins, ``set_online()``, run until cancelled.

    A factory that cannot be loaded (no GPIO library, not a Pi) or a pin that cannot be claimed
    (another process holds it) is ``device.offline`` with the reason, retried with backoff; the
    agent keeps running.
    """

    retry_initial = 1.0
    retry_cap = 60.0

    @classmethod
    def check_host(cls, settings: Settings, devices: Mapping[str, DriverConfig]) -> list[HostProblem]:
        """Fatal when ``[gpio] pin_factory`` cannot load here: the message names the factory and
        what to install."""
        try:
            probe(str(settings.gpio.pin_factory))
        except FactoryError as err:
            return [HostProblem(device_id, str(err)) for device_id in devices]
        return super().check_host(settings, devices)

    @property
    def pin_factory_kind(self) -> str:
        """``[gpio] pin_factory``: ``auto``, ``lgpio``, ``rpigpio`` or ``mock``."""
        return str(self.context.settings.gpio.pin_factory)

    @property
    def simulated(self) -> bool:
        return self.pin_factory_kind == "mock"

    def check_simulation(self, command: str, commands: tuple[str, ...], *, running: bool) -> None:
        """Accept an ``agent sim`` command only in simulation mode, known, on a running device.

        Raises:
            ActionError: naming which of the three it is not.
        """
        simulator.require_mock(self.pin_factory_kind, self.device_id)
        if command not in commands:
            raise ActionError(f"device {self.device_id!r} ({self.name}) simulates "
                              f"{', '.join(commands)}; not {command!r}")
        if not running:
            raise ActionError(f"device {self.device_id!r} is not running (see agent status)")

    async def serve(self, factory: PinFactory) -> None:
        """Claim the pins on ``factory`` and watch/drive them until cancelled."""
        raise NotImplementedError

    async def run(self) -> None:
        backoff = Backoff(initial=self.retry_initial, cap=self.retry_cap)
        while True:
            try:
                factory = acquire(self.pin_factory_kind)
            except FactoryError as err:
                self.set_offline(str(err))
                await asyncio.sleep(backoff.next())
                continue
            started = time.monotonic()
            held = current()
            self.update_state(pin_factory=held[0] if held else self.pin_factory_kind)
            try:
                await self.serve(factory)
            except Exception as err:  # gpiozero raises many kinds (GPIOPinInUse, OSError, ...)
                self.log.warning("GPIO failed: %s: %s", type(err).__name__, err)
                self.set_offline(f"{type(err).__name__}: {err}"[:200])
            else:
                return
            finally:
                release(factory)
            if time.monotonic() - started > STABLE_AFTER:
                backoff.reset()
            await asyncio.sleep(backoff.next())
