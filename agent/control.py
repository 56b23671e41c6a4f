"""The control socket: JSON lines over a Unix socket, for ``agent status``, ``sim`` and ``selftest``.

A request is one line ``{"command": ..., ...params}``. The server answers with zero or more
``{"progress": ...}`` lines (for long commands) and one final line
``{"status": "ok", ...}`` or ``{"status": "error", "error": ...}``. While a command runs, the
client may send more lines (answers to a walk test's questions); the command reads them.
Closing the connection before the final line cancels the command.

Bounds (``[limits]``): a line of at most ``MAX_LINE`` bytes and ``request_max_depth`` levels,
the first line within ``control_first_line``, no line either way for ``control_idle`` ends a
running command, and at most ``control_clients`` connections at once (the next is answered
with an error and closed at once, so idle clients cannot use up the agent's file descriptors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.commands import CommandError, Commands, json_depth
from agent.errors import AgentNotRunning, ControlError

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
"""The longest request or answer line a client may send."""
PROGRESS_KEY = "_progress"
"""Handlers that stream put an ``asyncio.Queue`` here in their params (the server's)."""
ANSWERS_KEY = "_answers"
"""An ``asyncio.Queue`` of the JSON objects the client sends after its request."""


class ControlServer:
    """Serves ``commands`` on ``path``, mode 0660 (owner and group only)."""

    def __init__(self, path: Path, commands: Commands, *, max_clients: int = 16,
                 first_line: float = 5.0, idle: float = 600.0, max_depth: int = 16) -> None:
        self.path = path
        self.commands = commands
        self.max_clients, self.first_line, self.idle = max_clients, first_line, idle
        self.max_depth = max_depth
        self.clients = 0
        self.refused = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket, replacing a stale one.

        Raises:
            OSError: the directory is missing or not writable.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if _alive(self.path):
                raise OSError(f"another agent is already listening on {self.path}")
            self.path.unlink()
        old = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= self.max_clients:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("control socket: %d clients connected, limits.control_clients; "
                            "refused %d connections so far", self.clients, self.refused)
            await _reply(writer, {"status": "error", "error": "too many control clients "
                                  f"(limits.control_clients {self.max_clients}); try again"})
            return
        self.clients += 1
        try:
            await self._session(reader, writer)
        finally:
            self.clients -= 1

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), self.first_line)
            except TimeoutError:
                await _reply(writer, {"status": "error", "error": "no request within "
                                      f"limits.control_first_line {self.first_line:g} s"})
                return
            reply: dict[str, Any]
            activity = _Activity()
            try:
                request = self._parse(line)
                started, command = time.monotonic(), request.pop("command")
                log.debug("control request %s %s", command,
                          json.dumps(request, default=str)[:300])
                progress: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
                answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
                request[PROGRESS_KEY] = progress
                request[ANSWERS_KEY] = answers
                task = asyncio.create_task(self.commands.call(command, request))
                activity.touch()
                listener = asyncio.create_task(_listen(reader, answers, task, activity))
                watchdog = asyncio.create_task(_idle_watch(task, activity, self.idle))
                try:
                    await _relay(progress, task, writer, activity)
                finally:
                    listener.cancel()
                    watchdog.cancel()
                reply = {"status": "ok", **task.result()}
                log.debug("control request %s answered ok in %.0f ms", command,
                          (time.monotonic() - started) * 1000)
            except ConnectionError:
                raise  # the client went away: nobody to answer (the command was cancelled)
            except (CommandError, json.JSONDecodeError, UnicodeDecodeError) as err:
                reply = {"status": "error", "error": str(err)}
                log.debug("control request refused: %s", err)
            except asyncio.CancelledError:
                if activity.timed_out:
                    reply = {"status": "error", "error": "nothing sent either way for "
                             f"limits.control_idle {self.idle:g} s: the command was stopped"}
                else:
                    raise
            except Exception as err:
                log.exception("control command failed")
                reply = {"status": "error", "error": f"internal error: {err}"}
            await _reply(writer, reply)
        except ValueError:  # asyncio's LimitOverrunError: a line longer than MAX_LINE
            await _reply(writer, {"status": "error", "error": "request line longer than "
                                  f"{MAX_LINE} bytes"})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _parse(self, line: bytes) -> dict[str, Any]:
        """The request object of ``line``.

        Raises:
            CommandError: too deep, or not an object with a "command".
            json.JSONDecodeError, UnicodeDecodeError: not JSON.
        """
        if json_depth(line, self.max_depth) > self.max_depth:
            raise CommandError(f"request is nested deeper than limits.request_max_depth "
                               f"{self.max_depth}")
        request = json.loads(line or b"{}")
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            raise CommandError('expected a JSON object with "command"')
        return request


class _Activity:
    """When a line last went either way; set ``timed_out`` when the idle limit ended it."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.timed_out = False

    def touch(self) -> None:
        self.at = time.monotonic()


async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(json.dumps(reply, default=str).encode() + b"\n")
        await writer.drain()
    writer.close()


async def _idle_watch(task: asyncio.Task[dict[str, Any]], activity: _Activity,
                      idle: float) -> None:
    """Cancel ``task`` once no line went either way for ``idle`` seconds."""
    while not task.done():
        left = activity.at + idle - time.monotonic()
        if left <= 0:
            log.warning("control client idle for %g s: cancelling its command", idle)
            activity.timed_out = True
            task.cancel()
            return
        await asyncio.sleep(left)


async def _listen(reader: asyncio.StreamReader, answers: asyncio.Queue[dict[str, Any]],
                  task: asyncio.Task[dict[str, Any]], activity: _Activity) -> None:
    """Queue each JSON object line the client sends while its command runs. ``{"cancel":
    true}`` (the technician's Ctrl-C) cancels the command and the client still gets its reply;
    a client that goes away (lost session) cancels it too: a walk test nobody watches must end."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
        while line := await reader.readline():
            activity.touch()
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("cancel") is True:
                    log.info("control client asked to stop its command")
                    task.cancel()
                elif isinstance(message, dict):
                    await answers.put(message)
    if not task.done():
        log.info("control client went away: cancelling its command")
        task.cancel()


async def _relay(
    progress: asyncio.Queue[dict[str, Any] | None],
    task: asyncio.Task[dict[str, Any]],
    writer: asyncio.StreamWriter,
    activity: _Activity,
) -> None:
    """Forward progress lines until the command finishes."""
    while True:
        getter = asyncio.ensure_future(progress.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            item = getter.result()
            if item is not None:
                writer.write(json.dumps({"progress": item}, default=str).encode() + b"\n")
                await writer.drain()
                activity.touch()
            continue
        getter.cancel()
        while not progress.empty():
            item = progress.get_nowait()
            if item is not None:
                writer.write(json.dumps({"progress": item}, default=str).encode() + b"\n")
        return


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


class Session:
    """One command over the control socket: iterate for its progress items and final reply
    (the item with ``status``); ``answer()`` sends a line back while it runs.

    Raises:
        ControlError: no agent listens on ``path`` (not running, or no permission).
    """

    def __init__(self, path: Path, command: str, *, timeout: float | None = 30.0,
                 **params: Any) -> None:
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError as err:
            sock.close()
            raise AgentNotRunning(f"the agent is not running (no control socket at {path})") \
                from err
        except ConnectionRefusedError as err:
            sock.close()
            raise AgentNotRunning(f"the agent is not running (nothing listens on {path})") \
                from err
        except PermissionError as err:
            sock.close()
            raise ControlError(
                f"no permission to use {path}: run as root or as a member of the agent's group"
            ) from err
        except OSError as err:
            sock.close()
            raise ControlError(f"the agent does not answer on {path}: {err.strerror}") from err
        self._sock = sock
        self._stream = sock.makefile("rwb")
        # An agent at its client limit answers and hangs up before reading: its reply is
        # still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.answer({"command": command, **params})

    def answer(self, message: dict[str, Any]) -> None:
        """Send one JSON line to the running command."""
        self._stream.write(json.dumps(message).encode() + b"\n")
        self._stream.flush()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self._stream:
            message = json.loads(line)
            if "progress" in message:
                yield message["progress"]
                continue
            yield message
            return
        raise ControlError(f"the agent closed {self.path} without answering")

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a request the agent never read (it was busy)
            self._stream.close()
        self._sock.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(path: Path, command: str, *, timeout: float = 30.0, **params: Any) -> Iterator[
    dict[str, Any]
]:
    """Send one command; yield each progress item, then the final reply (``status`` key).

    Raises:
        ControlError: no agent listens on ``path`` (not running, or no permission).
    """
    with Session(path, command, timeout=timeout, **params) as session:
        yield from session


def call(path: Path, command: str, *, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
    """``request()`` for commands without progress: the final reply.

    Raises:
        ControlError: not reachable; CommandError: the agent answered with an error.
    """
    replies = list(request(path, command, timeout=timeout, **params))
    reply = replies[-1] if replies else {}
    if reply.get("status") != "ok":
        raise CommandError(str(reply.get("error", "no answer")))
    return reply
