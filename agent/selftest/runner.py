"""The agent's self-tests: one run per exit at a time, reports retained, kept and summarised."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from agent.commands import CommandError
from agent.files import write_atomic
from agent.selftest.engine import ExitSelftest, Operator, rest_report

if TYPE_CHECKING:
    from agent.runtime import Agent

__all__ = ["QueueOperator", "Selftests", "SilentOperator"]

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("result", "summary", "finished", "trigger", "run_id")
"""What ``agent status`` shows of an exit's last report."""


class SilentOperator:
    """Nobody watches: scheduled runs and remote requests."""

    interactive = False

    async def show(self, item: dict[str, Any]) -> None:
        return None

    async def ask(self, question: str, timeout: float) -> str | None:
        return None

    def cannot(self) -> str | None:
        return None


class QueueOperator:
    """A technician at the other end of the control socket: progress out, answers in."""

    interactive = True

    def __init__(self, progress: asyncio.Queue[dict[str, Any] | None],
                 answers: asyncio.Queue[dict[str, Any]]) -> None:
        self.progress = progress
        self.answers = answers

    async def show(self, item: dict[str, Any]) -> None:
        await self.progress.put(item)

    async def ask(self, question: str, timeout: float) -> str | None:
        await self.progress.put({"kind": "question", "text": question, "timeout": timeout})
        try:
            answer = await asyncio.wait_for(self.answers.get(), timeout)
        except TimeoutError:
            return None
        return str(answer.get("answer", ""))

    def cannot(self) -> str | None:  # the terminal has Ctrl-C
        return None


class Selftests:
    """Runs exits' self-tests for the CLI, the schedule and remote requests."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.dir = agent.config.settings.agent.data_dir / "selftest"
        self.last: dict[str, dict[str, Any]] = {}
        self.running: dict[str, str] = {}

    def load(self) -> None:
        """The last report of each configured exit, kept across restarts and reloads (for
        ``agent status``); an exit removed by a reload is forgotten."""
        exits = self.agent.config.exits
        self.last = {name: report for name, report in self.last.items() if name in exits}
        for name in exits:
            if name in self.last:
                continue
            path = self.dir / f"{name}.json"
            try:
                self.last[name] = json.loads(path.read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as err:
                log.warning("last self-test report %s unreadable, ignored: %s", path, err)

    def exits(self, name: str | None) -> list[str]:
        """The exits ``name`` selects (all when ``None``).

        Raises:
            CommandError: no such exit, or none configured.
        """
        configured = list(self.agent.config.exits)
        if not configured:
            raise CommandError("no exits are configured ([exits.<name>] in the config file)")
        if name is None or name == "":
            return configured
        if name not in configured:
            raise CommandError(f"no exit {name!r} (configured: {', '.join(configured)})")
        return [name]

    async def run(self, names: list[str], *, walk: bool, trigger: str,
                  operator: Operator) -> list[dict[str, Any]]:
        """Run the exits one after the other; return their reports.

        Raises:
            CommandError: one of them is already being tested.
        """
        busy = [f"{n} (by {self.running[n]})" for n in names if n in self.running]
        if busy:
            raise CommandError(f"a self-test is already running at {', '.join(busy)}")
        for name in names:
            self.running[name] = trigger
        reports = []
        try:
            for name in names:
                test = ExitSelftest(self.agent, name, walk=walk, trigger=trigger,
                                    operator=operator)
                report = await test.run()
                self.running.pop(name, None)
                self._record(report)
                reports.append(report)
                if any(step["step"] == "aborted" for step in report["steps"]):
                    break  # Ctrl-C stops the run, not just this exit
        finally:
            for name in names:
                self.running.pop(name, None)
        return reports

    def _record(self, report: dict[str, Any]) -> None:
        name = report["exit"]
        self.last[name] = report
        log.log(logging.INFO if report["result"] == "pass" else logging.WARNING,
                "self-test of %s (%s): %s: %s", name, report["trigger"], report["result"].upper(),
                report["summary"])
        publisher = self.agent.publisher
        publisher.retain(publisher.topics.selftest(name), report)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / f"{name}.json", json.dumps(report, indent=1).encode())
        except OSError as err:
            log.warning("self-test report of %s not kept on disk: %s", name, err)
        self.agent.publish_status()

    async def postpone_reason(self, name: str) -> str | None:
        """Why a scheduled run should wait: running, door open, alarm active (a recent real
        alarm and the rate limits are the guard's, ``agent.selftest.guard``)."""
        if name in self.running:
            return f"a self-test is already running (by {self.running[name]})"
        roles = self.agent.config.exits[name].devices()
        _, reasons = await rest_report(self.agent, roles)
        return "; ".join(reasons) or None

    def summary(self) -> dict[str, Any]:
        """Per exit: result, summary, when and by what (for ``agent status``)."""
        out: dict[str, Any] = {}
        for name in sorted(set(self.last) | set(self.running)):
            report = self.last.get(name, {})
            out[name] = {k: report[k] for k in SUMMARY_KEYS if k in report}
            if name in self.running:
                out[name]["running"] = self.running[name]
        return out

