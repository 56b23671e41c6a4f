"""The acme_eas driver: reads an ACME controller's alarms over TCP and accepts ``silence``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from acme_eas.config import AcmeEasConfig
from acme_eas.protocol import Event, Heartbeat, ProtocolError, Reply, frame, parse_line
from acme_eas.simulator import ControllerSimulator
from agent.backoff import Backoff
from agent.driver import ActionError, Conformance, Driver, HealthCheck
from agent.units import parse_duration

REPLY_WITHIN = 2.0
SIM_COMMANDS = ("alarm", "interference", "fault", "count", "drop", "mute")


class AcmeEasDriver(Driver):
    """One ACME controller: alarms, interference, faults and people counts from its pedestals."""

    name = "acme_eas"
    version = "0.1.0"
    vendor = "ACME Security Systems"
    description = "ACME EAS pedestal controller (line protocol over TCP)"
    emits = ("eas.alarm", "eas.interference", "eas.fault", "eas.people_count")
    actions = ("silence",)
    Config = AcmeEasConfig
    conformance = Conformance(
        working={"simulate": True},
        failing={"host": "127.0.0.1", "port": 1},  # nothing listens on port 1: refused at once
        simulate=[("alarm", {"direction": "out"})],
        expect=("eas.alarm",),
    )
    config: AcmeEasConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sim: ControllerSimulator | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._replies: asyncio.Queue[Reply] = asyncio.Queue()
        self._last_line = 0.0

    async def run(self) -> None:
        cfg = self.config
        host, port = cfg.host, cfg.port
        if cfg.simulate:
            self.sim = await ControllerSimulator().start()
            host, port = self.sim.host, self.sim.port
        backoff = Backoff(initial=0.5, cap=30.0)
        try:
            while True:
                try:
                    await self._session(host, port, backoff)
                except (OSError, TimeoutError) as err:
                    reason = str(err) or type(err).__name__
                    self.set_offline(f"{host}:{port}: {reason}")
                await asyncio.sleep(backoff.next())
        finally:
            if self.sim is not None:
                await self.sim.stop()

    async def _session(self, host: str, port: int, backoff: Backoff) -> None:
        cfg = self.config
        async with asyncio.timeout(cfg.connect_timeout):
            reader, writer = await asyncio.open_connection(host, port)
        self._writer = writer
        try:
            while True:
                try:
                    async with asyncio.timeout(cfg.heartbeat_timeout):
                        line = await reader.readline()
                except TimeoutError:
                    raise TimeoutError(f"no heartbeat for {cfg.heartbeat_timeout:g} s") from None
                if not line:
                    raise ConnectionError("the controller closed the connection")
                if self._handle(line):
                    backoff.reset()
        finally:
            self._writer = None
            writer.close()

    def _handle(self, line: bytes) -> bool:
        """Act on one line; True when it was a valid message."""
        try:
            msg = parse_line(line)
        except ProtocolError as err:
            # A corrupted line is lost, not guessed at; the count shows a bad cable.
            self.log.warning("ignoring a line: %s", err)
            self.update_state(bad_lines=self.state.get("bad_lines", 0) + 1)
            return False
        self._last_line = time.monotonic()
        self.set_online()
        if isinstance(msg, Event):
            self.emit(msg.type, msg.data)
        elif isinstance(msg, Reply):
            self._replies.put_nowait(msg)
        elif isinstance(msg, Heartbeat):
            self.update_state(uptime_s=msg.uptime_s)
        return True

    async def health(self) -> list[HealthCheck]:
        """``online``, and ``heartbeat``: a line arrived within ``heartbeat_timeout``."""
        checks = await super().health()
        age = time.monotonic() - self._last_line
        fresh = self._last_line > 0 and age < self.config.heartbeat_timeout
        detail = f"last line {age:.1f} s ago" if self._last_line else "no line yet"
        return [*checks, HealthCheck("heartbeat", fresh, detail)]

    async def action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """``silence``: mute the pedestals' sounders for ``for`` seconds (default 60, at most 600).

        Raises:
            ActionError: unknown action, bad ``for``, not connected, or the controller refused.
        """
        if name != "silence":
            return await super().action(name, params)
        try:
            seconds = round(parse_duration(params.get("for", 60)))
        except ValueError as err:
            raise ActionError(f"for: {err}") from None
        if not 0 < seconds <= 600:
            raise ActionError(f"for: must be 1 to 600 s, got {seconds}")
        if self._writer is None:
            raise ActionError(f"device {self.device_id!r} is not connected")
        while not self._replies.empty():  # a late reply to an earlier command
            self._replies.get_nowait()
        self._writer.write(frame("SIL", seconds))
        try:
            async with asyncio.timeout(REPLY_WITHIN):
                reply = await self._replies.get()
        except TimeoutError:
            raise ActionError(f"the controller did not answer within {REPLY_WITHIN:g} s") from None
        if not reply.ok:
            raise ActionError(f"the controller refused: {reply.reason}")
        return {"silenced_for": seconds}

    async def simulate(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """``alarm [direction=out] [pedestal=1]``, ``interference [inhibit=on]``, ``fault``,
        ``count in=N out=N``, ``drop`` (controller reboot), ``mute --for S`` (hung controller).

        Raises:
            ActionError: not simulated, an unknown command, or bad parameters.
        """
        sim = self.sim
        if sim is None:
            raise ActionError(f"device {self.device_id!r} is a real controller (simulate = false)")
        if command not in SIM_COMMANDS:
            raise ActionError(f"no simulated command {command!r}: {', '.join(SIM_COMMANDS)}")
        sent = 0
        try:
            if command == "alarm":
                sent = sim.alarm(params.get("direction", "out"), str(params.get("pedestal", "1")))
            elif command == "interference":
                sent = sim.interference(inhibit=params.get("inhibit", "on") in ("on", "1", True))
            elif command == "fault":
                sent = sim.fault(params.get("code", "E12"), params.get("text", "TX coil open"))
            elif command == "count":
                sent = sim.count(int(params.get("in", 0)), int(params.get("out", 0)))
            elif command == "drop":
                sim.drop()
            else:
                sim.mute(float(params.get("for", 10.0)))
        except ValueError as err:
            raise ActionError(f"{command}: {err}") from err
        return {"command": command, "clients": sent}
