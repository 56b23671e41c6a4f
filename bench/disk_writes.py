"""SD-card wear: bytes the agent writes to disk per 1,000 events, at a store-like rate.

Run: .venv/bin/python bench/disk_writes.py [--rate 10] [--seconds 120]
For each `synchronous` setting, the agent replays events at `--rate` while a local mosquitto
takes them; the figure is the agent process's `write_bytes` from /proc/<pid>/io (what reached
the block layer, page-cache writeback included) against the bytes of the events' JSON.
Aim (issue 12): at most 4x the payload bytes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import AgentProcess, Broker, agent_config, wait_until, write_jsonl


def io_written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def run(sync: str, rate: float, seconds: float, tmp: Path) -> tuple[int, int, int]:
    rec = write_jsonl(tmp / "rec.jsonl", [
        {"type": "eas.people_count", "data": {"in": 3, "out": 1, "interval_s": 60}},
        {"type": "door.opened", "data": {}},
        {"type": "eas.alarm", "data": {"direction": "out", "level": 2, "raw": "ALARM|OUT|2"}},
        {"type": "door.closed", "data": {}},
    ])
    broker = Broker(tmp / "broker").start()
    payload = [0, 0]

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        payload[0] += len(m.payload)
        payload[1] += 1

    sink = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sink", protocol=paho.MQTTv5)
    sink.on_connect = lambda c, *a: c.subscribe("retail/t1/events/r1/#", qos=1)
    sink.on_message = on_message
    sink.connect(broker.host, broker.port)
    sink.loop_start()
    count = int(rate * seconds)
    cfg = agent_config(tmp, broker, {"r1": {"driver": "replay", "file": str(rec), "rate": rate,
                                            "loop": True, "count": count, "start_delay": "3s"}},
                       buffer={"synchronous": sync})
    cfg["agent"]["status_interval"] = "60s"
    agent = AgentProcess(tmp / "a", cfg)
    try:
        agent.start(wait_connected=True)
        assert agent.proc is not None
        time.sleep(2.5)
        before = io_written(agent.proc.pid)
        payload[:] = [0, 0]
        wait_until(lambda: payload[1] >= count, seconds * 3 + 30, "every event", interval=0.5)
        time.sleep(2.0)  # the last deletes
        written = io_written(agent.proc.pid) - before
        agent.stop()
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        sink.disconnect()
        sink.loop_stop()
        broker.stop()
    return written, payload[0], payload[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    print(f"{'synchronous':>12} {'events':>7} {'written':>10} {'per 1000':>10} {'payload/1000':>13} "
          f"{'ratio':>6}")
    for sync in ("full", "normal"):
        with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
            written, payload, n = run(sync, args.rate, args.seconds, Path(tmp))
        print(f"{sync:>12} {n:>7} {written / 1024:>8.0f}Ki {written * 1000 / n / 1024:>8.0f}Ki "
              f"{payload * 1000 / n / 1024:>11.0f}Ki {written / payload:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
