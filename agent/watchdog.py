"""Keeps systemd informed: READY once up, a one-line STATUS, and WATCHDOG only while work progresses.

A stalled agent must be restarted, so ``WATCHDOG=1`` is sent (at half of ``WATCHDOG_USEC``)
only when every progress check passes: the event loop runs this task, the buffer writer and
the publisher's thread went round their loops recently (``Heartbeat``), and every driver task
is still supervised. A broker outage or an
offline device is not a stall: those threads keep going round while they wait.

``kill -USR2 <pid>`` (root or the agent's user only; never reachable over MQTT) blocks the
event loop on purpose, to prove on a real installation that systemd restarts a stalled agent.
When systemd's watchdog kills the agent (SIGABRT), faulthandler writes every thread's
traceback to the journal first: where it was stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.systemd import Notifier

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger(__name__)

__all__ = ["STALL_SIGNAL", "Heartbeat", "ServiceWatch"]

MIN_STALL = 5.0
"""A worker thread is stuck when it has not gone round its loop for this long (or half of
the watchdog timeout, if longer). They go round at least once a second when idle."""
STATUS_EVERY = 10.0
"""How often the one-line STATUS is refreshed when there is no faster watchdog tick."""
CHANGE_POLL = 0.5
"""How often the cheap "what changed" key is compared: STATUS follows a broker or device
change within this, not at the next tick."""
STALL_SIGNAL = signal.SIGUSR2
STALL_MIN_SECONDS = 120.0

Check = Callable[[], "str | None"]


class Heartbeat:
    """Proof that a worker thread's loop goes round: the thread calls ``beat()`` every iteration."""

    def __init__(self, name: str, *, must_beat: bool = True) -> None:
        self.name = name
        self.must_beat = must_beat
        """False for a thread that may legitimately sleep long (a reconnect backoff): only
        that it is alive is checked."""
        self.thread: threading.Thread | None = None
        self.last = time.monotonic()

    def attach(self, thread: threading.Thread) -> None:
        """The thread this heartbeat belongs to (call before it starts beating)."""
        self.thread = thread
        self.last = time.monotonic()

    def beat(self) -> None:
        """Called by the thread each time round its loop."""
        self.last = time.monotonic()

    def problem(self, limit: float) -> str | None:
        """Why the thread is not making progress, or None when it is."""
        if self.thread is None:
            return f"{self.name} thread was never started"
        if not self.thread.is_alive():
            return f"{self.name} thread has died"
        age = time.monotonic() - self.last
        if self.must_beat and age > limit:
            return f"{self.name} thread stuck for {age:.0f} s"
        return None


class ServiceWatch:
    """Sends READY, STATUS, WATCHDOG and STOPPING for one ``agent run``.

    ``checks`` return a problem description or None; ``summary`` gives the STATUS line.
    """

    def __init__(
        self,
        notifier: Notifier,
        checks: list[Check],
        summary: Callable[[], str],
        changes: Callable[[], object] = lambda: None,
    ) -> None:
        self.notifier = notifier
        self.checks = checks
        self.summary = summary
        self.changes = changes
        """A cheap key (broker connected, devices up) whose change refreshes STATUS at once."""
        self._key: object = None
        interval = notifier.watchdog_interval
        self.tick = min(interval, STATUS_EVERY) if interval else STATUS_EVERY
        self.stall_limit = max(MIN_STALL, interval or 0.0)
        self.pings = 0
        self._problems: list[str] = []
        self._status = ""
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_agent(cls, agent: Agent) -> ServiceWatch:
        """The checks and summary of a running ``Agent``."""
        from agent.status import summary_line

        def beats() -> str | None:
            beating = (agent.pipeline.writer_beat, agent.publisher.beat)
            return "; ".join(p for b in beating if (p := b.problem(watch.stall_limit))) or None

        def drivers() -> str | None:
            return "; ".join(agent.supervisor.problems()) or None

        def changes() -> object:
            return agent.publisher.connected, tuple(d.online for d in agent.drivers)

        watch = cls(Notifier(), [beats, drivers], lambda: summary_line(agent.status()), changes)
        return watch

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Tell systemd we are ready and start the periodic task (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._status = self._safe_summary()
        self.notifier.notify(READY=1, STATUS=self._status)
        self._task = loop.create_task(self._run(), name="service-watch")
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(STALL_SIGNAL, self._stall)
        if self.notifier.watchdog_interval:
            faulthandler.enable(file=sys.stderr, all_threads=True)
            log.info("systemd watchdog: pinging every %.1f s while the agent makes progress",
                     self.notifier.watchdog_interval)

    def stop(self) -> None:
        """Tell systemd we are stopping; stop pinging (shutdown has its own timeout)."""
        self.notifier.notify(STOPPING=1, STATUS="stopping: flushing events to the broker")
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(STALL_SIGNAL)
        self.notifier.close()

    # -- the periodic task ----------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every failing progress check (empty when the agent makes progress)."""
        found = []
        for check in self.checks:
            try:
                problem = check()
            except Exception as err:  # a broken check must count as a failure, not pass
                problem = f"progress check failed: {type(err).__name__}: {err}"
            if problem:
                found.append(problem)
        return found

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick
        while True:
            await asyncio.sleep(max(0.0, min(CHANGE_POLL, next_tick - loop.time())))
            if loop.time() >= next_tick:
                next_tick = loop.time() + self.tick
                self.step()
            else:
                self.follow_changes()

    def follow_changes(self) -> None:
        """Refresh STATUS now when the broker or a device changed state since the last look
        (systemd's status line must not say DISCONNECTED for 10 s after a restart)."""
        try:
            key = self.changes()
        except Exception:
            return  # the next tick reports it
        if key == self._key:
            return
        self._key = key
        if not self._problems:
            status = self._safe_summary()
            if status != self._status:
                self._status = status
                self.notifier.notify(STATUS=status)

    def step(self) -> None:
        """One tick: check progress, then ping and refresh STATUS as appropriate."""
        problems = self.problems()
        if problems != self._problems:
            if problems:
                log.error("not making progress, withholding the systemd watchdog ping: %s",
                          "; ".join(problems))
            else:
                log.info("making progress again")
            self._problems = problems
        fields: dict[str, str | int] = {}
        if not problems and self.notifier.watchdog_interval:
            fields["WATCHDOG"] = 1
        status = f"STALLED: {'; '.join(problems)}" if problems else self._safe_summary()
        if status != self._status:
            fields["STATUS"] = self._status = status
        if fields and self.notifier.notify(**fields) and "WATCHDOG" in fields:
            self.pings += 1

    def _safe_summary(self) -> str:
        try:
            return self.summary()
        except Exception as err:
            log.exception("building the status summary failed")
            return f"running (status unavailable: {err})"

    def _stall(self) -> None:
        seconds = max(STALL_MIN_SECONDS, 4 * (self.notifier.watchdog_interval or 0))
        log.warning("%s: blocking the event loop for %.0f s on purpose (watchdog test); "
                    "systemd should restart the agent", STALL_SIGNAL.name, seconds)
        time.sleep(seconds)  # blocking the loop is the point
