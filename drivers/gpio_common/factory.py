"""The one gpiozero pin factory of this agent process, shared by every GPIO device, closed after the last."""

from __future__ import annotations

import threading
from typing import Any

from agent.errors import AgentError

__all__ = ["FactoryError", "PinFactory", "acquire", "current", "release"]

PinFactory = Any
"""A gpiozero ``Factory`` (typed loosely: gpiozero ships no type hints)."""

_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "mock": ("gpiozero.pins.mock", "MockFactory"),
}

_lock = threading.Lock()
_factory: PinFactory | None = None
_kind: str | None = None
_users = 0


class FactoryError(AgentError, RuntimeError):
    """The configured pin factory cannot be loaded on this machine (no GPIO library, not a Pi)."""


def _create(kind: str) -> PinFactory:
    if kind == "auto":
        # gpiozero's own choice: GPIOZERO_PIN_FACTORY, else lgpio, rpigpio, pigpio, native.
        from gpiozero import Device

        return Device._default_pin_factory()
    module_name, class_name = _FACTORIES[kind]
    import importlib

    module = importlib.import_module(module_name)
    return getattr(module, class_name)()


def acquire(kind: str) -> PinFactory:
    """The process's pin factory of ``kind`` (``[gpio] pin_factory``), created on first use.

    Each ``acquire`` must be paired with one ``release``. Devices never use gpiozero's global
    ``Device.pin_factory``: they pass this factory explicitly, so nothing leaks between agents
    or tests in one process.

    Raises:
        FactoryError: the factory cannot be created here, or another kind is already in use.
    """
    global _factory, _kind, _users
    with _lock:
        if _factory is None:
            try:
                _factory = _create(kind)
            except Exception as err:
                raise FactoryError(
                    f"GPIO pin factory {kind!r} is not available on this machine: "
                    f"{type(err).__name__}: {err}"
                ) from err
            _kind = kind
        elif kind != _kind:
            raise FactoryError(f"GPIO pin factory {_kind!r} is already in use; cannot also use "
                               f"{kind!r} in one process")
        _users += 1
        return _factory


def release(factory: PinFactory) -> None:
    """Give back a factory from ``acquire``; the last user closes it (pins return to inputs)."""
    global _factory, _kind, _users
    with _lock:
        if factory is not _factory or _users == 0:
            return
        _users -= 1
        if _users:
            return
        closing, _factory, _kind = _factory, None, None
    closing.close()


def current() -> tuple[str, PinFactory] | None:
    """``(kind, factory)`` while any device holds the factory, else None."""
    with _lock:
        return None if _factory is None or _kind is None else (_kind, _factory)
