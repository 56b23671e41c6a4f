"""The web page under load: 20 live-event pages while the agent emits 200 events/s.

Run: .venv/bin/python bench/web_load.py [--pages 20] [--rate 200] [--seconds 15]

Two runs of the real agent (replay driver at ``--rate``, mosquitto on 127.0.0.1 started here):
without pages, then with ``--pages`` pages on /api/events over HTTPS. Printed per run: the
agent's CPU (user+system, % of one core, over the replay), emit-to-broker p50/p99 (the
pipeline's own latency), and with pages emit-to-page p50/p99 and events each page got.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import cpu_seconds
from pipeline import Sink, arrivals  # bench/pipeline.py
from support import AgentProcess, Broker, agent_config, wait_until, write_jsonl

from agent import control


def event_time(env: dict) -> float:
    return datetime.fromisoformat(env["time"].replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else float("nan")


async def page(url: str, cert: Path, sock: Path, count: int, got: list[tuple[float, float]],
               ready: asyncio.Event) -> None:
    reply = control.call(sock, "web", do="pair", role="viewer", **{"for": 300})
    code = reply["link"].split("#pair=")[1]
    ctx = ssl.create_default_context(cafile=str(cert))
    # unsafe: aiohttp keeps no cookies of an IP address host (127.0.0.1) otherwise
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(f"{url}/api/pair", json={"code": code}) as r:
            assert r.status == 200, await r.text()
        async with session.get(f"{url}/api/events",
                               timeout=aiohttp.ClientTimeout(total=None)) as stream:
            assert stream.status == 200, await stream.text()
            ready.set()
            n = 0
            async for raw in stream.content:
                if raw.startswith(b"data: "):
                    env = json.loads(raw[6:])
                    if env["deviceid"] == "feed":
                        got.append((time.time(), event_time(env)))
                        n += 1
                        if n >= count:
                            return


async def pages(url: str, cert: Path, sock: Path, n: int, count: int, timeout: float,
                connected: threading.Event) -> list[list[tuple[float, float]]]:
    got: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(page(url, cert, sock, count, got[i], readies[i]))
             for i in range(n)]
    await asyncio.gather(*(r.wait() for r in readies))
    connected.set()
    await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        if task.done() and task.exception():
            raise task.exception()  # type: ignore[misc]
        task.cancel()
    return got


def run(tmp: Path, broker: Broker, n_pages: int, rate: int, seconds: int) -> dict:
    count = rate * seconds
    tmp.mkdir(parents=True)
    feed = write_jsonl(tmp / "feed.jsonl", [{"type": "eas.alarm", "subject": "exit1",
                                             "data": {"direction": "out", "level": 3}}])
    cfg = agent_config(tmp, broker, {"feed": {"driver": "replay", "file": str(feed),
                                              "rate": rate, "loop": True, "count": count,
                                              "start_delay": "6s"}},
                       web={"listen": "127.0.0.1:0"})
    sink = Sink(broker)
    agent = AgentProcess(tmp / "a", cfg)
    agent.start(wait_connected=True)
    try:
        url = wait_until(lambda: json.loads(agent.run_cli("status", "--json").stdout or "{}")
                         .get("web", {}).get("url"), 10, "the web page")
        sock, cert = tmp / "control.sock", tmp / "data" / "web" / "web.crt"
        assert agent.proc is not None
        pid = agent.proc.pid
        results: list[list[tuple[float, float]]] = []
        connected = threading.Event()
        if n_pages:
            def serve() -> None:
                results.extend(asyncio.run(pages(url, cert, sock, n_pages, count, seconds + 30,
                                                 connected)))
            thread = threading.Thread(target=serve)
            thread.start()
            assert connected.wait(20), "the pages did not connect"
        # The replay starts 6 s after the agent; measure CPU from its first to its last event.
        wait_until(lambda: arrivals(sink, "feed"), 20, "the first replayed event")
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        wait_until(lambda: len(arrivals(sink, "feed")) >= count, seconds + 30, "every event")
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
        if n_pages:
            thread.join(60)
        broker_lat = [(t - event_time(env)) * 1000 for t, env in arrivals(sink, "feed")]
        page_lat = [(r - e) * 1000 for got in results for r, e in got]
        return {"pages": n_pages, "cpu_pct": cpu, "broker_p50": pct(broker_lat, 50),
                "broker_p99": pct(broker_lat, 99), "page_p50": pct(page_lat, 50),
                "page_p99": pct(page_lat, 99), "page_max": max(page_lat, default=float("nan")),
                "per_page": sorted(len(g) for g in results), "events": count}
    finally:
        agent.stop()
        sink.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            for n in (0, args.pages):
                r = run(Path(tmp) / f"run{n}", broker, n, args.rate, args.seconds)
                line = (f"{n:>2} pages, {args.rate} events/s x {args.seconds} s: agent CPU "
                        f"{r['cpu_pct']:.1f} % of one core; emit-to-broker p50 "
                        f"{r['broker_p50']:.1f} ms, p99 {r['broker_p99']:.1f} ms")
                if n:
                    line += (f"; emit-to-page p50 {r['page_p50']:.1f} ms, p99 "
                             f"{r['page_p99']:.1f} ms, max {r['page_max']:.1f} ms; events per "
                             f"page {min(r['per_page'])} to {max(r['per_page'])} of {r['events']}")
                print(line, flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
