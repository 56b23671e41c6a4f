"""Serial frame written to MQTT message received: latency through socat, the real agent, mosquitto.

    .venv/bin/python bench/eas_serial_latency.py [--frames 500] [--gap 0.02] [--synchronous full]

A simulated pedestal writes ``ALARM|OUT|<n>|1`` lines to one end of a socat pty pair; the real
``agent run`` reads the other end with the eas_serial driver, commits each event to its SQLite
buffer and publishes it to a local mosquitto, where a subscriber in this process timestamps it.
Frames are sent one at a time, ``--gap`` apart, so each figure is one frame's own latency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support import AgentProcess, Broker, agent_config, wait_until

from drivers.eas_serial.simulator import SocatPair, UrlLink


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between frames")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-eas-"))
    broker = Broker(tmp / "broker").start()
    pair = SocatPair(tmp / "pty").start()
    received: dict[int, float] = {}
    cond = threading.Condition()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        level = int(json.loads(msg.payload)["data"]["level"])
        with cond:
            received[level] = now
            cond.notify_all()

    sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("retail/t1/events/exit1-eas/eas.alarm", qos=1)
    sub.loop_start()

    devices = {"exit1-eas": {"driver": "eas_serial", "port": str(pair.driver_end),
                             "profile": "pipe-events"}}
    cfg = agent_config(tmp, broker, devices, buffer={"synchronous": args.synchronous})
    agent = AgentProcess(tmp / "agent", cfg)
    try:
        agent.start(wait_connected=True)
        wait_until(lambda: "port " in agent.output() and " open" in agent.output(), 10,
                   "the driver to open the port")
        link = UrlLink(str(pair.pedestal_end))
        sent: dict[int, float] = {}
        for n in range(1, args.frames + 1):
            frame = f"ALARM|OUT|{n}|1\r\n".encode()
            sent[n] = time.perf_counter()
            link.write(frame)
            time.sleep(args.gap)
        with cond:
            cond.wait_for(lambda: len(received) >= args.frames, timeout=30)
        link.close()
        lost = [n for n in sent if n not in received]
        lat = [(received[n] - sent[n]) * 1000 for n in sent if n in received]
        print(f"eas_serial frame -> MQTT latency, {len(lat)} frames, {args.gap * 1000:.0f} ms "
              f"apart, buffer synchronous={args.synchronous}")
        print(f"  p50 {percentile(lat, 50):.2f} ms  p95 {percentile(lat, 95):.2f} ms  "
              f"p99 {percentile(lat, 99):.2f} ms  max {max(lat):.2f} ms  (target p99 < 20 ms)")
        if lost:
            print(f"  LOST {len(lost)} frames: {lost[:10]}")
        return 1 if lost else 0
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()
        sub.loop_stop()
        pair.stop()
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
