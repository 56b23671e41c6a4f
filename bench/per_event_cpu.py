"""CPU per delivered event of the real agent, and of another checkout's agent alternated with it.

    .venv/bin/python bench/per_event_cpu.py [--agent-before ../before/.venv/bin/agent]
        [--workload counters,replay] [--rounds 3] [--seconds 20]

Workloads (each against a mosquitto on 127.0.0.1 started here, ``synchronous = "full"``, log
level info, events counted at a subscriber):

- ``counters``: a pymodbus TCP server with 10 units x 10 holding registers that all go up by 1
  every 100 ms, like an EAS controller's alarm and people counters; one ``modbus`` device per
  unit polls every 100 ms, and ``on_increment`` makes one ``eas.alarm`` per count: 1,000
  events/s. Unlike bench/peer_thingsboard.py (``on_change``, every value an event), this
  exercises the counters the driver keeps across restarts.
- ``replay``: the replay driver at 1,000 events/s (``eas.people_count``).

Each round runs every agent once per workload, in turn; the figures are the medians of the
rounds and the ratio after / before. A checkout to compare with: ``git worktree add ../before
COMMIT && ../before/scripts/setup``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import cpu_seconds, mib
from support import AGENT_BIN, AgentProcess, Broker, agent_config, free_port, write_jsonl

UNITS, REGISTERS, POLL_S, RATE = 10, 10, 0.1, 1000


class Counters:
    """The Modbus server: every register of every unit up by 1 every ``POLL_S``."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._task = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)

    async def _serve(self) -> None:
        devices = [SimDevice(id=unit, simdata=[SimData(0, count=REGISTERS, values=0,
                                                       datatype=DataType.REGISTERS)])
                   for unit in range(1, UNITS + 1)]
        server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
        await server.serve_forever(background=True)
        count = 0
        while True:
            await asyncio.sleep(POLL_S)
            count = (count + 1) & 0xFFFF
            for unit in range(1, UNITS + 1):
                await server.async_setValues(unit, 3, 0, [count] * REGISTERS)

    def devices(self) -> dict[str, Any]:
        registers = [{"name": f"r{reg}", "table": "holding", "address": reg,
                      "on_increment": {"type": "eas.alarm", "data": {"direction": "out"}}}
                     for reg in range(REGISTERS)]
        return {f"u{unit}": {"driver": "modbus", "host": "127.0.0.1", "tcp_port": self.port,
                             "device_id": unit, "poll_interval": POLL_S, "registers": registers}
                for unit in range(1, UNITS + 1)}

    def close(self) -> None:
        self._task.cancel()
        time.sleep(0.2)  # let the task end before the loop stops
        self._loop.call_soon_threadsafe(self._loop.stop)


class Counter:
    """Events arriving at the broker (one subscriber, QoS 1)."""

    def __init__(self, broker: Broker) -> None:
        self.events = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-count")
        self.client.on_connect = lambda c, *a: c.subscribe("retail/+/events/#", qos=1)
        self.client.on_message = self._count
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _count(self, client: Any, userdata: Any, msg: Any) -> None:
        self.events += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def measure(tmp: Path, broker: Broker, counter: Counter, agent_bin: str, devices: dict[str, Any],
            seconds: float) -> dict[str, float]:
    cfg = agent_config(tmp, broker, devices, buffer={"synchronous": "full"})
    del cfg["agent"]["status_interval"]  # the product's default, not the tests' 2 s
    agent = AgentProcess(tmp, cfg)
    agent.command = (agent_bin,)
    agent.start(wait_connected=True, log_level="info")
    assert agent.proc is not None
    try:
        time.sleep(5)  # warm-up: imports, connections, the counters' first reads
        c0, n0, t0 = cpu_seconds(agent.proc.pid), counter.events, time.monotonic()
        time.sleep(seconds)
        c1, n1, t1 = cpu_seconds(agent.proc.pid), counter.events, time.monotonic()
        rss = mib(agent.proc.pid, "VmHWM")
    finally:
        agent.stop(30)
    return {"cpu_per_1000": (c1 - c0) / (n1 - n0) * 1000, "events_per_s": (n1 - n0) / (t1 - t0),
            "peak_rss": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-before", metavar="AGENT",
                        help="another checkout's agent command, alternated with this one")
    parser.add_argument("--workload", default="counters,replay")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    agents = {"after": AGENT_BIN}
    if args.agent_before:
        agents = {"before": str(Path(args.agent_before).resolve()), **agents}
    tmp = Path(tempfile.mkdtemp(prefix="bench-per-event-"))
    broker = Broker(tmp / "broker").start()
    counter = Counter(broker)
    server = Counters()
    replay = write_jsonl(tmp / "rec.jsonl", [{"type": "eas.people_count",
                                              "data": {"in": i, "out": 0}} for i in range(1000)])
    workloads = {"counters": server.devices(),
                 "replay": {"r1": {"driver": "replay", "file": str(replay), "rate": RATE,
                                   "loop": True}}}
    chosen = [w.strip() for w in args.workload.split(",")]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for r in range(args.rounds):
            for work in chosen:
                for name, agent_bin in agents.items():
                    row = measure(tmp / f"{work}-{name}-{r}", broker, counter, agent_bin,
                                  workloads[work], args.seconds)
                    results.setdefault((work, name), []).append(row)
                    print(f"round {r + 1} {work} {name}: {row['cpu_per_1000']:.3f} s CPU per "
                          f"1,000 events, {row['events_per_s']:,.0f} events/s, peak RSS "
                          f"{row['peak_rss']:.1f} MiB", flush=True)
    finally:
        server.close()
        counter.close()
        broker.stop()
    print(f"\nmedians of {args.rounds} rounds of {args.seconds:.0f} s:")
    for work in chosen:
        med = {name: statistics.median(x["cpu_per_1000"] for x in results[(work, name)])
               for name in agents}
        line = ", ".join(f"{name} {v:.3f}" for name, v in med.items())
        ratio = f"; after / before {med['after'] / med['before']:.2f}" if "before" in med else ""
        print(f"{work}: CPU s per 1,000 events delivered: {line}{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
