"""A measured fleet: N real agents (own store id and data_dir each) against one local mosquitto.

    .venv/bin/python bench/fleet.py [--agents 100] [--rate 0.5] [--steady 30] [--outage 5]

Each agent replays a store-like feed (``--rate`` events per second: doors, people counts, an
alarm now and then). Printed:
- the broker's CPU and RSS with the fleet connected, per agent;
- each agent's RSS and CPU (median and max);
- emit-to-subscriber latency (p50, p99) at a central subscriber over ``--steady`` seconds;
- then the broker is stopped for ``--outage`` seconds and started again, twice: with the agents'
  full jitter, and with today's +-20 % jitter (the agents started with ``agent.publisher.FULL``
  patched to 0.2, nothing else changed). For each: seconds until every agent is back and the
  peak connections accepted in one second (from mosquitto's connection log).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import cpu_seconds, mib
from support import Broker, agent_config, wait_until, write_jsonl

from agent.testing import write_config

FEED = [{"type": "door.opened", "data": {}}, {"type": "door.closed", "data": {}},
        {"type": "eas.people_count", "data": {"in": 3, "out": 2}},
        {"type": "door.opened", "data": {}}, {"type": "door.closed", "data": {}},
        {"type": "eas.alarm", "data": {"direction": "out", "level": 2}}]
OLD_JITTER = "import agent.publisher as p; p.FULL = 0.2; from agent.cli import main; main()"


class Central:
    """The central dashboard: every event of every store, with its arrival time."""

    def __init__(self, broker: Broker) -> None:
        self.latencies: list[float] = []
        self.recording = False
        self.online: set[str] = set()
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-central",
                                  protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe("retail/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        if "/events/" in msg.topic and self.recording:
            sent = datetime.fromisoformat(json.loads(msg.payload)["time"]).timestamp()
            with self.lock:
                self.latencies.append(now - sent)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_agents(base: Path, broker: Broker, n: int, rate: float, old_jitter: bool,
                 ) -> list[subprocess.Popen[bytes]]:
    rec = write_jsonl(base / "feed.jsonl", FEED)
    procs = []
    cmd = [sys.executable, "-c", OLD_JITTER] if old_jitter else \
        [str(Path(sys.executable).with_name("agent"))]
    for i in range(n):
        store = f"s{i:04d}"
        home = base / store
        home.mkdir(parents=True)
        cfg = agent_config(home, broker, {"feed": {"driver": "replay", "file": str(rec),
                                                   "rate": rate, "loop": True}})
        cfg["agent"].update(store_id=store, status_interval="30s")
        cfg["mqtt"].update(reconnect_min="1s", reconnect_max="60s")
        path = write_config(home / "agent.toml", cfg)
        with (home / "agent.log").open("ab") as log:
            procs.append(subprocess.Popen([*cmd, "--config", str(path), "run"], stdout=log,
                                          stderr=subprocess.STDOUT))
    return procs


def connections_log(broker: Broker) -> list[int]:
    """Epoch seconds of every agent connection mosquitto accepted."""
    return [int(m.group(1)) for m in re.finditer(
        r"^(\d+): New client connected .* as store-edge-agent-", broker.log.read_text(), re.M)]


def restart(broker: Broker, n: int, outage: float) -> tuple[float, int]:
    """Stop the broker for ``outage`` s; seconds from its start until all ``n`` agents are back,
    and the peak connections in one second."""
    before = len(connections_log(broker))
    broker.stop()
    time.sleep(outage)
    started = time.time()
    broker.start()
    wait_until(lambda: len(connections_log(broker)) - before >= n, 300,
               f"{n} agents back after the restart")
    after = connections_log(broker)[before:]
    per_second = collections.Counter(after)
    return max(after) + 1 - started, max(per_second.values())


def run_fleet(args: argparse.Namespace, base: Path, old_jitter: bool) -> None:
    broker = Broker(base / "broker")
    with broker.conf.open("a") as conf:
        conf.write("log_type notice\nconnection_messages true\n")
    broker.start()
    central = Central(broker)
    assert broker.proc is not None
    time.sleep(1)
    idle_rss = mib(broker.proc.pid, "VmRSS")
    label = "+-20 % jitter" if old_jitter else "full jitter"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = start_agents(base, broker, args.agents, args.rate, old_jitter)
        wait_until(lambda: len(connections_log(broker)) >= args.agents, 600,
                   "every agent connected")
        assert broker.proc is not None
        if not old_jitter:
            time.sleep(10)  # start-up CPU over
            b_cpu0, a_cpu0 = cpu_seconds(broker.proc.pid), [cpu_seconds(p.pid) for p in procs]
            central.recording = True
            time.sleep(args.steady)
            central.recording = False
            b_cpu = (cpu_seconds(broker.proc.pid) - b_cpu0) / args.steady
            a_cpu = [(cpu_seconds(p.pid) - c) / args.steady for p, c in zip(procs, a_cpu0,
                                                                              strict=True)]
            rss = [mib(p.pid, "VmRSS") for p in procs]
            lat = sorted(central.latencies)
            print(f"{args.agents} agents, {args.rate} events/s each, {args.steady:.0f} s steady")
            rss_now = mib(broker.proc.pid, "VmRSS")
            print(f"broker: {b_cpu * 100:.2f} % of a core ({b_cpu * 100 / args.agents:.4f} % per "
                  f"agent), RSS {rss_now:.1f} MiB, {idle_rss:.1f} MiB before the agents: "
                  f"{(rss_now - idle_rss) * 1024 / args.agents:.0f} KiB per agent")
            print(f"agent RSS MiB: median {statistics.median(rss):.1f}, max {max(rss):.1f}")
            print(f"agent CPU % of a core: median {statistics.median(a_cpu) * 100:.2f}, "
                  f"max {max(a_cpu) * 100:.2f}")
            print(f"emit-to-subscriber latency over {len(lat)} events: p50 "
                  f"{lat[len(lat) // 2] * 1000:.0f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.0f}"
                  " ms")
        seconds, peak = restart(broker, args.agents, args.outage)
        print(f"broker restart ({args.outage:.0f} s down), {label}: all {args.agents} back after "
              f"{seconds:.1f} s, peak {peak} connections/s")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        central.close()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.5, help="events per second per agent")
    parser.add_argument("--steady", type=float, default=30.0)
    parser.add_argument("--outage", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        run_fleet(args, Path(tmp) / "full", old_jitter=False)
        run_fleet(args, Path(tmp) / "old", old_jitter=True)


if __name__ == "__main__":
    main()
