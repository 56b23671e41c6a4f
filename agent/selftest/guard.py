"""When a self-test may start: never during a real alarm; remote and scheduled runs rate-limited.

- No run starts at an exit that had a real alarm (an ``eas.alarm`` or ``door.forced`` with
  ``test: false``) in the last ``ALARM_QUIET`` seconds, whoever asks.
- Remote and scheduled runs of one exit are at least ``exits.<name>.min_interval`` apart (a
  run of any trigger counts as the last one), and all exits together start at most
  ``limits.selftests_per_hour`` of them in any hour.

Every refusal names the reason and the moment the next run is allowed.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from agent.commands import CommandError
from agent.units import format_clock, format_duration

if TYPE_CHECKING:
    from agent.config import Settings

__all__ = ["ALARM_QUIET", "Refused", "SelftestGuard"]

ALARM_QUIET = 60.0
"""Seconds after a real alarm at an exit during which no self-test starts there."""
REAL_ALARMS = ("eas.alarm", "door.forced")
LIMITED = ("remote", "schedule")
"""Triggers that are rate-limited; a technician at the control socket (``cli``) or a paired
operator on the web page (``web``) is not."""
HOUR = 3600.0


class Refused(CommandError):
    """A self-test may not start now; ``retry_at`` (epoch seconds) is when it may."""

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class SelftestGuard:
    """Tracks real alarms (fed every committed event) and the starts of runs."""

    def __init__(self, settings: Settings) -> None:
        self.reconfigure(settings)
        self._real_alarm: dict[str, tuple[float, str]] = {}
        self._last_start: dict[str, float] = {}
        self._limited_starts: deque[float] = deque()

    def reconfigure(self, settings: Settings) -> None:
        """The exits (a reload may change them); what happened so far is kept."""
        self.exits = settings.exits
        self.per_hour = settings.limits.selftests_per_hour
        self._exit_of = {device: name for name, ex in settings.exits.items()
                         for role, device in ex.devices().items() if role in ("eas", "door")}

    def committed(self, env: dict[str, Any]) -> None:
        """Note a real alarm (on the buffer's writer thread; a dict store is atomic)."""
        if env["type"] in REAL_ALARMS and not env.get("test"):
            name = self._exit_of.get(env["deviceid"])
            if name is not None:
                self._real_alarm[name] = (time.time(), f"{env['type']} from {env['deviceid']}")

    def admit(self, names: list[str], trigger: str) -> None:
        """Record that runs of ``names`` start now, or refuse all of them.

        Raises:
            Refused: an exit had a real alarm too recently, or a rate limit is reached.
        """
        now = time.time()
        refusals = [r for r in (self._refusal(n, trigger, now) for n in names) if r]
        if trigger in LIMITED:
            while self._limited_starts and self._limited_starts[0] <= now - HOUR:
                self._limited_starts.popleft()
            if len(self._limited_starts) + len(names) > self.per_hour:
                at = self._limited_starts[0] + HOUR if self._limited_starts else now
                refusals.append((f"limits.selftests_per_hour {self.per_hour} remote and "
                                 "scheduled self-tests have started in the last hour", at))
        if refusals:
            at = max(at for _, at in refusals)
            raise Refused(f"self-test refused: {'; '.join(why for why, _ in refusals)}; the next "
                          f"is allowed at {format_clock(at)}", at)
        for name in names:
            self._last_start[name] = now
            if trigger in LIMITED:
                self._limited_starts.append(now)

    def _refusal(self, name: str, trigger: str, now: float) -> tuple[str, float] | None:
        alarm = self._real_alarm.get(name)
        if alarm is not None and now - alarm[0] < ALARM_QUIET:
            return (f"{name} is in a real alarm ({alarm[1]} at {format_clock(alarm[0])})",
                    alarm[0] + ALARM_QUIET)
        last = self._last_start.get(name)
        spec = self.exits.get(name)
        interval = spec.min_interval if spec is not None else 0.0
        if trigger in LIMITED and last is not None and now - last < interval:
            return (f"the last self-test of {name} started at {format_clock(last)} and "
                    f"exits.{name}.min_interval is {format_duration(interval)}",
                    last + interval)
        return None
