"""A simulated ACME controller: an asyncio TCP server speaking the line protocol on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from acme_eas.protocol import DIRECTIONS, ProtocolError, frame, unframe

SIL_MAX = 600


class ControllerSimulator:
    """Heartbeats every ``heartbeat`` seconds to every client, events on command, ACKs ``SIL``.

    Used by the driver with ``simulate = true``, by the tests, and standalone::

        python -m acme_eas.simulator --port 4001
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, heartbeat: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.heartbeat = heartbeat
        self.received: list[str] = []
        self._clients: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._beat: asyncio.Task[None] | None = None
        self._muted_until = 0.0
        self._started = time.monotonic()

    @property
    def clients(self) -> int:
        """Connected clients."""
        return len(self._clients)

    async def start(self) -> ControllerSimulator:
        """Listen (on a free port when ``port`` is 0) and start the heartbeat."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._beat = asyncio.create_task(self._heartbeats(), name="acme-sim-heartbeat")
        return self

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._beat is not None:
            self._beat.cancel()
        self.drop()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def __aenter__(self) -> ControllerSimulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what a pedestal does ----------------------------------------------------------------

    def send(self, *fields: object) -> int:
        """Send one framed line to every client; returns how many got it."""
        line = frame(*fields)
        for writer in list(self._clients):
            writer.write(line)
        return len(self._clients)

    def send_raw(self, line: bytes) -> int:
        """Send bytes as they are (a corrupted line, for tests)."""
        for writer in list(self._clients):
            writer.write(line)
        return len(self._clients)

    def alarm(self, direction: str = "out", pedestal: str = "1", level: int = 80) -> int:
        """A tag passed the pedestal: ``direction`` is ``in``, ``out`` or ``unknown``."""
        code = {v: k for k, v in DIRECTIONS.items()}.get(direction)
        if code is None:
            raise ValueError(f"direction must be in, out or unknown, got {direction!r}")
        return self.send("ALM", pedestal, code, level)

    def interference(self, *, inhibit: bool, level: int = 50) -> int:
        """Electrical noise; ``inhibit`` when the pedestal stops detecting because of it."""
        return self.send("INT", int(inhibit), level)

    def fault(self, code: str = "E12", text: str = "TX coil open") -> int:
        """A hardware fault report."""
        return self.send("FLT", code, text)

    def count(self, entered: int, left: int, interval_s: int = 60) -> int:
        """A people-counter report for the last ``interval_s`` seconds."""
        return self.send("CNT", entered, left, interval_s)

    def mute(self, seconds: float) -> None:
        """Stop heartbeats for ``seconds``: a hung controller whose socket stays open."""
        self._muted_until = time.monotonic() + seconds

    def drop(self) -> None:
        """Close every client connection (a controller reboot)."""
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()

    # -- server --------------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            if time.monotonic() >= self._muted_until:
                self.send("HB", int(time.monotonic() - self._started))
            await asyncio.sleep(self.heartbeat)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        writer.write(frame("HB", int(time.monotonic() - self._started)))  # at once: we are alive
        try:
            while line := await reader.readline():
                self._command(line, writer)
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    def _command(self, line: bytes, writer: asyncio.StreamWriter) -> None:
        self.received.append(line.decode("ascii", "replace").strip())
        try:
            name, *args = unframe(line).split(",")
        except ProtocolError:
            writer.write(frame("NAK", "?", "bad frame"))
            return
        if name == "SIL" and args and args[0].isdigit() and 0 < int(args[0]) <= SIL_MAX:
            writer.write(frame("ACK", "SIL"))
        else:
            writer.write(frame("NAK", name or "?", "unknown command or bad argument"))


async def _main() -> None:
    parser = argparse.ArgumentParser(description="A simulated ACME EAS controller")
    parser.add_argument("--port", type=int, default=4001)
    parser.add_argument("--alarm-every", type=float, default=0, help="seconds; 0: never")
    args = parser.parse_args()
    async with ControllerSimulator(port=args.port) as sim:
        print(f"ACME controller simulator on {sim.host}:{sim.port}", flush=True)
        while True:
            await asyncio.sleep(args.alarm_every or 3600)
            if args.alarm_every:
                sim.alarm("out")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
