"""The eas_serial driver: reads a pedestal's text event feed from any pyserial URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import serial

from agent.backoff import Backoff
from agent.driver import ActionError, Conformance, Driver, HealthCheck, timestamp
from drivers.eas_serial.config import EasSerialConfig
from drivers.eas_serial.parsing import BadFrame, LineParser, Matched, Unmatched

if TYPE_CHECKING:
    from drivers.eas_serial.simulator import PedestalSimulator

READ_TIMEOUT = 0.1
"""Seconds a read waits for a byte: bounds how late a stop, a poll or the silence check is."""
STATE_EVERY = 1.0
"""Counters reach the retained state at most this often, so a chatty feed costs no MQTT storm."""
UNMATCHED_LOG_EVERY = 30.0


class EasSerialDriver(Driver):
    """One pedestal or controller whose events arrive as text lines on a serial or TCP port."""

    name = "eas_serial"
    version = "1.0.0"
    vendor = "store-edge-agent"
    description = "EAS pedestal text event feeds over serial, RS-485 or serial-over-IP"
    emits = ("eas.alarm", "eas.interference", "eas.fault", "eas.people_count")
    Config = EasSerialConfig
    conformance = Conformance(
        working={"simulate": True, "profile": "pipe-events"},
        failing={"port": "socket://127.0.0.1:1", "profile": "pipe-events"},  # refused at once
        simulate=[("alarm", {"direction": "out"})],
        expect=("eas.alarm",),
    )
    config: EasSerialConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.port_open = False
        self.last_rx: float | None = None
        """monotonic time of the last byte received."""
        self.last_frame_at: float | None = None
        self.sim: PedestalSimulator | None = None
        self._parser: LineParser | None = None
        self._last_bad: str | None = None
        self._unmatched_logged = 0.0
        self._unmatched_since_log = 0

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        link = None
        port = cfg.port or ""
        if cfg.simulate:
            # Imported here: `python -m drivers.eas_serial.simulator` must find it not yet loaded.
            from drivers.eas_serial.simulator import PedestalSimulator, PtyLink

            link = PtyLink()
            port = link.port
            self.sim = PedestalSimulator(link, cfg.simulator, terminator=cfg.terminator,
                                         encoding=cfg.encoding, poll_command=cfg.poll_command)
            self.log.info("simulated pedestal on %s", port)
        backoff = Backoff(initial=cfg.reopen_min, cap=cfg.reopen_max)
        self._parser = LineParser(cfg.compiled_rules(), terminator=cfg.terminator.encode(cfg.encoding),
                                  encoding=cfg.encoding, max_line=cfg.max_line)
        self.update_state(port=port, simulated=cfg.simulate)
        try:
            while True:
                self.log.debug("opening %s", port)
                try:
                    ser = await asyncio.to_thread(self._open, port)
                except (serial.SerialException, OSError, ValueError) as err:
                    self.set_offline(f"cannot open {port}: {_reason(err)}")
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                reason = await self._session(ser, port)
                self.set_offline(reason)
                await asyncio.sleep(backoff.next())
        finally:
            if link is not None:
                link.close()

    def _open(self, port: str) -> serial.SerialBase:
        # exclusive: a second program reading the same adapter would steal half the lines.
        ser = serial.serial_for_url(port, do_not_open=True, timeout=READ_TIMEOUT,
                                    write_timeout=1.0, **self.config.serial_options())
        if hasattr(ser, "exclusive") and not port.startswith(("socket://", "rfc2217://")):
            ser.exclusive = True
        ser.open()
        return ser

    async def _session(self, ser: serial.SerialBase, port: str) -> str:
        """Read ``ser`` on a thread until it fails; returns why, for ``device.offline``."""
        self.port_open = True
        self.last_rx = time.monotonic()  # silence is counted from the moment the port opened
        self.set_online()
        self.log.info("port %s open", port)
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()

        def finish(reason: str) -> None:
            if not done.done():
                done.set_result(reason)

        def target() -> None:
            try:
                reason = self._read_loop(ser, stop)
            except Exception as err:  # never let a thread die silently: report it
                self.log.exception("reader failed")
                reason = f"reader error: {type(err).__name__}: {err}"
            finally:
                self.port_open = False
                with contextlib.suppress(Exception):
                    ser.close()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(finish, reason)

        threading.Thread(target=target, daemon=True, name=f"eas_serial:{self.device_id}").start()
        try:
            return await done
        finally:
            stop.set()  # on cancellation the thread ends within READ_TIMEOUT

    def _read_loop(self, ser: serial.SerialBase, stop: threading.Event) -> str:
        cfg = self.config
        parser = self._parser
        assert parser is not None
        parser.framer.reset()  # half a line from before the port was lost is not a frame
        poll = cfg.poll_command.encode(cfg.encoding) if cfg.poll_command else None
        next_poll = time.monotonic()
        next_state = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if poll is not None and now >= next_poll:
                next_poll = now + cfg.poll_interval
                try:
                    ser.write(poll)
                except serial.SerialTimeoutException:
                    self.log.warning("poll command not sent: the port does not take bytes")
                except (serial.SerialException, OSError) as err:
                    return f"port lost: {_reason(err)}"
            try:
                chunk = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError) as err:
                return f"port lost: {_reason(err)}"
            now = time.monotonic()
            if chunk:
                self.last_rx = now
                self._handle(parser.feed(chunk), time.time())
            elif (cfg.silence_timeout and self.online
                  and now - (self.last_rx or now) > cfg.silence_timeout):
                self.log.warning("no bytes for %.1f s: reporting the pedestal silent",
                                 cfg.silence_timeout)
                self.set_offline("silent")
            if now >= next_state:
                next_state = now + STATE_EVERY
                self._publish_counters()
        return "stopped"

    def _handle(self, outcomes: list[Matched | Unmatched | BadFrame], observed: float) -> None:
        for out in outcomes:
            if isinstance(out, BadFrame):
                self._last_bad = f"{out.reason}: {out.sample!r}"
                self.log.debug("bad frame: %s", self._last_bad)
                continue
            self.last_frame_at = observed
            if not self.online:
                self.set_online()  # a frame after silence
            if isinstance(out, Unmatched):
                self._log_unmatched(out.line)
            elif out.type is not None:
                try:
                    self.emit(out.type, out.data, time=observed)
                except ValueError as err:  # a value the catalogue refuses, e.g. level "high"
                    self._last_bad = f"rule {out.rule}: {err}: {out.line!r}"
                    self.log.warning("line %r not emitted: %s", out.line, err)

    def _log_unmatched(self, line: str) -> None:
        self._unmatched_since_log += 1
        now = time.monotonic()
        if now - self._unmatched_logged >= UNMATCHED_LOG_EVERY and self.log.isEnabledFor(
                logging.DEBUG):
            self.log.debug("line matches no rule: %r (%d unmatched since the last such message)",
                           line[:200], self._unmatched_since_log)
            self._unmatched_logged = now
            self._unmatched_since_log = 0

    def _publish_counters(self) -> None:
        p = self._parser
        if p is None:
            return
        fields = {"frames": p.frames, "matched": p.matched, "unmatched": p.unmatched,
                  "bad_frames": p.bad_frames, "last_bad_frame": self._last_bad,
                  "last_frame_at": timestamp(self.last_frame_at), "port_open": self.port_open}
        if any(self.state.get(k) != v for k, v in fields.items()):
            self.update_state(**fields)

    # -- self-tests and simulation ------------------------------------------------------------

    async def health(self) -> list[HealthCheck]:
        cfg = self.config
        port = self.state.get("port", cfg.port)
        checks = [HealthCheck("port open", self.port_open, str(port))]
        age = None if self.last_rx is None else time.monotonic() - self.last_rx
        heard = "nothing received yet" if age is None else f"last bytes {age:.1f} s ago"
        if self.last_frame_at is not None:
            heard += f", last line {time.time() - self.last_frame_at:.1f} s ago"
        if cfg.silence_timeout:
            ok = age is not None and age <= cfg.silence_timeout
            checks.append(HealthCheck("not silent", ok, f"{heard} (limit {cfg.silence_timeout:g} s)"))
        else:
            checks.append(HealthCheck("not silent", True, f"{heard} (no silence_timeout set)"))
        return checks

    async def simulate(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """``alarm [direction=out level= pedestal=]``, ``interference [inhibit=on]``,
        ``fault [reason=]``, ``count [in= out=]``, ``heartbeat``, ``noise [size=]``,
        ``send line=...``, ``silence [--for]``, ``resume``: the simulated pedestal sends the
        line and the real driver path reads it.

        Raises:
            ActionError: the device is not simulated, or the command is unknown or invalid.
        """
        if self.sim is None:
            raise ActionError(f"device {self.device_id!r} reads {self.config.port}; set "
                              "simulate = true to drive a simulated pedestal")
        from drivers.eas_serial.simulator import SimulatorError, run_command

        try:
            sent = await asyncio.to_thread(run_command, self.sim, command, params)
        except SimulatorError as err:
            raise ActionError(str(err)) from err
        return {"command": command, "sent": sent}


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__
