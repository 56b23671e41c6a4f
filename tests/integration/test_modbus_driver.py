"""modbus against a real pymodbus server: counters, wrap-around, restarts, outages, errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import sqlite3
import threading
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import AgentProcess, Subscriber, agent_config, wait_until

from agent.testing import DriverHarness
from drivers.eas_serial.simulator import SocatPair
from drivers.modbus.simulator import ControllerThread, EasController

SAMPLE = Path(__file__).parents[2] / "drivers" / "modbus" / "sample.toml"
MAP = tomllib.loads(SAMPLE.read_text())["devices"]["exit1-eas"]["registers"]


def options(port: int, **more) -> dict:
    return {"host": "127.0.0.1", "tcp_port": port, "poll_interval": "50ms", "timeout": "300ms",
            "retries": 0, "reconnect_min": "100ms", "reconnect_max": "300ms", "registers": MAP,
            **more}


@pytest.fixture
async def ctl():
    controller = await EasController().start()
    yield controller
    await controller.stop()


@contextlib.asynccontextmanager
async def polling(port: int, tmp_path: Path, **more) -> AsyncIterator[DriverHarness]:
    """The driver polling ``port``, online and past its baseline read."""
    async with DriverHarness("modbus", options(port, **more), tmp_path=tmp_path) as h:
        await h.wait_for("device.online")
        await settled(h)
        yield h


async def settled(h: DriverHarness, polls: int = 2) -> None:
    """Wait until the driver has read the controller ``polls`` more times (a baseline)."""
    start = h.driver.polls
    while h.driver.polls < start + polls:
        await asyncio.sleep(0.01)


def kept_counters(tmp_path: Path, device: str = "dev1") -> dict:
    """The counter values as committed in the event buffer (what the next start reads)."""
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "buffer.db")) as db:
        (value,) = db.execute("SELECT value FROM kept WHERE key = ?",
                              (f"{device}/counters",)).fetchone()
    return json.loads(value)


def alarms(h: DriverHarness, direction: str = "out") -> int:
    return len([e for e in h.of_type("eas.alarm") if e["data"]["direction"] == direction])


async def test_counters_wrap_around_and_controller_restart(tmp_path, ctl):
    async with polling(ctl.port, tmp_path) as h:
        await ctl.alarm("out", 3)  # an alarm counter up by 3 is 3 alarms
        await h.wait_for("eas.alarm", count=3)
        await ctl.alarm("in")
        await h.wait_for("eas.alarm", where=lambda e: e["data"]["direction"] == "in")
        await ctl.people(4, 2)
        counts = [await h.wait_for("eas.people_count", where=lambda e, k=k: e["data"][k] > 0)
                  for k in ("in", "out")]
        assert [c["data"] for c in counts] == [{"in": 4, "out": 0}, {"in": 0, "out": 2}]

        await ctl.set_counter("alarm_out", 65534)  # not believable: a new baseline
        await settled(h)
        assert alarms(h) == 3
        assert h.driver.state["last_counter_event"]["kind"] == "jump"
        await ctl.alarm("out", 4)  # 65535, 0, 1, 2: wraps
        await h.wait_for("eas.alarm", count=7, where=lambda e: e["data"]["direction"] == "out")
        await settled(h)
        assert h.driver.state["last_counter_event"]["kind"] == "wrap"

        await ctl.restart()  # a reboot: the connection drops, counters start again at 0
        await h.wait_for("device.online", count=2)
        await settled(h)
        assert h.driver.state["last_counter_event"]["kind"] == "restart"
        await ctl.alarm("out", 2)
        await h.wait_for("eas.alarm", count=9, where=lambda e: e["data"]["direction"] == "out")
        await settled(h)
        assert alarms(h) == 9
        assert alarms(h, "in") == 1


async def test_interference_edges_and_fault_codes(tmp_path, ctl):
    async with polling(ctl.port, tmp_path) as h:
        await ctl.interference(True)
        await h.wait_for("eas.interference", where=lambda e: e["data"]["inhibit"])
        await ctl.interference(False)
        await h.wait_for("eas.interference", where=lambda e: not e["data"]["inhibit"])
        await ctl.fault(3)
        fault = await h.wait_for("eas.fault")
        assert fault["data"] == {"reason": "transmitter overload"}
        await ctl.fault(0)
        await settled(h)
        assert len(h.of_type("eas.fault")) == 1  # back to 0 means "no fault"
        for _ in range(300):  # the state goes out at most once a second (STATE_GAP)
            if h.driver.state["values"]["fault_code"] == 0:
                break
            await asyncio.sleep(0.01)
        assert h.driver.state["values"]["fault_code"] == 0
        assert h.driver.state["requests_per_poll"] == 2  # 8 input registers + 2 inputs


async def test_server_down_and_up_counts_what_happened_meanwhile(tmp_path, ctl):
    async with polling(ctl.port, tmp_path) as h:
        await ctl.stop()
        offline = await h.wait_for("device.offline")
        assert str(ctl.port) in offline["data"]["reason"]
        assert not (await h.driver.health())[0].ok
        # "connection lost", then reconnecting fails: the later reason goes into the state only
        await h.wait_state(lambda s: "cannot connect" in s.get("reason", ""))
        await ctl.start()  # same counters: a network outage, not a reboot
        await ctl.alarm("out", 2)
        await h.wait_for("device.online", count=2)
        assert len(h.of_type("device.offline")) == 1, "one device.offline per outage"
        await h.wait_for("eas.alarm", count=2)
        assert (await h.driver.health())[0].ok


async def test_exception_response_makes_the_device_offline_with_the_reason(tmp_path):
    ctl = await EasController(device_id=1).start()
    try:
        async with DriverHarness("modbus", options(ctl.port, device_id=9), tmp_path=tmp_path) as h:
            offline = await h.wait_for("device.offline")
            assert "exception response" in offline["data"]["reason"]
            assert "discrete_input 1..1" in offline["data"]["reason"]
    finally:
        await ctl.stop()


async def test_a_controller_that_never_answers_is_a_timeout(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accepts and never replies
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return  # closed at the end of the test

    threading.Thread(target=accept, daemon=True).start()
    try:
        port = server.getsockname()[1]
        async with DriverHarness("modbus", options(port, timeout="200ms"), tmp_path=tmp_path) as h:
            offline = await h.wait_for("device.offline")
            assert offline["data"]["reason"] == (
                f"timeout: no response from 127.0.0.1:{port} unit 1 within 0.2 s (0 retries)")
            assert h.of_type("device.online") == []
    finally:
        stop.set()
        server.close()
        for conn in held:
            conn.close()


async def test_rtu_over_a_serial_port_and_unplugging_it(tmp_path):
    pair = SocatPair(tmp_path / "pty").start()
    ctl = await EasController(serial_port=str(pair.pedestal_end), baudrate=19200).start()
    opts = {**options(0), "port": str(pair.driver_end), "baudrate": 19200}
    del opts["host"], opts["tcp_port"]
    try:
        async with DriverHarness("modbus", opts, tmp_path=tmp_path) as h:
            await h.wait_for("device.online")
            await settled(h)
            await ctl.alarm("out", 2)
            await h.wait_for("eas.alarm", count=2)
            pair.stop()  # the RS-485 adapter is pulled
            offline = await h.wait_for("device.offline")
            assert offline["data"]["reason"] == f"connection lost: {pair.driver_end} unit 1"
    finally:
        await ctl.stop()
        pair.stop()


async def test_simulate_mode_alarm_reaches_the_driver_through_modbus(tmp_path):
    opts = {"simulate": True, "poll_interval": "50ms", "registers": MAP}
    async with DriverHarness("modbus", opts, tmp_path=tmp_path) as h:
        await h.wait_for("device.online")
        await settled(h)
        result = await h.driver.simulate("alarm", {"direction": "in", "count": "2"})
        assert result["result"] == {"alarm_in": 2}
        await h.wait_for("eas.alarm", count=2, where=lambda e: e["data"]["direction"] == "in")
        with pytest.raises(ValueError, match="unknown command"):
            await h.driver.simulate("explode", {})
        with pytest.raises(ValueError) as bad:  # what `agent sim ... count=abc` prints
            await h.driver.simulate("alarm", {"count": "abc"})
        assert str(bad.value) == "alarm: count='abc' is not a whole number (e.g. count=1)"


def test_modbus_end_to_end_through_agent_and_broker(tmp_path, broker, subscriber, agents):
    ctl = ControllerThread()
    ctl.start()
    try:
        devices = {"exit1-ctl": {"driver": "modbus", **options(ctl.controller.port)}}
        agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, devices))
        agents.append(agent)
        agent.start(wait_connected=True)
        subscriber.wait_events(1, "device.online")
        # The first poll is the baseline; wait for the retained state that shows it.
        wait_until(lambda: any(b'"polls"' in p for p in
                               subscriber.payloads("retail/t1/state/exit1-ctl")), 10, "a poll")
        ctl.alarm("out", 3)
        assert len(subscriber.wait_events(3, "eas.alarm")) == 3
        ctl.stop()
        offline = subscriber.wait_events(1, "device.offline")[0]
        assert "connection lost" in offline["data"]["reason"] or "cannot connect" in offline[
            "data"]["reason"]
        ctl.start()
        subscriber.wait_events(2, "device.online")
        ctl.alarm("out")
        assert len(subscriber.wait_events(4, "eas.alarm")) == 4
        assert agent.stop() == 0
    finally:
        ctl.close()


async def test_counts_made_while_the_agent_was_down_become_events(tmp_path, ctl, caplog):
    caplog.set_level("INFO", logger="drivers.modbus")
    async with polling(ctl.port, tmp_path) as h:
        await ctl.alarm("out", 1)
        await h.wait_for("eas.alarm")
    saved = kept_counters(tmp_path)
    assert saved["counters"]["alarms_out"]["value"] == 1
    assert not (tmp_path / "data" / "devices" / "dev1" / "counters.json").exists()
    await ctl.alarm("out", 3)  # counted by the controller during the agent's upgrade
    await ctl.people(5, 0)
    async with DriverHarness("modbus", options(ctl.port), tmp_path=tmp_path) as h:
        await h.wait_for("eas.alarm", count=3)
        people = await h.wait_for("eas.people_count")
        await settled(h)
        assert alarms(h) == 3 and people["data"]["in"] == 5
    assert "alarms_out: 3 counted while the agent was not running (1 -> 4)" in caplog.text

    await ctl.restart()  # rebooted while the agent was down: back to 0, then 2 alarms
    await ctl.alarm("out", 2)
    caplog.clear()
    async with DriverHarness("modbus", options(ctl.port), tmp_path=tmp_path) as h:
        await h.wait_for("eas.alarm", count=2)
        await settled(h)
        assert alarms(h) == 2  # 4 -> 2 went backwards: a reset, the 2 since are counted
        assert h.driver.state["last_counter_event"]["kind"] == "restart"
    assert "alarms_out: controller restarted or counter reset, counted 2" in caplog.text


async def test_counter_values_saved_by_an_older_agent_are_still_read(tmp_path, ctl, caplog):
    """Agents before the kept state wrote counters.json; the first start after the upgrade
    counts from it."""
    await ctl.alarm("out", 5)
    devdir = tmp_path / "data" / "devices" / "dev1"
    devdir.mkdir(parents=True)
    (devdir / "counters.json").write_text(json.dumps({
        "version": 1, "controller": f"127.0.0.1:{ctl.port} unit 1", "saved_at": 1.0,
        "counters": {"alarms_out": {"table": "input", "address": 0, "type": "uint16",
                                    "value": 3}}}))
    caplog.set_level("INFO", logger="drivers.modbus")
    async with DriverHarness("modbus", options(ctl.port), tmp_path=tmp_path) as h:
        await h.wait_for("eas.alarm", count=2)
        await settled(h)
        assert alarms(h) == 2
    assert "alarms_out: 2 counted while the agent was not running (3 -> 5)" in caplog.text
    assert kept_counters(tmp_path)["counters"]["alarms_out"]["value"] == 5


@pytest.mark.slow
def test_kill_9_while_counting_neither_loses_nor_doubles_a_count(tmp_path, broker, agents):
    """Counter values are committed with the events counted from them: however a crash falls,
    the next start counts on from exactly what the surviving events say."""
    ctl = ControllerThread()
    ctl.start()
    sub = Subscriber(broker, "retail/t1/events/#", persistent=True)
    try:
        devices = {"exit1-ctl": {"driver": "modbus", **options(ctl.controller.port)}}
        agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, devices))
        agents.append(agent)
        rng, made = random.Random(7), 0
        for run in range(6):
            agent.start(wait_connected=True)
            if run == 0:  # the first read is the baseline: what came before it is not counted
                sub.wait_events(1, "device.online")
            for _ in range(rng.randint(3, 12)):  # counted while polling every 50 ms
                n = rng.randint(1, 4)
                ctl.alarm("out", n)
                made += n
                time.sleep(rng.choice([0.0, 0.02, 0.05]))
            agent.kill()
            n = rng.randint(0, 3)  # and while the agent is down
            ctl.alarm("out", n)
            made += n
        agent.start(wait_connected=True)
        wait_until(lambda: len({e["id"] for e in sub.events("eas.alarm")}) >= made, 20,
                   f"{made} alarms")
        time.sleep(0.5)  # a double count would arrive now
        assert agent.stop() == 0
        sub.sync()
        assert len({e["id"] for e in sub.events("eas.alarm")}) == made
    finally:
        sub.close()
        ctl.close()


async def test_a_replaced_controller_counts_from_zero_within_max_step(tmp_path, ctl, caplog):
    async with polling(ctl.port, tmp_path) as h:
        await ctl.alarm("out", 7)
        await h.wait_for("eas.alarm", count=7)
    other = await EasController().start()  # the unit swapped for another, at a new address
    try:
        await other.alarm("out", 2)
        await other.set_counter("alarm_in", 5000)  # a used unit: more than max_step
        caplog.set_level("INFO", logger="drivers.modbus")
        async with DriverHarness("modbus", options(other.port), tmp_path=tmp_path) as h:
            await h.wait_for("eas.alarm", count=2)
            await settled(h)
            assert alarms(h) == 2 and alarms(h, "in") == 0
        assert "counters were saved for another controller (127.0.0.1:" in caplog.text
        assert "taken as a reset" in caplog.text
        assert "jumped by more than max_step" in caplog.text  # alarms_in: 0 -> 5000
    finally:
        await other.stop()
