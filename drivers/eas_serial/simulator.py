"""A simulated EAS pedestal: writes a profile's lines to a pseudo-terminal, serial URL or TCP port.

Used by the tests, the benchmark and simulation mode (``simulate = true``). It can alarm, report
interference, faults and people counts, send noise, fall silent, and answer a poll command::

    link = PtyLink()                      # or UrlLink("/tmp/ttyB"), TcpLink(port=0)
    sim = PedestalSimulator.for_profile("pipe-events", link)
    sim.alarm(direction="out")            # the driver reading link.port sees ALARM|OUT|1|1

Run ``python -m drivers.eas_serial.simulator --help`` for an interactive pedestal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import serial

from drivers.eas_serial.config import SimTemplates, load_profile

__all__ = ["Link", "PedestalSimulator", "PtyLink", "SimulatorError", "SocatPair", "TcpLink",
           "UrlLink"]


class SimulatorError(ValueError):
    """A command the simulated pedestal cannot carry out (no template for it, bad value)."""


class Link:
    """Where the simulated pedestal's bytes go; ``on_input`` gets what the driver sends."""

    port: str
    on_input: Callable[[bytes], None] = staticmethod(lambda data: None)

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _reader(self, read: Callable[[], bytes], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                data = read()
            except (OSError, serial.SerialException):
                return
            if data:
                self.on_input(data)


class PtyLink(Link):
    """A private pseudo-terminal pair: the driver opens ``port`` (the slave), we hold the master."""

    def __init__(self) -> None:
        import termios
        import tty

        self._master, self._slave = os.openpty()
        tty.setraw(self._slave, termios.TCSANOW)  # no echo, no line discipline: a plain wire
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        os.set_blocking(self._master, False)
        self._thread = threading.Thread(target=self._reader, args=(self._read, self._stop),
                                        daemon=True, name="sim-pty")
        self._thread.start()

    def _read(self) -> bytes:
        import select

        ready, _, _ = select.select([self._master], [], [], 0.2)
        return os.read(self._master, 4096) if ready else b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                time.sleep(0.001)  # the driver is not reading: a real wire would drop bytes

    def close(self) -> None:
        self._stop.set()
        # Join first: a closed descriptor number is soon reused, and the reader must not read
        # another file's bytes through it.
        self._thread.join(1)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class UrlLink(Link):
    """An existing port by pyserial URL, e.g. one end of a socat pty pair."""

    def __init__(self, url: str) -> None:
        self.port = url
        self._ser = serial.serial_for_url(url, timeout=0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader,
                                        args=(lambda: self._ser.read(4096), self._stop),
                                        daemon=True, name="sim-url")
        self._thread.start()

    def write(self, data: bytes) -> None:
        self._ser.write(data)
        self._ser.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)  # a read in progress ends within its timeout
        self._ser.close()


class TcpLink(Link):
    """A serial-over-IP device server: listens on 127.0.0.1 and talks to the client connected."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._server = socket.create_server((host, port))
        self._server.settimeout(0.2)
        self.tcp_port = self._server.getsockname()[1]
        self.port = f"socket://{host}:{self.tcp_port}"
        self._client: socket.socket | None = None
        self._stop = threading.Event()
        self.connected = threading.Event()
        threading.Thread(target=self._serve, daemon=True, name="sim-tcp").start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.2)
            self._client = conn
            self.connected.set()

            def read(c: socket.socket = conn) -> bytes:
                try:
                    data = c.recv(4096)
                except TimeoutError:
                    return b""
                if not data:
                    raise OSError("client closed")
                return data

            self._reader(read, self._stop)
            self.connected.clear()
            with contextlib.suppress(OSError):
                conn.close()

    def write(self, data: bytes) -> None:
        client = self._client
        if client is None:
            raise SimulatorError("no client connected to the simulated device server")
        client.sendall(data)

    def drop_client(self) -> None:
        """Close the current connection, as a device server that reboots does."""
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.shutdown(socket.SHUT_RDWR)
            self._client.close()

    def close(self) -> None:
        self._stop.set()
        self.drop_client()
        self._server.close()


class SocatPair:
    """Two linked pseudo-terminals from socat: the driver opens ``driver_end``, the pedestal
    ``pedestal_end``. Stopping socat is what unplugging a USB adapter looks like to the driver;
    starting it again brings the same paths back, as a ``/dev/serial/by-id`` link reappears.
    """

    def __init__(self, directory: Path) -> None:
        if shutil.which("socat") is None:
            raise RuntimeError("socat is not installed (apt-get install socat)")
        directory.mkdir(parents=True, exist_ok=True)
        self.driver_end = directory / "ttyDRIVER"
        self.pedestal_end = directory / "ttyPEDESTAL"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> SocatPair:
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.driver_end}",
             f"pty,raw,echo=0,link={self.pedestal_end}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not (self.driver_end.exists() and self.pedestal_end.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Unplug: socat exits and removes its links; the driver's reads fail."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


class PedestalSimulator:
    """The pedestal: formats events with a profile's templates and writes them to a ``Link``.

    A profile with a ``poll_reply`` is polled: events wait until the driver sends the poll
    command, then go out followed by the reply, as such controllers do.
    """

    def __init__(self, link: Link, templates: SimTemplates, *, terminator: str = "\n",
                 encoding: str = "utf-8", poll_command: str | None = None) -> None:
        self.link = link
        self.templates = templates
        self.terminator = terminator
        self.encoding = encoding
        self.poll_command = poll_command.strip().encode(encoding) if poll_command else None
        self.silent_until = 0.0
        self.sent: list[str] = []
        self.polls = 0
        self._queue: list[bytes] = []
        self._lock = threading.Lock()
        link.on_input = self._on_input

    @classmethod
    def for_profile(cls, name: str, link: Link) -> PedestalSimulator:
        """A pedestal speaking the example profile ``name`` (``profiles/<name>.toml``).

        Raises:
            ValueError: no such profile.
        """
        profile = load_profile(name)
        return cls(link, SimTemplates(**profile.get("simulator", {})),
                   terminator=profile.get("terminator", "\n"),
                   poll_command=profile.get("poll_command"))

    @property
    def silent(self) -> bool:
        return time.monotonic() < self.silent_until

    def silence(self, seconds: float = float("inf")) -> None:
        """Send nothing (not even poll replies) for ``seconds``."""
        self.silent_until = time.monotonic() + seconds

    def resume(self) -> None:
        self.silent_until = 0.0

    def _on_input(self, data: bytes) -> None:
        if self.poll_command is None or self.poll_command not in data or self.silent:
            return
        self.polls += 1
        with self._lock:
            queued, self._queue = self._queue, []
        reply = self._frame(self.templates.poll_reply) if self.templates.poll_reply else b""
        self._write(b"".join(queued) + reply)

    def _frame(self, line: str) -> bytes:
        return (line + self.terminator).encode(self.encoding)

    def _write(self, data: bytes) -> None:
        if data and not self.silent:
            self.link.write(data)

    def send(self, line: str) -> str:
        """Send one line as is (with the terminator); returns it."""
        self.sent.append(line)
        frame = self._frame(line)
        if self.poll_command is not None and self.templates.poll_reply:
            with self._lock:
                self._queue.append(frame)
        else:
            self._write(frame)
        return line

    def _event(self, kind: str, **fields: Any) -> str:
        template = getattr(self.templates, kind)
        if template is None:
            raise SimulatorError(f"the profile has no {kind} line; use `send line=...`")
        return self.send(template.format(**fields))

    def _bool(self, value: Any) -> str:
        truthy = str(value).strip().lower() in {"1", "true", "on", "yes"}
        return self.templates.booleans["true" if truthy else "false"]

    def alarm(self, direction: str = "out", level: Any = 1, pedestal: Any = 1) -> str:
        """An alarm line; ``direction`` is ``in``, ``out`` or ``unknown``.

        Raises:
            SimulatorError: unknown direction, or the profile has no alarm line.
        """
        if direction not in self.templates.directions:
            raise SimulatorError(f"direction must be one of {', '.join(self.templates.directions)}")
        return self._event("alarm", direction=self.templates.directions[direction], level=level,
                           pedestal=pedestal)

    def interference(self, inhibit: Any = True, level: Any = 50) -> str:
        return self._event("interference", inhibit=self._bool(inhibit), level=level)

    def fault(self, reason: str = "antenna fault") -> str:
        return self._event("fault", reason=reason)

    def count(self, people_in: Any = 1, people_out: Any = 0, interval_s: Any = 60) -> str:
        return self._event("count", interval_s=interval_s, **{"in": people_in, "out": people_out})

    def heartbeat(self) -> str:
        return self._event("heartbeat")

    def noise(self, size: int = 256, *, newlines: bool = True) -> int:
        """Random bytes, as a bad cable or a wrong baud rate gives; returns how many were sent."""
        data = bytearray(random.randbytes(size))
        if not newlines:
            data = data.replace(b"\n", b"\x00").replace(b"\r", b"\x00")
        self._write(bytes(data))
        return size


def main(argv: list[str] | None = None) -> int:
    """An interactive pedestal: one command per line on stdin (``alarm direction=in``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="pipe-events")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="pyserial URL to write to (e.g. one end of a socat pair)")
    where.add_argument("--listen", type=int, help="TCP port to serve on 127.0.0.1 (socket://)")
    args = parser.parse_args(argv)
    link: Link = UrlLink(args.port) if args.port else TcpLink(args.listen)
    sim = PedestalSimulator.for_profile(args.profile, link)
    print(f"pedestal on {link.port}; commands: alarm|interference|fault|count|heartbeat|noise|"
          "send line=...|silence|resume [key=value ...]", file=sys.stderr)
    for text in sys.stdin:
        command, *pairs = text.split()
        params = dict(p.split("=", 1) for p in pairs if "=" in p)
        try:
            print(run_command(sim, command, params))
        except (SimulatorError, TypeError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
    link.close()
    return 0


def run_command(sim: PedestalSimulator, command: str, params: dict[str, Any]) -> Any:
    """Carry out a named command with string parameters (``agent sim`` and the CLI share it).

    Raises:
        SimulatorError: unknown command or bad parameters.
    """
    params = dict(params)
    seconds = float(params.pop("for", "inf"))
    actions: dict[str, Callable[..., Any]] = {
        "alarm": sim.alarm,
        "interference": sim.interference,
        "fault": sim.fault,
        "count": lambda **p: sim.count(p.pop("in", 1), p.pop("out", 0), **p),
        "heartbeat": sim.heartbeat,
        "noise": lambda size="256", newlines="true": sim.noise(
            int(size), newlines=newlines.lower() not in ("0", "false", "no")),
        "send": sim.send,
        "silence": lambda: sim.silence(seconds),
        "resume": sim.resume,
    }
    if command not in actions:
        raise SimulatorError(f"unknown command {command!r}; known: {', '.join(actions)}")
    try:
        return actions[command](**params)
    except TypeError as err:
        raise SimulatorError(f"{command}: bad parameters {sorted(params)}: {err}") from err


if __name__ == "__main__":
    raise SystemExit(main())
