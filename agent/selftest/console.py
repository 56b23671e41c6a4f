"""The technician's side of ``agent selftest``: through the running service, or in-process.

The service owns the serial ports and pins, so the CLI asks it over the control socket and
prints each step as it happens. With no service running, the CLI starts the drivers itself,
runs the same steps and stops them again.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import control
from agent.commands import CommandError

if TYPE_CHECKING:
    from agent.config import Config

__all__ = ["ConsoleOperator", "run_in_process", "run_through_service"]

ONLINE_WAIT = 10.0
"""Seconds an in-process run gives the exit's devices to come online before testing them."""

Show = Callable[[dict[str, Any]], None]
Ask = Callable[[str], str | None]


def ask_stdin(question: str) -> str | None:
    """Ask on stderr, read one line from stdin; ``None`` at end of input."""
    print(f"  ??? {question} ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    return line.strip() if line else None


def run_through_service(path: Path, exit_name: str | None, walk: bool, show: Show,
                        ask: Ask) -> dict[str, Any]:
    """Ask the running agent to run the self-tests; return its final reply.

    Raises:
        AgentNotRunning: no agent listens; ControlError: not reachable (no permission);
        CommandError: the agent refused (no such exit, already running).
    """
    with control.Session(path, "selftest", timeout=None, exit=exit_name, walk=walk) as session:
        for item in session:
            if "status" in item:
                if item["status"] != "ok":
                    raise CommandError(str(item.get("error", "no answer")))
                return item
            if item.get("kind") == "question":
                session.answer({"answer": ask(item["text"]) or ""})
            else:
                show(item)
    raise CommandError("the agent ended the self-test without a result")


class ConsoleOperator:
    """A technician at this terminal (in-process runs)."""

    interactive = True

    def __init__(self, show: Show, ask: Ask) -> None:
        self._show = show
        self._ask = ask

    async def show(self, item: dict[str, Any]) -> None:
        self._show(item)

    async def ask(self, question: str, timeout: float) -> str | None:
        # A daemon thread: a question nobody answers must not keep the process alive.
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()

        def settle(value: str | None) -> None:
            if not answer.done():
                answer.set_result(value)

        def read() -> None:
            loop.call_soon_threadsafe(settle, self._ask(question))

        threading.Thread(target=read, name="selftest-answer", daemon=True).start()
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            return None


def run_in_process(config: Config, exit_name: str | None, walk: bool,
                   operator: ConsoleOperator, *,
                   announce: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
    """Start the drivers here, run the self-tests, stop; return the reports. ``announce`` is
    called once this process holds the data_dir, before the drivers start.

    Raises:
        CommandError: no such exit; InstanceLocked: an agent runs on this data_dir;
        OSError: the data directory or a device cannot be used.
    """
    from agent.runtime import Agent

    agent = Agent(config, service=False)
    names = agent.selftests.exits(exit_name)

    async def main() -> list[dict[str, Any]]:
        agent.instance.acquire()  # before anything is opened or printed
        announce()
        await agent.start()
        try:
            devices = {d for n in names for d in config.exits[n].devices().values()}
            await agent.wait_online(devices, ONLINE_WAIT)
            return await agent.selftests.run(names, walk=walk, trigger="cli",
                                             operator=operator)
        finally:
            await agent.stop()

    return asyncio.run(main())
