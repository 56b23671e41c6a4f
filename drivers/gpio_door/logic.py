"""The door's rules without I/O: opened/closed, held open, and forced versus request-to-exit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A held-open deadline checked a hair early (timer jitter) still counts.
_SLACK = 1e-3


@dataclass(frozen=True)
class DoorEvent:
    """One event to emit: catalogue ``type``, ``data``, and ``at`` (monotonic seconds)."""

    type: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)


class DoorLogic:
    """The rules of README.md ("Rules"), fed with settled (debounced) changes in time order.

    - An opening is *authorised* when the request-to-exit (REX) input is active at that moment,
      or was last active no more than ``shunt`` seconds before it.
    - An opening while armed that is not authorised is ``door.forced`` (after ``door.opened``).
    - A door open for ``held_open_after`` seconds gives ``door.held_open``, then again every
      ``repeat`` seconds while it stays open (``repeat`` 0: once). 0 disables held-open.
    - The state at start is not an event; an open door's held-open time counts from then.
    """

    def __init__(self, *, is_open: bool, now: float, held_open_after: float, repeat: float,
                 shunt: float, rex_active: bool = False) -> None:
        self.is_open = is_open
        self.since = now
        self.held_open_after = held_open_after
        self.repeat = repeat
        self.shunt = shunt
        self.rex_active = rex_active
        self.rex_last: float | None = now if rex_active else None
        """When the REX was last active (its release, or its activation while it is held)."""
        self.forced = False
        self.held_open = False
        self.openings = 0
        self._held_next = now + held_open_after if is_open and held_open_after else None

    def rex(self, active: bool, at: float) -> None:
        """The REX input settled to ``active`` at ``at``."""
        self.rex_active = active
        self.rex_last = at

    def authorised(self, at: float) -> bool:
        """Whether an opening at ``at`` is covered by the REX or its shunt window."""
        if self.rex_active:
            return True
        return self.rex_last is not None and 0 <= at - self.rex_last <= self.shunt

    def contact(self, is_open: bool, at: float, *, armed: bool) -> list[DoorEvent]:
        """The door settled to ``is_open`` at ``at``; ``armed`` is whether it was armed then."""
        if is_open == self.is_open:
            return []
        self.is_open = is_open
        self.since = at
        self.held_open = False
        if not is_open:
            self.forced = False
            self._held_next = None
            return [DoorEvent("door.closed", at)]
        self.openings += 1
        self.forced = armed and not self.authorised(at)
        self._held_next = at + self.held_open_after if self.held_open_after else None
        events = [DoorEvent("door.opened", at)]
        if self.forced:
            events.append(DoorEvent("door.forced", at))
        return events

    @property
    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do next (monotonic seconds), if ever."""
        return self._held_next

    def tick(self, now: float) -> list[DoorEvent]:
        """Held-open events due by ``now``."""
        events = []
        while self.is_open and self._held_next is not None and now + _SLACK >= self._held_next:
            due = self._held_next
            self.held_open = True
            events.append(DoorEvent("door.held_open", due,
                                    {"open_for_s": round(due - self.since, 3)}))
            self._held_next = due + self.repeat if self.repeat else None
        return events
