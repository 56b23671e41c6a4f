"""The one gpiozero pin factory of this agent process, shared by every GPIO device, closed after the last."""

from __future__ import annotations

import glob
import threading
from typing import Any

from agent.errors import AgentError

__all__ = ["FactoryError", "PinFactory", "acquire", "current", "probe", "release"]

PinFactory = Any
"""A gpiozero ``Factory`` (typed loosely: gpiozero ships no type hints)."""

_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "mock": ("gpiozero.pins.mock", "MockFactory"),
}
AUTO = ("lgpio", "rpigpio")
"""What ``auto`` tries, in order. Not gpiozero's own fallbacks: ``native`` needs /dev/gpiomem,
which the service unit denies, and does not work on a Pi 5; ``pigpio`` needs its daemon."""

INSTALL = {
    "lgpio": "install it with `sudo apt-get install python3-lgpio`, then run `sudo scripts/install` "
             "again: its venv then sees the system's lgpio (docs/service.md, GPIO)",
    "rpigpio": "install it with `sudo apt-get install python3-rpi.gpio` (Pi 4 and older only; "
               "the service unit denies the /dev/gpiomem it needs: prefer pin_factory = \"lgpio\")",
}
"""What to do when a factory's Python library is missing."""

GPIOCHIPS = "/dev/gpiochip*"

_lock = threading.Lock()
_factory: PinFactory | None = None
_kind: str | None = None
_name: str | None = None
_users = 0


class FactoryError(AgentError, RuntimeError):
    """The configured pin factory cannot be loaded on this machine (no GPIO library, not a Pi)."""


def _explain(name: str, err: Exception, *, hint: bool) -> str:
    """Why factory ``name`` did not load, and (``hint``) what to do about it."""
    if isinstance(err, ImportError):
        return f"{name}: its Python library is missing ({err})" + (
            f": {INSTALL[name]}" if hint and name in INSTALL else "")
    text = f"{name}: {type(err).__name__}: {err}"
    if not glob.glob(GPIOCHIPS):
        return f"{text}: this machine has no {GPIOCHIPS} (not a Raspberry Pi?)"
    if isinstance(err, PermissionError) or "ermission" in str(err):
        return f"{text}: the agent's user must be in group gpio (scripts/install does this)"
    return text


def _create(kind: str) -> tuple[str, PinFactory]:
    """``(name, factory)``: the factory of ``kind``; for ``auto`` the first of ``AUTO`` that loads.

    Raises:
        FactoryError: naming the factory (each one tried) and what to install.
    """
    import importlib

    problems = []
    for name in AUTO if kind == "auto" else (kind,):
        module_name, class_name = _FACTORIES[name]
        try:
            module = importlib.import_module(module_name)
            return name, getattr(module, class_name)()
        except Exception as err:  # gpiozero and the libraries raise many kinds
            # for auto, only what to install for the first choice
            problems.append(_explain(name, err, hint=kind != "auto" or name == AUTO[0]))
    raise FactoryError(f"GPIO pin factory {kind!r} is not available on this machine: "
                       + "; ".join(problems))


def probe(kind: str) -> str:
    """The name of the factory ``kind`` gives on this machine (``auto`` -> ``lgpio``), found by
    loading it and closing it again (no pin is claimed); the one in use when a device holds it.

    Raises:
        FactoryError: it cannot be loaded here; the message names it and what to install.
    """
    with _lock:
        if _factory is not None and _kind == kind and _name is not None:
            return _name
    name, factory = _create(kind)
    factory.close()
    return name


def acquire(kind: str) -> PinFactory:
    """The process's pin factory of ``kind`` (``[gpio] pin_factory``), created on first use.

    Each ``acquire`` must be paired with one ``release``. Devices never use gpiozero's global
    ``Device.pin_factory``: they pass this factory explicitly, so nothing leaks between agents
    or tests in one process.

    Raises:
        FactoryError: the factory cannot be created here, or another kind is already in use.
    """
    global _factory, _kind, _name, _users
    with _lock:
        if _factory is None:
            _name, _factory = _create(kind)
            _kind = kind
        elif kind != _kind:
            raise FactoryError(f"GPIO pin factory {_kind!r} is already in use; cannot also use "
                               f"{kind!r} in one process")
        _users += 1
        return _factory


def release(factory: PinFactory) -> None:
    """Give back a factory from ``acquire``; the last user closes it (pins return to inputs)."""
    global _factory, _kind, _name, _users
    with _lock:
        if factory is not _factory or _users == 0:
            return
        _users -= 1
        if _users:
            return
        closing, _factory, _kind, _name = _factory, None, None, None
    closing.close()


def current() -> tuple[str, PinFactory] | None:
    """``(name, factory)`` while any device holds the factory, else None; ``name`` is the factory
    in use (``lgpio`` for ``auto``)."""
    with _lock:
        return None if _factory is None or _name is None else (_name, _factory)
