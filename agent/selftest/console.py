"""The technician's side of ``agent selftest``: through the running service, or in-process.

The service owns the serial ports and pins, so the CLI asks it over the control socket and
prints each step as it happens. With no service running, the CLI starts the drivers itself,
runs the same steps and stops them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent import control
from agent.commands import CommandError
from agent.errors import ControlError
from agent.units import format_clock

if TYPE_CHECKING:
    from agent.config import Config

__all__ = ["ConsoleOperator", "Terminal", "run_in_process", "run_through_service"]

ONLINE_WAIT = 10.0
"""Seconds an in-process run gives the exit's devices to come online before testing them."""
POLL = 0.2
"""Seconds between looks for Ctrl-C while waiting for the service."""

Show = Callable[[dict[str, Any]], None]
Listener = Callable[[str | None], None]


class Terminal:
    """The technician's terminal: questions on stderr, answers from stdin.

    One thread reads stdin for the whole run, so that a question nobody answered in time cannot
    eat the answer to the next one. Each line goes to the current listener; a line typed while
    no question is open is dropped. End of input is ``None``.
    """

    def __init__(self, stdin: TextIO | None = None, out: TextIO | None = None) -> None:
        self._stdin = stdin or sys.stdin
        self._out = out or sys.stderr
        self._listener: Listener | None = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._ended = False

    def ask(self, question: str, timeout: float | None, listener: Listener) -> None:
        """Print ``question`` with how long it stays open; ``listener(answer)`` gets the next
        line (stripped), or ``None`` at end of input."""
        until = ""
        if timeout:
            until = f" ({timeout:g} s, until {format_clock(time.time() + timeout)})"
        print(f"  ??? {question}{until} ", end="", file=self._out, flush=True)
        with self._lock:
            if self._ended:
                listener(None)
                return
            self._listener = listener
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, name="selftest-answers",
                                            daemon=True)
            self._reader.start()

    def unanswered(self, why: str) -> None:
        """The open question was closed without an answer: say so on its line."""
        with self._lock:
            self._listener = None
        print(f"({why})", file=self._out, flush=True)

    def _read(self) -> None:
        while True:
            line = self._stdin.readline()
            with self._lock:
                listener, self._listener = self._listener, None
                if not line:
                    self._ended = True
            if listener is not None:
                listener(line.strip() if line else None)
            if not line:
                return


def run_through_service(path: Path, exit_name: str | None, walk: bool, show: Show,
                        terminal: Terminal) -> dict[str, Any]:
    """Ask the running agent to run the self-tests; return its final reply.

    The first Ctrl-C asks the service to stop the test: it ends it with an ``aborted`` step,
    puts the exit back at rest and still answers with the reports. A second one leaves at once.

    Raises:
        AgentNotRunning: no agent listens; ControlError: not reachable (no permission) or the
        connection was lost; CommandError: the agent refused (no such exit, already running);
        KeyboardInterrupt: Ctrl-C twice.
    """
    inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
    with control.Session(path, "selftest", timeout=None, exit=exit_name, walk=walk) as session:

        def receive() -> None:
            try:
                for item in session:
                    inbox.put(("item", item))
            except (ControlError, OSError, ValueError) as err:
                inbox.put(("lost", err))

        threading.Thread(target=receive, name="selftest-service", daemon=True).start()
        question: dict[str, Any] | None = None
        stopping = False
        while True:
            try:
                kind, value = inbox.get(timeout=POLL)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                if stopping:
                    raise
                stopping = True
                if question is not None:
                    terminal.unanswered("Ctrl-C")
                    question = None
                show({"kind": "stopping"})
                _send(session, {"cancel": True})
                continue
            if kind == "lost":
                raise ControlError(f"lost the connection to the agent: {value}")
            if kind == "answer":
                if question is not None:  # end of input: an empty answer, the step is skipped
                    _send(session, {"answer": value or ""})
                question = None
                continue
            if question is not None:  # the service went on: the question's time was up
                terminal.unanswered(f"no answer within {question.get('timeout') or 0:g} s")
                question = None
            if "status" in value:
                if value["status"] != "ok":
                    raise CommandError(str(value.get("error", "no answer")))
                return dict(value)
            if value.get("kind") == "question":
                question = value
                terminal.ask(value["text"], value.get("timeout"),
                             lambda line: inbox.put(("answer", line)))
            else:
                show(value)


def _send(session: control.Session, message: dict[str, Any]) -> None:
    """An answer or a stop request; a service that already went on does not need it."""
    with contextlib.suppress(OSError):
        session.answer(message)


class ConsoleOperator:
    """A technician at this terminal (in-process runs)."""

    interactive = True

    def __init__(self, show: Show, terminal: Terminal) -> None:
        self._show = show
        self._terminal = terminal

    async def show(self, item: dict[str, Any]) -> None:
        self._show(item)

    async def ask(self, question: str, timeout: float) -> str | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()

        def settle(value: str | None) -> None:
            if not answer.done():
                answer.set_result(value)

        def deliver(line: str | None) -> None:  # on the terminal's reader thread
            loop.call_soon_threadsafe(settle, line)

        self._terminal.ask(question, timeout, deliver)
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            self._terminal.unanswered(f"no answer within {timeout:g} s")
            return None
        except asyncio.CancelledError:
            self._terminal.unanswered("Ctrl-C")
            raise

    def cannot(self) -> str | None:  # the terminal has Ctrl-C
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
