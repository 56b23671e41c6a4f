"""What one status report or metrics scrape costs with a full buffer: Buffer.stats() and a scrape.

    .venv/bin/python bench/status_cost.py [EVENTS]

Fills a scratch buffer with EVENTS events of ~0.9 KiB (default 200000: ~180 MiB, near the
256MiB default cap), then times the oldest-event lookup as it was (min(created): a full table
scan) and as it is (the lowest seq: a primary-key lookup), and one full metrics collection.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import generate_latest

from agent.buffer import Buffer, Pending
from agent.config import load_config
from agent.events import rfc3339, uuid7
from agent.metrics import AgentCollector, Metrics
from agent.runtime import Agent
from agent.testing import write_config


def timed(fn, repeat: int = 20) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1000


def fill(buffer: Buffer, count: int) -> None:
    batch = []
    for i in range(count):
        env = {"specversion": "1.0", "id": uuid7(), "type": "eas.people_count",
               "deviceid": f"dev{i % 8}", "time": rfc3339(), "data": {"in": i, "out": 0,
                                                                      "pad": "x" * 700}}
        batch.append(Pending(env, 0))
        if len(batch) == 5000:
            buffer.commit(batch)
            batch = []
    if batch:
        buffer.commit(batch)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(Path(tmp) / "agent.toml", {
            "agent": {"store_id": "bench", "data_dir": str(Path(tmp) / "data"),
                      "control_socket": str(Path(tmp) / "c.sock")},
            "buffer": {"max_bytes": "1GiB", "synchronous": "normal"},
        })
        agent = Agent(load_config(cfg))
        agent.buffer.open()
        start = time.perf_counter()
        fill(agent.buffer, count)
        print(f"filled {count} events ({agent.buffer.stats().bytes / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - start:.1f} s")
        reader = agent.buffer._reader()
        old = timed(lambda: reader.execute("SELECT min(created) FROM events").fetchone())
        new = timed(agent.buffer.stats)
        collector = AgentCollector(agent)
        scrape = timed(lambda: list(collector.collect()))
        print(f"oldest event by min(created) (before): {old:8.2f} ms")
        print(f"Buffer.stats() by lowest seq (now):     {new:8.2f} ms")
        registry = Metrics(agent).registry  # with the process collector, as served
        served = timed(lambda: generate_latest(registry))
        print(f"one metrics collection:                 {scrape:8.2f} ms")
        print(f"one whole /metrics page (text format):  {served:8.2f} ms")
        agent.buffer.close()


if __name__ == "__main__":
    main()
