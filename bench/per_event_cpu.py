"""CPU per delivered event of the real agent, and of another checkout's agent alternated with it.

    .venv/bin/python bench/per_event_cpu.py [--agent-before ../before/.venv/bin/agent]
        [--workload counters,change,replay] [--rounds 3] [--seconds 20]
        [--profile DIR [--py-spy PATH] | --syscalls DIR]

Workloads (each against a mosquitto on 127.0.0.1 started here, ``synchronous = "full"``, log
level info, events counted at a subscriber):

- ``counters``: a pymodbus TCP server with 10 units x 10 holding registers that all go up by 1
  every 100 ms, like an EAS controller's alarm and people counters; one ``modbus`` device per
  unit polls every 100 ms, and ``on_increment`` makes one ``eas.alarm`` per count: 1,000
  events/s. Unlike bench/peer_thingsboard.py (``on_change``, every value an event), this
  exercises the counters the driver keeps across restarts.
- ``change``: the same server and devices, but ``on_change`` makes one ``eas.people_count`` per
  register read (every read a new value): bench/peer_thingsboard.py's workload, agent only.
- ``replay``: the replay driver at 1,000 events/s (``eas.people_count``).

``--profile DIR`` records each measured window with py-spy (``record --gil --threads``, raw
stacks, ``pip install py-spy``) into DIR and prints where the Python time went;
``--syscalls`` counts the agent's system calls in the window with ``strace -c -f`` (which
slows the agent: its CPU figures are then not comparable).

Each round runs every agent once per workload, in turn; the figures are the medians of the
rounds and the ratio after / before. A checkout to compare with: ``git worktree add ../before
COMMIT && ../before/scripts/setup``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
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

    def devices(self, rule: str = "on_increment") -> dict[str, Any]:
        event = ({"type": "eas.alarm", "data": {"direction": "out"}} if rule == "on_increment"
                 else {"type": "eas.people_count", "field": "in", "data": {"out": 0}})
        registers = [{"name": f"r{reg}", "table": "holding", "address": reg, rule: event}
                     for reg in range(REGISTERS)]
        return {f"u{unit}": {"driver": "modbus", "host": "127.0.0.1", "tcp_port": self.port,
                             "device_id": unit, "poll_interval": POLL_S, "registers": registers}
                for unit in range(1, UNITS + 1)}

    def close(self) -> None:
        self._task.cancel()
        time.sleep(0.2)  # let the task end before the loop stops
        self._loop.call_soon_threadsafe(self._loop.stop)


class Arrivals:
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


def watcher(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy or strace on the agent for the measured window, as asked."""
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [args.py_spy, "record", "--gil", "--threads", "--rate", "997", "--format", "raw",
             "--duration", str(int(args.seconds)), "--pid", str(pid),
             "--output", str(Path(args.profile) / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if args.syscalls:
        Path(args.syscalls).mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(["strace", "-c", "-f", "-o", str(Path(args.syscalls) / name),
                                 "-p", str(pid)], stderr=subprocess.DEVNULL)
    return None


def summary(raw: Path, top: int = 25) -> str:
    """Share of the samples per thread and per function (inclusive), from py-spy's raw output."""
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0].split(": ", 1)[-1]] += n
        for frame in set(frames[1:]):
            inclusive[frame] += n
    lines = [f"{raw.name}: {total} samples"]
    lines += [f"  thread {n / total:6.1%} {t}" for t, n in threads.most_common()]
    lines += [f"  {n / total:6.1%} {f}" for f, n in inclusive.most_common(top)
              if "threading.py" not in f and "asyncio/" not in f]
    return "\n".join(lines)


def measure(tmp: Path, broker: Broker, counter: Arrivals, agent_bin: str, devices: dict[str, Any],
            seconds: float, args: argparse.Namespace, name: str) -> dict[str, float]:
    cfg = agent_config(tmp, broker, devices, buffer={"synchronous": "full"})
    del cfg["agent"]["status_interval"]  # the product's default, not the tests' 2 s
    agent = AgentProcess(tmp, cfg)
    agent.command = (agent_bin,)
    agent.start(wait_connected=True, log_level="info")
    assert agent.proc is not None
    try:
        time.sleep(5)  # warm-up: imports, connections, the counters' first reads
        watch = watcher(args, agent.proc.pid, name)
        c0, n0, t0 = cpu_seconds(agent.proc.pid), counter.events, time.monotonic()
        time.sleep(seconds)
        c1, n1, t1 = cpu_seconds(agent.proc.pid), counter.events, time.monotonic()
        rss = mib(agent.proc.pid, "VmHWM")
        if watch is not None:
            if args.syscalls:
                watch.send_signal(signal.SIGINT)  # strace -c prints its table when interrupted
            watch.wait(30)
    finally:
        agent.stop(30)
    if args.profile:
        print(summary(Path(args.profile) / f"{name}.txt"), flush=True)
    return {"cpu_per_1000": (c1 - c0) / (n1 - n0) * 1000, "events_per_s": (n1 - n0) / (t1 - t0),
            "peak_rss": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-before", metavar="AGENT",
                        help="another checkout's agent command, alternated with this one")
    parser.add_argument("--workload", default="counters,replay")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--profile", metavar="DIR", help="py-spy each window into DIR")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy",
                        help="the py-spy command")
    parser.add_argument("--syscalls", metavar="DIR", help="strace -c each window into DIR")
    args = parser.parse_args()
    if args.profile and not shutil.which(args.py_spy):
        parser.error(f"--profile needs py-spy ({args.py_spy!r} not found): pip install py-spy")
    agents = {"after": AGENT_BIN}
    if args.agent_before:
        agents = {"before": str(Path(args.agent_before).resolve()), **agents}
    tmp = Path(tempfile.mkdtemp(prefix="bench-per-event-"))
    broker = Broker(tmp / "broker").start()
    counter = Arrivals(broker)
    server = Counters()
    replay = write_jsonl(tmp / "rec.jsonl", [{"type": "eas.people_count",
                                              "data": {"in": i, "out": 0}} for i in range(1000)])
    workloads = {"counters": server.devices(), "change": server.devices("on_change"),
                 "replay": {"r1": {"driver": "replay", "file": str(replay), "rate": RATE,
                                   "loop": True}}}
    chosen = [w.strip() for w in args.workload.split(",")]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for r in range(args.rounds):
            for work in chosen:
                for name, agent_bin in agents.items():
                    row = measure(tmp / f"{work}-{name}-{r}", broker, counter, agent_bin,
                                  workloads[work], args.seconds, args, f"{work}-{name}-{r + 1}")
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
