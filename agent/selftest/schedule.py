"""Scheduled self-tests: each exit's cron ``schedule`` (APScheduler), postponed while it is busy.

A run that finds the door open, an alarm input active or a test already running is postponed
by ``schedule_retry``; one that the guard refuses (a real alarm in the last minute, the exit's
``min_interval``, ``limits.selftests_per_hour``) until the moment the guard names. Either is
tried again then, unless the next scheduled time comes first. Postponements are logged and
shown in ``agent status``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent.config import cron_trigger
from agent.events import rfc3339
from agent.selftest.guard import Refused, SelftestGuard
from agent.selftest.runner import Selftests, SilentOperator

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from agent.config import ExitSection

__all__ = ["SelftestSchedule"]

log = logging.getLogger(__name__)


class SelftestSchedule:
    """Owns the scheduler; ``start()`` in the agent's event loop, ``stop()`` on shutdown."""

    def __init__(self, selftests: Selftests, guard: SelftestGuard,
                 exits: dict[str, ExitSection]) -> None:
        self.selftests = selftests
        self.guard = guard
        self.exits = {name: ex for name, ex in exits.items() if ex.schedule}
        self.postponed: dict[str, dict[str, Any]] = {}
        self._scheduler: AsyncIOScheduler | None = None

    def start(self) -> None:
        if not self.exits:
            return  # without importing APScheduler (1.5 MiB of RSS, docs/performance.md)
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        # Our own lines say what matters (scheduled, postponed, the result); APScheduler's
        # "Running job"/"executed successfully" would repeat them at INFO on every run.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = AsyncIOScheduler()  # the system's local time zone, as cron has it
        for name, ex in self.exits.items():
            scheduler.add_job(self._due, cron_trigger(str(ex.schedule), scheduler.timezone),
                              args=[name], id=name, coalesce=True, max_instances=1,
                              misfire_grace_time=60)
        scheduler.start()
        self._scheduler = scheduler
        for job in scheduler.get_jobs():
            log.info("self-test of %s scheduled (%s), next at %s", job.id,
                     self.exits[job.id].schedule, job.next_run_time)

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def next_runs(self) -> dict[str, str]:
        """Exit -> time (RFC 3339 UTC) of its next scheduled (or retried) run."""
        out: dict[str, str] = {}
        if self._scheduler is None:
            return out
        for job in self._scheduler.get_jobs():
            name = job.args[0]
            when = job.next_run_time
            # Same format, same zone, fixed width: the strings sort like the times.
            if when is not None and (name not in out or rfc3339(when) < out[name]):
                out[name] = rfc3339(when)
        return out

    async def _due(self, name: str) -> None:
        reason = await self.selftests.postpone_reason(name)
        if reason is not None:
            self._postpone(name, reason)
            return
        try:
            self.guard.admit([name], "schedule")
        except Refused as refused:
            self._postpone(name, str(refused), at=refused.retry_at)
            return
        self.postponed.pop(name, None)
        await self.selftests.run([name], walk=False, trigger="schedule",
                                 operator=SilentOperator())

    def _postpone(self, name: str, reason: str, *, at: float | None = None) -> None:
        """Try again ``schedule_retry`` from now, or at ``at`` (epoch seconds)."""
        from apscheduler.triggers.date import DateTrigger

        assert self._scheduler is not None
        now = datetime.now(self._scheduler.timezone)
        retry = self.exits[name].schedule_retry if at is None else max(0.0, at - now.timestamp())
        at_time = now + timedelta(seconds=retry)
        regular = self._scheduler.get_job(name)
        if regular is not None and regular.next_run_time is not None and \
                regular.next_run_time <= at_time:
            log.warning("scheduled self-test of %s skipped: %s; the next scheduled run is at %s",
                        name, reason, regular.next_run_time)
            self.postponed[name] = {"reason": reason, "retry_at": None}
            return
        log.warning("scheduled self-test of %s postponed by %.0f s: %s", name, retry, reason)
        self.postponed[name] = {"reason": reason, "retry_at": rfc3339(at_time)}
        self._scheduler.add_job(self._due, DateTrigger(at_time), args=[name], id=f"{name}-retry",
                                replace_existing=True, misfire_grace_time=60)
