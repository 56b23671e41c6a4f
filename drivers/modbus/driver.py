"""The modbus driver: polls a register map over Modbus TCP or RTU and turns changes into events."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from agent.backoff import Backoff
from agent.driver import ActionError, Conformance, Driver, HealthCheck, timestamp
from agent.units import format_duration
from drivers.modbus.config import PARITY, ModbusConfig, RegisterEntry
from drivers.modbus.counters import NAME as COUNTERS
from drivers.modbus.counters import CounterStore, read_legacy
from drivers.modbus.registers import Block, CounterStep, Tracker, decode, plan_reads

if TYPE_CHECKING:
    from drivers.modbus.simulator import EasController

# pymodbus logs every frame at debug level: the agent's debug log is for the agent.
logging.getLogger("pymodbus").setLevel(logging.ERROR)

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy", 8: "memory parity error",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}
STATE_EVERY = 5.0
"""Values reach the retained state at most this often unless they change."""
STATE_GAP = 1.0
"""At most one retained state per this many seconds: values that change at every poll (people
counters at 10 Hz) would otherwise be a retained message per poll. The latest goes out."""


class PollError(Exception):
    """A poll that failed in a way that makes the device offline; the message is the reason."""


ALARMS_OUT = {"name": "alarms_out", "table": "input", "address": 0, "type": "uint16",
              "on_increment": {"type": "eas.alarm", "data": {"direction": "out"}}}
"""The simulated controller's outgoing-alarm counter (the conformance kit's working case)."""


class ModbusDriver(Driver):
    """One Modbus controller or I/O module: a register map read every ``poll_interval``."""

    name = "modbus"
    version = "1.0.0"
    vendor = "store-edge-agent"
    description = "EAS controllers and I/O modules over Modbus TCP or RTU (register maps)"
    emits = ("eas.alarm", "eas.interference", "eas.fault", "eas.people_count")
    Config = ModbusConfig
    conformance = Conformance(
        working={"simulate": True, "registers": [ALARMS_OUT]},
        failing={"host": "127.0.0.1", "tcp_port": 1, "registers": [ALARMS_OUT]},  # refused
        simulate=[("alarm", {"direction": "out"})],
        expect=("eas.alarm",),
    )
    config: ModbusConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.blocks: list[Block] = plan_reads(cfg.points(), cfg.max_gap)
        self._decoders = [
            [(p.key, p.address - block.start, cfg.registers[p.key].value_type,
              cfg.registers[p.key].word_order, cfg.registers[p.key].bit) for p in block.points]
            for block in self.blocks]
        """Per block, what decodes each of its points: (map entry, offset, type, word order, bit),
        worked out once instead of at every poll."""
        self.trackers = [
            Tracker(value_type=r.value_type, max_step=r.max_step,
                    **{k: spec.compile() for k in ("on_rise", "on_fall", "on_increment",
                                                   "on_change")
                       if (spec := getattr(r, k)) is not None})
            for r in cfg.registers
        ]
        self.sim: EasController | None = None
        self._store: CounterStore | None = None
        self._restored: dict[int, int] = {}
        """Map entry -> the counter value restored from disk, until its first read."""
        self.polls = 0
        self.last_poll_at: float | None = None
        self._host, self._tcp_port = cfg.host, cfg.tcp_port

    def _client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        cfg = self.config
        # reconnect_delay=0: pymodbus must not reconnect behind our back; run() owns backoff.
        common: dict[str, Any] = {"timeout": cfg.timeout, "retries": cfg.retries,
                                  "reconnect_delay": 0}
        if cfg.port:
            return AsyncModbusSerialClient(cfg.port, framer=FramerType.RTU, baudrate=cfg.baudrate,
                                           bytesize=cfg.bytesize, parity=PARITY[cfg.parity],
                                           stopbits=cfg.stopbits, **common)
        assert self._host is not None
        return AsyncModbusTcpClient(self._host, port=self._tcp_port, **common)

    async def run(self) -> None:
        cfg = self.config
        if cfg.simulate:
            # Imported here: the pymodbus server stack (and aiohttp) only in simulation.
            from drivers.modbus.simulator import EasController

            self.sim = await EasController(device_id=cfg.device_id or 1).start()
            self._host, self._tcp_port = self.sim.host, self.sim.port
            self.log.info("simulated EAS controller on %s:%d", self.sim.host, self.sim.port)
        else:  # a simulated controller is a new one at every start: nothing to carry over
            self._store = CounterStore(self._where())
            self._restore_counters(self._store)
        backoff = Backoff(initial=cfg.reconnect_min, cap=cfg.reconnect_max)
        self.update_state(requests_per_poll=len(self.blocks))
        try:
            while True:
                client = self._client()
                self.log.debug("connecting to %s", self._where())
                try:
                    if not await client.connect():
                        raise PollError(f"cannot connect to {self._where()}")
                    await self._poll_forever(client, backoff)
                except PollError as err:
                    self.set_offline(str(err))
                except ConnectionException:
                    self.set_offline(f"connection lost: {self._where()}")
                except ModbusException as err:
                    self.set_offline(self._reason(err))
                finally:
                    client.close()
                await asyncio.sleep(backoff.next())
        finally:
            if self.sim is not None:
                await self.sim.stop()

    def _reason(self, err: ModbusException) -> str:
        """``device.offline`` reason for a failed request."""
        text = str(err).removeprefix("Modbus Error: ").strip()
        if "No response" in text:
            cfg = self.config
            return (f"timeout: no response from {self._where()} within {cfg.timeout:g} s "
                    f"({cfg.retries} retries)")
        return f"{text or type(err).__name__} ({self._where()})"

    def _where(self) -> str:
        cfg = self.config
        if cfg.port:
            return cfg.where()
        return f"{self._host}:{self._tcp_port} unit {cfg.device_id}"

    async def _poll_forever(self, client: Any, backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        next_state = last_state = 0.0
        unsaid = False
        while True:
            values = await self._poll(client)
            observed = time.time()
            if not self.online:
                self.set_online()
                backoff.reset()
            # The alarms counted and the counters they were counted to: one transaction, or
            # a crash between the two would count them again at the next start.
            with self.context.together():
                changed = self._observe(values, observed)
                if changed and self._store is not None:
                    self._keep_counters(self._store)
            self.polls += 1
            self.last_poll_at = observed
            now = loop.time()
            unsaid |= changed
            if (unsaid and now >= last_state + STATE_GAP) or now >= next_state:
                next_state, last_state, unsaid = now + STATE_EVERY, now, False
                self._publish_values()
            # Fixed rate, not fixed delay: a slow reply does not stretch the poll period.
            next_at = max(next_at + self.config.poll_interval, now)
            await asyncio.sleep(next_at - now)

    def _observe(self, values: dict[int, bool | int | float], observed: float) -> bool:
        """Emit what one poll's values say; whether any value changed."""
        changed = False
        for key, value in values.items():
            tracker = self.trackers[key]
            changed |= tracker.value != value
            for em in tracker.observe(value):
                self.emit(em.type, em.data, time=observed)
            step = tracker.last_step
            if key in self._restored:
                self._while_down(key, self._restored.pop(key), value, step)
            if step is not None and step.kind in ("wrap", "restart", "jump"):
                self._counter_note(key, step.kind, step.delta)
                tracker.last_step = None
        return changed

    async def _poll(self, client: Any) -> dict[int, bool | int | float]:
        """One pass over the read plan: map entry index -> value.

        Raises:
            PollError: an exception response.
            ModbusException: a timeout or a lost connection.
        """
        cfg = self.config
        readers = {"coil": client.read_coils, "discrete_input": client.read_discrete_inputs,
                   "holding": client.read_holding_registers,
                   "input": client.read_input_registers}
        values: dict[int, bool | int | float] = {}
        for block, decoders in zip(self.blocks, self._decoders, strict=True):
            rr = await readers[block.table](block.start, count=block.count,
                                            device_id=cfg.device_id)
            if rr.isError():
                code = getattr(rr, "exception_code", None)
                name = EXCEPTION_NAMES.get(code or 0, "error")
                raise PollError(f"exception response {code} ({name}) reading {block.table} "
                                f"{block.start}..{block.start + block.count - 1} from "
                                f"{self._where()}")
            items = rr.bits if block.table in ("coil", "discrete_input") else rr.registers
            for key, offset, value_type, word_order, bit in decoders:
                values[key] = decode(items, offset, value_type, word_order=word_order, bit=bit)
        return values

    def _counter_note(self, key: int, kind: str, delta: int) -> None:
        entry = self.config.registers[key]
        if kind == "jump":
            self.log.warning("counter %s jumped by more than max_step=%d: taken as the new "
                             "baseline, nothing counted", entry.name, entry.max_step)
        else:
            self.log.info("counter %s: %s, counted %d", entry.name,
                          "wrapped around" if kind == "wrap" else "controller restarted or "
                          "counter reset", delta)
        self.update_state(last_counter_event={"register": entry.name, "kind": kind,
                                              "counted": delta, "at": timestamp(time.time())})

    def _counters(self) -> list[tuple[int, RegisterEntry, Tracker]]:
        return [(i, r, t) for i, (r, t) in enumerate(zip(self.config.registers, self.trackers,
                                                         strict=True))
                if t.on_increment is not None]

    def _restore_counters(self, store: CounterStore) -> None:
        """The counters' last values from the previous run become their baselines."""
        saved = self.context.kept(self.device_id, COUNTERS)
        if saved is None:
            saved = read_legacy(self.context.data_dir(self.device_id))
        restored = store.load({r.name: (r.table, r.address, r.value_type)
                               for _, r, _ in self._counters()}, saved)
        for note in restored.notes:
            self.log.warning("%s", note)
        for key, entry, tracker in self._counters():
            if entry.name in restored.values:
                tracker.value = self._restored[key] = restored.values[entry.name]
        if restored.values and restored.saved_at is not None:
            self.log.info("counter values of %s restored (saved %s ago): what the controller "
                          "counted meanwhile is counted at the first read", self._where(),
                          format_duration(time.time() - restored.saved_at))

    def _while_down(self, key: int, saved: int, value: Any, step: CounterStep | None) -> None:
        """Say what the first read after a start counted against the saved value (a counter
        that went back, a wrap or a jump is said by ``_counter_note``, as at any read)."""
        name = self.config.registers[key].name
        if step is None:
            self.log.info("counter %s: unchanged since the last run (%d)", name, saved)
        elif step.kind == "up":
            self.log.info("counter %s: %d counted while the agent was not running (%d -> %s)",
                          name, step.delta, saved, value)

    def _keep_counters(self, store: CounterStore) -> None:
        doc = store.document({r.name: (r.table, r.address, r.value_type, int(t.value))
                              for _, r, t in self._counters() if t.value is not None})
        if doc is not None:
            self.context.keep(self.device_id, COUNTERS, doc)

    def _publish_values(self) -> None:
        values = {r.name: t.value for r, t in zip(self.config.registers, self.trackers,
                                                  strict=True)}
        self.update_state(values=values, polls=self.polls, last_poll_at=timestamp(self.last_poll_at))

    async def health(self) -> list[HealthCheck]:
        age = None if self.last_poll_at is None else time.time() - self.last_poll_at
        limit = max(3 * self.config.poll_interval, self.config.timeout * 2 + 1)
        detail = "never polled" if age is None else f"last good poll {age:.1f} s ago"
        return [HealthCheck("controller answers", self.online and age is not None
                            and age <= limit, detail)]

    async def simulate(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """``alarm [direction=out count=1]``, ``people [in=1 out=0]``, ``fault [code=1]``,
        ``clear``, ``interference [inhibit=on]``, ``restart``: change the simulated controller;
        the driver reads the change at its next poll.

        Raises:
            ActionError: the device is not simulated, or the command is unknown or invalid.
        """
        if self.sim is None:
            raise ActionError(f"device {self.device_id!r} polls {self._where()}; set "
                              "simulate = true to drive a simulated controller")
        from drivers.modbus.simulator import SimulatorError

        try:
            result = await self.sim.command(command, params)
        except SimulatorError as err:
            raise ActionError(str(err)) from err
        return {"command": command, "result": result}


