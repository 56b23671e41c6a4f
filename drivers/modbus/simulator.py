"""A simulated Modbus EAS controller (a real pymodbus server, TCP or RTU) with alarm and people counters.

Register layout (the one ``sample.toml`` maps; 0-based protocol addresses, unit 1):

==================  =======  ==========================================================
table               address  meaning
==================  =======  ==========================================================
discrete input      0        alarm active (held ``hold`` seconds after each alarm)
discrete input      1        interference inhibit
input register      0        alarms leaving (uint16 counter, wraps at 65535)
input register      1        alarms entering (uint16 counter)
input register      2-3      people in (uint32, high word first)
input register      4-5      people out (uint32, high word first)
input register      6        fault code (0 = none, 1 antenna, 2 power supply, 3 tx overload)
input register      7        noise level
==================  =======  ==========================================================

``restart()`` is a controller reboot: the server goes away, counters start again at 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Coroutine
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

__all__ = ["ControllerThread", "EasController", "SimulatorError", "free_port"]

# pymodbus logs every frame at debug level and warns about its own deprecations at warning.
logging.getLogger("pymodbus").setLevel(logging.ERROR)

_DI, _IR = 2, 4  # function codes, which pymodbus' datastore uses to name the tables
ALARM_OUT, ALARM_IN, PEOPLE_IN, PEOPLE_OUT, FAULT, NOISE = 0, 1, 2, 4, 6, 7
SIZE = 16


class SimulatorError(ValueError):
    """A command the simulated controller cannot carry out."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EasController:
    """The controller: counters in Python, served as Modbus registers. Runs in an event loop."""

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", device_id: int = 1,
                 hold: float = 0.5, serial_port: str | None = None, baudrate: int = 9600) -> None:
        self.host = host
        self.port = port or free_port()
        self.serial_port = serial_port
        """Serve Modbus RTU on this serial port (e.g. one end of a socat pair) instead of TCP."""
        self.baudrate = baudrate
        self.device_id = device_id
        self.hold = hold
        self.counters = {"alarm_out": 0, "alarm_in": 0, "people_in": 0, "people_out": 0}
        self.fault_code = 0
        self.noise = 0
        self.inhibit = False
        self.alarm_active = False
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._hold_task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> EasController:
        """Listen on ``host:port`` or ``serial_port`` (again, after ``stop``)."""
        device = SimDevice(id=self.device_id, simdata=(
            [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)],
            [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)],
            [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)],
        ))
        server: ModbusTcpServer | ModbusSerialServer
        if self.serial_port:
            server = ModbusSerialServer(device, framer=FramerType.RTU, port=self.serial_port,
                                        baudrate=self.baudrate)
        else:
            server = ModbusTcpServer(device, address=(self.host, self.port))
        await server.serve_forever(background=True)
        self._server = server
        await self._sync()
        return self

    async def stop(self) -> None:
        """The controller goes away (power off, cable pulled): connections drop."""
        server, self._server = self._server, None
        if self._hold_task is not None:
            self._hold_task.cancel()
        if server is not None:
            await server.shutdown()

    async def restart(self) -> None:
        """A reboot: down, counters back to 0, up again on the same port."""
        await self.stop()
        self.counters = dict.fromkeys(self.counters, 0)
        self.fault_code = 0
        self.inhibit = self.alarm_active = False
        await self.start()

    async def _sync(self) -> None:
        if self._server is None:
            return
        c = self.counters
        regs = [c["alarm_out"] & 0xFFFF, c["alarm_in"] & 0xFFFF, *_u32(c["people_in"]),
                *_u32(c["people_out"]), self.fault_code, self.noise]
        await self._server.async_setValues(self.device_id, _IR, 0, regs)
        await self._server.async_setValues(self.device_id, _DI, 0,
                                           [self.alarm_active, self.inhibit])

    async def alarm(self, direction: str = "out", count: int = 1) -> dict[str, int]:
        """``count`` alarms: the counter of ``direction`` goes up, alarm active for ``hold`` s."""
        if direction not in ("in", "out"):
            raise SimulatorError("direction must be in or out (the controller counts each)")
        key = f"alarm_{direction}"
        self.counters[key] = (self.counters[key] + int(count)) & 0xFFFF
        self.alarm_active = True
        if self._hold_task is not None:
            self._hold_task.cancel()
        self._hold_task = asyncio.get_running_loop().create_task(self._release())
        await self._sync()
        return {key: self.counters[key]}

    async def _release(self) -> None:
        await asyncio.sleep(self.hold)
        self.alarm_active = False
        await self._sync()

    async def people(self, people_in: int = 1, people_out: int = 0) -> dict[str, int]:
        self.counters["people_in"] = (self.counters["people_in"] + int(people_in)) & 0xFFFFFFFF
        self.counters["people_out"] = (self.counters["people_out"] + int(people_out)) & 0xFFFFFFFF
        await self._sync()
        return {k: self.counters[k] for k in ("people_in", "people_out")}

    async def set_counter(self, name: str, value: int) -> None:
        """Put a counter at ``value`` (e.g. just below its wrap-around)."""
        if name not in self.counters:
            raise SimulatorError(f"no counter {name!r}; counters: {', '.join(self.counters)}")
        self.counters[name] = int(value)
        await self._sync()

    async def fault(self, code: int = 1) -> dict[str, int]:
        self.fault_code = int(code)
        await self._sync()
        return {"fault_code": self.fault_code}

    async def interference(self, inhibit: bool = True, level: int = 60) -> dict[str, Any]:
        self.inhibit = bool(inhibit)
        self.noise = int(level) if inhibit else 0
        await self._sync()
        return {"inhibit": self.inhibit}

    async def command(self, name: str, params: dict[str, str]) -> Any:
        """A named command with text parameters (``agent sim``).

        Raises:
            SimulatorError: unknown command or bad parameters.
        """
        p = dict(params)
        p.pop("for", None)
        truthy = ("1", "true", "on", "yes")

        def whole(key: str, default: int) -> int:
            value = p.get(key, default)
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} is not a whole number (e.g. "
                                 f"{key}={default})") from None

        try:
            if name == "alarm":
                return await self.alarm(p.get("direction", "out"), whole("count", 1))
            if name == "people":
                return await self.people(whole("in", 1), whole("out", 0))
            if name == "fault":
                return await self.fault(whole("code", 1))
            if name == "clear":
                return await self.fault(0)
            if name == "interference":
                return await self.interference(p.get("inhibit", "on").lower() in truthy)
            if name == "restart":
                await self.restart()
                return {"restarted": True}
        except ValueError as err:
            raise SimulatorError(f"{name}: {err}") from err
        raise SimulatorError(f"unknown command {name!r}; known: alarm, people, fault, clear, "
                             "interference, restart")


def _u32(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


class ControllerThread:
    """An ``EasController`` on its own event loop thread, driven by blocking calls (for tests
    and benchmarks that run the agent as a separate process)."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="modbus-sim")
        self._thread.start()
        self.controller: EasController = self.call(self._make(kwargs))

    @staticmethod
    async def _make(kwargs: dict[str, Any]) -> EasController:
        return EasController(**kwargs)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run ``coro`` on the controller's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.controller, name)
        if not asyncio.iscoroutinefunction(method):
            return method
        return lambda *a, **k: self.call(method(*a, **k))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.controller.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
