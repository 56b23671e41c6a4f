"""One input pin claimed through gpiozero, its edges debounced on the asyncio loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from drivers.gpio_common.debounce import Change, Debouncer
from drivers.gpio_common.factory import PinFactory

PULL_UP = {"up": True, "down": False, "none": None}
"""``pull`` as config files say it, to gpiozero's ``pull_up``."""


def epoch_of(mono: float) -> float:
    """The wall-clock time (epoch seconds) of a ``time.monotonic()`` reading taken just now-ish."""
    return time.time() - (time.monotonic() - mono)


class WatchedInput:
    """An input pin whose settled changes are reported by ``on_change(change)`` on the event loop.

    gpiozero calls the pin's ``when_changed`` on its own thread on real hardware and synchronously
    in the caller's thread with mock pins; either way the edge is timed there and handed to the
    loop, where the ``Debouncer`` decides. ``prepare(pin)`` runs once the pin is claimed, before
    its first level is read. Use it as a context manager on the loop thread.
    """

    def __init__(self, factory: PinFactory, pin: str, *, pull: str, debounce: float,
                 on_change: Callable[[Change], None],
                 prepare: Callable[[Any], None] | None = None) -> None:
        self.name = pin
        self._prepare = prepare
        self._factory = factory
        self._pull = pull
        self._delay = debounce
        self._on_change = on_change
        self._device: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.debouncer = Debouncer(debounce, False)

    def __enter__(self) -> WatchedInput:
        from gpiozero import InputDevice

        self._loop = asyncio.get_running_loop()
        pull_up = PULL_UP[self._pull]
        # With no internal pull gpiozero wants an active state; we only read raw levels anyway.
        self._device = InputDevice(self.name, pull_up=pull_up,
                                   active_state=True if pull_up is None else None,
                                   pin_factory=self._factory)
        pin = self._device.pin
        if self._prepare is not None:
            self._prepare(pin)
        self.debouncer = Debouncer(self._delay, bool(pin.state))
        pin.edges = "both"
        pin.when_changed = self._on_pin
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching and give the pin back (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._device is not None:
            device, self._device = self._device, None
            device.pin.when_changed = None
            device.close()

    @property
    def pin(self) -> Any:
        """The gpiozero pin (a ``MockPin`` in simulation mode)."""
        if self._device is None:
            raise RuntimeError(f"input {self.name} is not open")
        return self._device.pin

    @property
    def level(self) -> bool:
        """The settled level (True: high)."""
        return self.debouncer.level

    def _on_pin(self, ticks: Any, state: Any) -> None:
        # Any thread: time it now, decide on the loop.
        now = time.monotonic()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._edge, bool(state), now)
        except RuntimeError:  # the loop closed between the check and the call
            return

    def _edge(self, level: bool, now: float) -> None:
        if self._device is None:
            return
        deadline = self.debouncer.edge(level, now)
        if deadline is None or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._settle)

    def _settle(self) -> None:
        self._timer = None
        if self._loop is None:
            return
        change = self.debouncer.settle(self._loop.time())
        if change is not None:
            self._on_change(change)
