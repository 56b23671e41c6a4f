"""When a door is armed: always, never, or during weekly windows such as "mon-fri 19:00-07:30"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW_HELP = ("'HH:MM-HH:MM' with optional days first: 'mon-fri 19:00-07:30', 'sat,sun "
               "00:00-24:00'; a window ending at or before its start runs past midnight")
_WINDOW = re.compile(r"^\s*(?:(?P<days>[a-z,\- ]+?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*"
                     r"(?P<end>\d{1,2}:\d{2})\s*$")


def _minutes(text: str, *, end: bool) -> int:
    hours, minutes = (int(p) for p in text.split(":"))
    total = hours * 60 + minutes
    if minutes >= 60 or total > 24 * 60 or (total == 24 * 60 and not end):
        raise ValueError(f"not a time of day: {text!r}")
    return total


def _days(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unknown day in {text!r}: use {', '.join(DAYS)}")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(out)


@dataclass(frozen=True)
class Window:
    """Armed from ``start`` to ``end`` (minutes of the day) on windows starting on ``days``."""

    days: frozenset[int]
    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> Window:
        """Parse one window.

        Raises:
            ValueError: not in the accepted form (the message shows it).
        """
        match = _WINDOW.match(text.lower())
        if not match:
            raise ValueError(f"armed window {text!r}: expected {WINDOW_HELP}")
        try:
            days = _days(match["days"]) if match["days"] else frozenset(range(7))
            start = _minutes(match["start"], end=False)
            end = _minutes(match["end"], end=True)
        except ValueError as err:
            raise ValueError(f"armed window {text!r}: {err}") from err
        return cls(days, start, end)

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute + when.second / 60
        day = when.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # Past midnight: the evening part on the window's day, the morning part on the next.
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )


@dataclass(frozen=True)
class ArmSchedule:
    """``armed = true`` / ``false`` / a list of windows, in the Pi's local time."""

    always: bool
    windows: tuple[Window, ...] = ()

    @classmethod
    def parse(cls, value: bool | list[str]) -> ArmSchedule:
        """Build from the config value.

        Raises:
            ValueError: a window is not in the accepted form.
        """
        if isinstance(value, bool):
            return cls(always=value)
        return cls(always=False, windows=tuple(Window.parse(w) for w in value))

    @property
    def scheduled(self) -> bool:
        """Whether arming changes over time (so the driver re-checks it every minute)."""
        return bool(self.windows)

    def armed_at(self, when: datetime) -> bool:
        """Whether the door is armed at local time ``when``."""
        return self.always or any(w.contains(when) for w in self.windows)
