"""Memory while a large backlog builds (broker down) and drains: peak RSS against the idle agent.

Run: .venv/bin/python bench/backlog_memory.py [--events 100000 1000000]
Target (issue 11): peak RSS within 15 MiB of the same agent's idle RSS, building and draining.
Everything runs against one mosquitto on 127.0.0.1 started here; figures are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import AgentProcess, Broker, agent_config, wait_until, write_jsonl

MiB = 1024 * 1024
IDLE_SECONDS = 6.0


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Peak:
    """Samples a process's RSS every 100 ms in the background."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = rss(self.pid)
            except OSError:
                return
            self.samples.append(value)
            self.peak = max(self.peak, value)
            self._stop.wait(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


class Counter:
    """Counts events arriving from the agent (a cheap dashboard stand-in)."""

    def __init__(self, broker: Broker) -> None:
        self.count = 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter",
                                  protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe("retail/t1/events/r1/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.5)

    def _on_message(self, c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        self.count += 1

    def connect(self, broker: Broker) -> None:
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run(events: int, tmp: Path) -> dict[str, float]:
    rec = write_jsonl(tmp / "rec.jsonl", [
        {"type": "eas.people_count", "data": {"in": 3, "out": 1, "interval_s": 60}},
        {"type": "door.opened", "data": {}},
        {"type": "eas.alarm", "data": {"direction": "out", "level": 2, "raw": "ALARM|OUT|2"}},
    ])
    broker = Broker(tmp / "broker")
    cfg = agent_config(tmp, broker, {"r1": {"driver": "replay", "file": str(rec), "rate": 0,
                                            "loop": True, "count": events,
                                            "start_delay": f"{IDLE_SECONDS + 2}s"}},
                       buffer={"max_bytes": "2GiB"})
    cfg["agent"]["status_interval"] = "30s"
    agent = AgentProcess(tmp / "a", cfg)
    agent.start()
    assert agent.proc is not None
    pid = agent.proc.pid
    try:
        time.sleep(2.0)  # settle after start
        idle_sampler = Peak(pid)
        time.sleep(IDLE_SECONDS - 1)
        idle_sampler.stop()
        idle = sorted(idle_sampler.samples)[len(idle_sampler.samples) // 2]
        build = Peak(pid)
        t0 = time.monotonic()
        wait_until(lambda: "driver finished" in agent.output(), 3600, "the backlog to build",
                   interval=0.5)
        build_s = time.monotonic() - t0
        build_peak = build.stop()
        counter = Counter(broker)
        broker.start()
        counter.connect(broker)
        drain = Peak(pid)
        t0 = time.monotonic()
        wait_until(lambda: counter.count >= events, 3600, "the backlog to drain", interval=0.5)
        drain_s = time.monotonic() - t0
        drain_peak = drain.stop()
        after = rss(pid)
        counter.close()
        agent.stop(timeout=60)
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        broker.stop()
    db = tmp / "data" / "buffer.db"
    return {"events": events, "idle": idle / MiB, "build_peak": build_peak / MiB,
            "build_s": build_s, "drain_peak": drain_peak / MiB, "drain_s": drain_s,
            "after": after / MiB, "db_mib": db.stat().st_size / MiB if db.exists() else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(f"{'backlog':>9} {'idle':>9} {'build peak':>11} {'(+)':>7} {'build':>7} "
          f"{'drain peak':>11} {'(+)':>7} {'drain':>7} {'after':>8} {'db':>8}")
    for n in args.events:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(n, Path(tmp))
        print(f"{n:>9,} {r['idle']:>7.1f}Mi {r['build_peak']:>9.1f}Mi "
              f"{r['build_peak'] - r['idle']:>+6.1f} {r['build_s']:>6.1f}s "
              f"{r['drain_peak']:>9.1f}Mi {r['drain_peak'] - r['idle']:>+6.1f} "
              f"{r['drain_s']:>6.1f}s {r['after']:>6.1f}Mi {r['db_mib']:>6.0f}Mi", flush=True)


if __name__ == "__main__":
    main()
