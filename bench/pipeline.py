"""Core pipeline benchmarks: throughput against the raw paho ceiling, latency, backlog drain, RSS.

Run: .venv/bin/python bench/pipeline.py [--events 20000]
Everything runs against one mosquitto on 127.0.0.1 started here; figures are printed.
"""

from __future__ import annotations

import argparse
import json
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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import AgentProcess, Broker, agent_config, wait_until, write_jsonl

PAYLOAD_EVENT = {"type": "eas.alarm", "data": {"direction": "out", "level": 3,
                                              "raw": "ALARM|OUT|3|PED2"}}


class Sink:
    """A dashboard stand-in that costs little: records (wall time, topic, payload) per message."""

    def __init__(self, broker: Broker) -> None:
        self.got: list[tuple[float, str, bytes]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sink",
                                  protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe("retail/#", qos=1)
        self.client.on_message = lambda c, u, m: self.got.append((time.time(), m.topic, m.payload))
        self.client.reconnect_delay_set(0.05, 0.2)
        # A session the broker keeps across its restart (persistence on): what the agent
        # publishes before this client is back is queued for it, not lost to the figures.
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def arrivals(sink: Sink, device: str) -> list[tuple[float, dict]]:
    return [(t, json.loads(p)) for t, topic, p in list(sink.got)
            if f"/events/{device}/" in topic and "/device." not in topic]


def wait_count(sink: Sink, prefix: str, n: int, timeout: float) -> None:
    """Wait until ``n`` messages under ``prefix`` arrived, scanning only what is new."""
    seen, index, deadline = 0, 0, time.monotonic() + timeout
    while seen < n:
        new = sink.got[index:]
        index += len(new)
        seen += sum(1 for _, topic, _ in new if topic.startswith(prefix))
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {seen} of {n} messages under {prefix}")
        time.sleep(0.05)


def raw_publisher(port: int, n: int, size: int, inflight: int) -> None:
    """The ceiling's publisher, in its own process like the agent: n QoS1 messages, all acked."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *a: acked.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = b"x" * size
    for _ in range(n):
        client.publish("retail/raw/events/bench/eas.alarm", payload, qos=1)
    for _ in range(n):
        acked.acquire()
    client.disconnect()
    client.loop_stop()


def ceiling(broker: Broker, sink: Sink, n: int, size: int, inflight: int) -> float:
    """Raw paho QoS1 rate, first to last arrival at the same sink as the agent's events."""
    subprocess.run([sys.executable, __file__, "--raw", str(broker.port), str(n), str(size),
                    str(inflight)], check=True)
    wait_count(sink, "retail/raw/", n, 600)
    times = [t for t, topic, _ in sink.got if topic.startswith("retail/raw/")]
    return (n - 1) / (times[-1] - times[0])


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    broker = Broker(tmp / "broker", persistence=True).start()
    sub = Sink(broker)
    rec = write_jsonl(tmp / "rec.jsonl", [PAYLOAD_EVENT])
    n = args.events
    results: dict[str, str] = {}

    # 1. throughput: the agent (synchronous = full) and the ceiling, alternated, so that both
    #    see the same machine; the ratio of each pair is what counts on a shared machine.
    ratios, agent_rates, raw_rates = [], [], []
    size = 0
    for r in range(args.rounds):
        agent = AgentProcess(tmp / f"thr{r}", agent_config(
            tmp / f"thr{r}", broker, {"bench": {"driver": "replay", "file": str(rec), "rate": 0,
                                                "loop": True, "count": n}},
            buffer={"synchronous": "full"}, mqtt={"max_inflight": args.inflight}))
        agent.start(wait_connected=True)
        wait_count(sub, "retail/t1/events/bench/eas.alarm", n, 600)
        agent.stop()
        got = arrivals(sub, "bench")
        size = len(json.dumps(got[0][1]))
        agent_rate = (n - 1) / (got[-1][0] - got[0][0])
        sub.got.clear()
        raw_rate = ceiling(broker, sub, n, size, args.inflight)
        sub.got.clear()
        agent_rates.append(agent_rate)
        raw_rates.append(raw_rate)
        ratios.append(agent_rate / raw_rate)
    results["ceiling (raw paho QoS1, one client, own process)"] = (
        f"{statistics.median(raw_rates):,.0f} msg/s median of {args.rounds} "
        f"({size} B payloads, max_inflight {args.inflight})")
    results["agent replay->broker, synchronous=full"] = (
        f"{statistics.median(agent_rates):,.0f} events/s median; ratio to the ceiling per round "
        f"{', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f} "
        "(target >= 0.7)")

    # 2. latency at 200 events/s
    count = 200 * args.latency_seconds
    agent = AgentProcess(tmp / "lat", agent_config(
        tmp / "lat", broker, {"lat": {"driver": "replay", "file": str(rec), "rate": 200,
                                      "loop": True, "count": count}}))
    agent.start(wait_connected=True)
    wait_count(sub, "retail/t1/events/lat/eas.alarm", count, 120)
    agent.stop()
    lat = []
    for received, env in arrivals(sub, "lat"):
        emitted = datetime.fromisoformat(env["time"].replace("Z", "+00:00")).timestamp()
        lat.append((received - emitted) * 1000)
    # emit time has ms resolution: add 0.5 ms to centre the truncation
    lat = sorted(x + 0.5 for x in lat)
    p50 = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99) - 1]
    results["emit->subscriber latency at 200 events/s"] = (
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms over {len(lat)} events "
        "(target p99 < 20 ms)")
    sub.got.clear()

    # 3. drain a backlog built while the broker is down; 4. peak RSS
    backlog = args.backlog
    broker.stop()
    agent = AgentProcess(tmp / "drain", agent_config(
        tmp / "drain", broker, {"drain": {"driver": "replay", "file": str(rec), "rate": 0,
                                          "loop": True, "count": backlog}}))
    agent.start()
    t0 = time.monotonic()
    wait_until(lambda: "driver finished" in agent.output(), 600, "backlog to build")
    build = time.monotonic() - t0
    broker.start()
    wait_count(sub, "retail/t1/events/drain/eas.alarm", backlog, 900)
    got = arrivals(sub, "drain")
    drain = got[-1][0] - got[0][0]
    status = Path(f"/proc/{agent.proc.pid}/status").read_text()
    hwm = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    agent.stop()
    results[f"build a {backlog:,}-event backlog (broker down)"] = (
        f"{build:.1f} s ({backlog / build:,.0f} events/s committed)")
    results[f"drain the {backlog:,}-event backlog after the outage"] = (
        f"{drain:.1f} s ({backlog / drain:,.0f} events/s)")
    results["peak RSS of agent run (replay driver, after the drain)"] = f"{int(hwm) / 1024:.1f} MiB"

    sub.close()
    broker.stop()
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--raw"]:
        raw_publisher(*(int(a) for a in sys.argv[2:6]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--latency-seconds", type=int, default=15)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    run(parser.parse_args())
