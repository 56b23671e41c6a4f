"""Camera clocks without I/O: ISO 8601 durations, the camera's offset, and correcting event times."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = ["camera_epoch", "correct_time", "measure_offset", "parse_duration", "parse_utc"]

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
PLAUSIBLE_YEARS = (2000, 2200)
"""A camera date outside these years is a reset or garbage clock, not a time to trust."""


def parse_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration such as ``PT60S``, ``PT1M30S`` or ``P1DT2H``.

    Raises:
        ValueError: not a day/time duration (years and months have no fixed length).
    """
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + \
        parts.get("s", 0)


def camera_epoch(fields: Sequence[object]) -> float | None:
    """Epoch seconds of a GetSystemDateAndTime ``UTCDateTime`` given as [year, month, day, hour,
    minute, second]; None for zeros or garbage."""
    try:
        year, month, day, hour, minute, second = (int(f) for f in fields)  # type: ignore[call-overload]
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    if not PLAUSIBLE_YEARS[0] <= when.year < PLAUSIBLE_YEARS[1]:
        return None
    return when.timestamp()


def measure_offset(camera: float, sent: float, received: float) -> float:
    """Camera clock minus ours, from a camera time read between ``sent`` and ``received``.

    The camera reports whole seconds (truncated), so its true time is half a second later on
    average; our side is taken as the middle of the round trip.
    """
    return (camera + 0.5) - (sent + received) / 2


def parse_utc(text: object) -> float | None:
    """Epoch seconds of an event's ``UtcTime``; None when missing, unparsable or implausible."""
    if isinstance(text, datetime):
        when = text if text.tzinfo else text.replace(tzinfo=UTC)
    elif isinstance(text, str) and text.strip():
        value = text.strip()
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # ONVIF UtcTime is UTC even without a suffix
    else:
        return None
    if not PLAUSIBLE_YEARS[0] <= when.year < PLAUSIBLE_YEARS[1]:
        return None
    return when.timestamp()


def correct_time(utc_time: object, offset: float | None, received: float, *,
                 max_age: float = 3600.0, max_ahead: float = 60.0) -> tuple[float, bool]:
    """When an event happened on our clock, and whether the camera's timestamp was usable.

    The camera's ``UtcTime`` minus its clock ``offset`` is used when it lands between
    ``max_age`` before and ``max_ahead`` after ``received``; otherwise (no offset, zero or
    garbage timestamps) the time we received it is the best we know.
    """
    camera = parse_utc(utc_time)
    if camera is None or offset is None:
        return received, False
    corrected = camera - offset
    if received - max_age <= corrected <= received + max_ahead:
        return corrected, True
    return received, False
