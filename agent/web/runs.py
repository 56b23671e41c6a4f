"""Self-tests and walk tests started from the page, run by the same engine as ``agent selftest``.

A run's progress (the same items the CLI prints) is kept in order and streamed to the page that
watches it; the page answers questions. A run nobody watches any more (the phone left the page,
lost its network) is cancelled after ``GRACE`` seconds, exactly as a lost CLI session is: the
engine ends the run with an ``aborted`` step and restores the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from agent.commands import CommandError

if TYPE_CHECKING:
    from agent.runtime import Agent

__all__ = ["GRACE", "PageOperator", "Run", "Runs"]

log = logging.getLogger(__name__)

GRACE = 5.0
"""Seconds a run waits for its page to come back (a phone's network hiccup) before it is
cancelled."""
MAX_ITEMS = 2000
"""Progress items kept per run (a walk test across 20 exits has about 400)."""
KEEP_FINISHED = 20
"""Finished runs kept for their report downloads."""


class PageOperator:
    """The officer at the page: progress goes to the run's item list, answers come back."""

    interactive = True

    def __init__(self, run: Run) -> None:
        self.run = run
        self.answers: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self.cannot_do: str | None = None
        """Why the officer cannot do the instruction shown now (``Run.note``), until taken."""

    async def show(self, item: dict[str, Any]) -> None:
        if item.get("kind") == "prompt":  # a note meant for the step before is not for this one
            self.cannot_do = None
        self.run.add(item)

    def cannot(self) -> str | None:
        reason, self.cannot_do = self.cannot_do, None
        return reason

    async def ask(self, question: str, timeout: float) -> str | None:
        while not self.answers.empty():  # an answer to an earlier question that timed out
            self.answers.get_nowait()
        self.run.add({"kind": "question", "text": question, "timeout": timeout})
        try:
            return await asyncio.wait_for(self.answers.get(), timeout)
        except TimeoutError:
            return None


class Run:
    """One self-test or walk test started from the page, across one or more exits."""

    def __init__(self, exits: list[str], *, walk: bool, session_id: str) -> None:
        self.id = secrets.token_hex(6)
        self.exits = exits
        self.walk = walk
        self.session_id = session_id
        self.items: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        """Steps the officer marked as impossible, with why (in the run's JSON reports)."""
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.operator = PageOperator(self)
        self.watchers = 0
        self.abandoned = False
        self.ended = False
        self._changed = asyncio.Event()
        self._orphaned: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        return self.ended or (self.task is not None and self.task.done())

    def add(self, item: dict[str, Any]) -> None:
        if len(self.items) < MAX_ITEMS:
            self.items.append(item)
        self._changed.set()

    async def changed(self) -> None:
        """Wait until an item is added or the run ends."""
        self._changed.clear()
        await self._changed.wait()

    def answer(self, text: str) -> None:
        """The officer's answer to the open question.

        Raises:
            CommandError: no question is waiting for an answer.
        """
        try:
            self.operator.answers.put_nowait(text)
        except asyncio.QueueFull as err:
            raise CommandError("an answer is already waiting") from err

    def note(self, reason: str) -> dict[str, Any]:
        """The officer cannot do the step the page shows now: keep why, with that instruction,
        and have the engine skip the step (with the reason) instead of waiting out its window.

        Raises:
            CommandError: no instruction is shown (nothing to mark).
        """
        prompt = next((i for i in reversed(self.items) if i.get("kind") == "prompt"), None)
        if prompt is None or self.done:
            raise CommandError("no walk-test instruction is shown now")
        note = {"kind": "note", "exit": prompt["exit"], "instruction": prompt["text"],
                "reason": reason}
        self.notes.append(note)
        self.add(note)
        self.operator.cannot_do = reason
        return note

    def watch(self) -> None:
        self.watchers += 1
        if self._orphaned is not None:
            self._orphaned.cancel()
            self._orphaned = None

    def unwatch(self) -> None:
        self.watchers -= 1
        self.orphan_timer()

    def orphan_timer(self) -> None:
        """Cancel the run if nobody watches it within ``GRACE`` seconds."""
        if self.watchers > 0 or self.done:
            return
        loop = asyncio.get_running_loop()
        self._orphaned = loop.call_later(GRACE, self._abandon)

    def _abandon(self) -> None:
        if self.watchers == 0 and self.task is not None and not self.task.done():
            log.info("web: run %s of %s: its page went away; cancelling it", self.id,
                     ", ".join(self.exits))
            self.abandoned = True
            self.task.cancel()

    def reports_with_notes(self) -> list[dict[str, Any]]:
        """The reports, each with the officer's notes on its exit (``notes``) when there are."""
        out = []
        for report in self.reports:
            notes = [{k: n[k] for k in ("instruction", "reason")} for n in self.notes
                     if n["exit"] == report["exit"]]
            out.append({**report, "notes": notes} if notes else report)
        return out

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "exits": self.exits, "walk": self.walk, "done": self.done,
                "session": self.session_id, "error": self.error,
                "results": {r["exit"]: r["result"] for r in self.reports}}


class Runs:
    """The runs started from the page; the finished ones are kept for their reports."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.runs: OrderedDict[str, Run] = OrderedDict()

    def start(self, exits: list[str] | None, *, walk: bool, session_id: str) -> Run:
        """Start testing ``exits`` (all when None or empty).

        Raises:
            CommandError: no such exit, or one of them is being tested already.
        """
        selftests = self.agent.selftests
        names: list[str] = []
        for name in exits or [""]:  # "": every exit
            names += [n for n in selftests.exits(name) if n not in names]
        busy = [n for n in names if n in selftests.running]
        if busy:
            raise CommandError(f"a self-test is already running at {', '.join(busy)}")
        self.agent.guard.admit(names, "web")  # never during a real alarm (agent.selftest.guard)
        run = Run(names, walk=walk, session_id=session_id)
        run.task = asyncio.create_task(self._run(run), name=f"web-run-{run.id}")
        self.runs[run.id] = run
        run.orphan_timer()
        while len(self.runs) > KEEP_FINISHED:
            oldest = next((r for r in self.runs.values() if r.done), None)
            if oldest is None:
                break
            del self.runs[oldest.id]
        return run

    async def _run(self, run: Run) -> None:
        try:
            # One exit at a time: the engine ends a cancelled exit with a report and returns, and
            # a run that was stopped or left must not start the next exit.
            for name in run.exits:
                if run.abandoned:
                    break
                run.reports += await self.agent.selftests.run([name], walk=run.walk,
                                                              trigger="web", operator=run.operator)
        except CommandError as err:
            run.error = str(err)
        except asyncio.CancelledError:
            run.error = "cancelled"
        except Exception as err:  # a bug: the page must still see the run end
            log.exception("web: run %s failed", run.id)
            run.error = f"internal error: {err}"
        finally:
            run.ended = True
            run.add({"kind": "end", "run": run.public()})

    async def stop(self) -> None:
        for run in self.runs.values():
            if run.task is not None and not run.task.done():
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run.task
