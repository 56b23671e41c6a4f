"""Durations and sizes as people write them in config files (``500ms``, ``3s``, ``7d``,
``256MiB``), and as the agent prints them back, with times of day."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_NUMBER_UNIT = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

DURATION_HELP = "seconds as a number, or a string such as '500ms', '3s', '10m', '2h', '7d'"
SIZE_HELP = "bytes as a whole number, or a string such as '512kB', '256MiB', '1GiB'"


def parse_duration(value: Any) -> float:
    """Return ``value`` in seconds.

    Raises:
        ValueError: not a non-negative number nor a string with a known unit.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration: {DURATION_HELP}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _NUMBER_UNIT.match(value)):
        number, unit = match.groups()
        factor = _DURATION_UNITS.get(unit.lower() or "s")
        if factor is None:
            raise ValueError(f"unknown unit {unit!r}: {DURATION_HELP}")
        seconds = float(number) * factor
    else:
        raise ValueError(f"expected a duration: {DURATION_HELP}")
    if seconds < 0:
        raise ValueError(f"a duration must be positive or 0: {DURATION_HELP}")
    return seconds


def parse_size(value: Any) -> int:
    """Return ``value`` in bytes.

    Raises:
        ValueError: not a non-negative whole number nor a string with a known unit.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size: {SIZE_HELP}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _NUMBER_UNIT.match(value)):
        number, unit = match.groups()
        factor = _SIZE_UNITS.get(unit.lower())
        if factor is None:
            raise ValueError(f"unknown unit {unit!r}: {SIZE_HELP}")
        size = int(float(number) * factor)
    else:
        raise ValueError(f"expected a size: {SIZE_HELP}")
    if size < 0:
        raise ValueError(f"a size must be positive or 0: {SIZE_HELP}")
    return size


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds``: ``850ms``, ``12s``, ``5m``, ``3h``, ``2d``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor:
            return f"{seconds / factor:.1f}{unit}".replace(".0", "")
    return f"{seconds:.1f}s".replace(".0", "")


def format_size(size: int) -> str:
    """A short human form of ``size`` bytes: ``512B``, ``1.5KiB``, ``256MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A config field in seconds that also accepts strings such as ``'500ms'``."""

Size = Annotated[int, BeforeValidator(parse_size)]
"""A config field in bytes that also accepts strings such as ``'256MiB'``."""


def format_clock(epoch: float) -> str:
    """A moment as a technician reads it in a detail line: local time of day, ``06:01:02``."""
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def plural(count: int, noun: str) -> str:
    """``1 device``, ``2 devices``, ``0 exits``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
