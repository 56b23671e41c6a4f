"""Which events a self-test caused: the only ones marked ``test``; everything else stays real.

A running self-test *claims* the events it expects from one device: a type, a count and a
window (the stimulus's ``alarm_within``, a walk pass's ``walk_within``). An event is marked
``test: true`` only when it consumes such a claim: same device, a claimed type, emitted inside
the window, and the claim not used up yet. A second alarm in the same window, an alarm after
the window, a forced door during a stimulus, a device going offline: all real, whatever runs.
A ``camera.snapshot`` is a test when the event that triggered it was.

The drivers' context (``agent.context``) asks ``claimed()`` for every event it passes on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["Claim", "TestMarks"]

MARKED_IDS = 1000
"""How many recent test event ids are remembered, to mark the snapshots they trigger."""


@dataclass
class Claim:
    """Up to ``count`` events of ``types`` from ``device`` between ``start`` and ``until``
    (monotonic seconds) are the self-test's own."""

    run_id: str
    device: str
    types: frozenset[str]
    start: float
    until: float
    count: int = 1

    def takes(self, device: str, event_type: str, now: float) -> bool:
        return (self.count > 0 and device == self.device and event_type in self.types
                and self.start <= now <= self.until)


class TestMarks:
    """The open claims of running self-tests (safe from any thread)."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._claims: list[Claim] = []
        self._marked: deque[str] = deque(maxlen=MARKED_IDS)
        self._lock = threading.Lock()

    # -- for the self-test engine --------------------------------------------------------------

    def claim(self, run_id: str, device: str, types: set[str], within: float, *,
              count: int = 1) -> Claim:
        """Claim the next ``count`` events of ``types`` from ``device`` in the next ``within``
        seconds as the run's own."""
        now = time.monotonic()
        claim = Claim(run_id, device, frozenset(types), now, now + within, count)
        with self._lock:
            self._claims = [c for c in self._claims if c.until >= now and c.count > 0]
            self._claims.append(claim)
        return claim

    def release(self, run_id: str) -> None:
        """The run ended: none of its claims marks anything any more."""
        with self._lock:
            self._claims = [c for c in self._claims if c.run_id != run_id]

    def claimed(self, device: str, event_type: str, data: dict[str, Any] | None) -> bool:
        """Whether this event, emitted now, is a self-test's own (consumes the claim)."""
        if event_type == "camera.snapshot" and data is not None:
            with self._lock:
                return data.get("trigger_id") in self._marked
        if not self._claims:  # no self-test running (replaced whole, never changed in place)
            return False
        now = time.monotonic()
        with self._lock:
            for claim in self._claims:
                if claim.takes(device, event_type, now):
                    claim.count -= 1
                    return True
        return False

    def note(self, event_id: str) -> None:
        """``event_id`` was marked: a snapshot it triggers is a test too."""
        with self._lock:
            self._marked.append(event_id)
