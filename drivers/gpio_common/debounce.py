"""Software debounce of one digital input, without I/O: raw edges in, settled changes out."""

from __future__ import annotations

from dataclasses import dataclass

# Timers fire a hair early on some loops; a settle check that early still counts as settled.
_SLACK = 1e-4


@dataclass(frozen=True)
class Change:
    """A settled change of the input: its new ``level`` and ``at``, the first edge that led to it."""

    level: bool
    at: float


class Debouncer:
    """A level counts once it has held for ``delay`` seconds since the input's last raw edge.

    A burst of edges therefore gives at most one change, stamped with the burst's first edge away
    from the settled level (when the door actually started to open), and a glitch that returns to
    the settled level before ``delay`` gives none. gpiozero's mock pins ignore ``bounce_time``
    and hardware bounce handling differs by backend, so this is the one debounce every GPIO
    driver uses. Times are monotonic seconds supplied by the caller.
    """

    def __init__(self, delay: float, level: bool) -> None:
        self.delay = delay
        self.level = level
        """The settled level."""
        self.raw = level
        self._first_edge: float | None = None
        self._last_edge: float | None = None

    @property
    def pending(self) -> bool:
        """Whether edges arrived that have not settled yet."""
        return self._last_edge is not None

    def edge(self, level: bool, now: float) -> float | None:
        """Record a raw edge to ``level``; returns when to call ``settle`` (None: nothing new)."""
        if level == self.raw:
            return None
        self.raw = level
        self._last_edge = now
        if self._first_edge is None and level != self.level:
            self._first_edge = now
        return now + self.delay

    def settle(self, now: float) -> Change | None:
        """The settled change, if the raw level has held for ``delay`` and differs from the last."""
        if self._last_edge is None or now + _SLACK < self._last_edge + self.delay:
            return None
        first = self._first_edge if self._first_edge is not None else self._last_edge
        self._first_edge = self._last_edge = None
        if self.raw == self.level:
            return None
        self.level = self.raw
        return Change(self.level, first)
