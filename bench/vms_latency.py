"""Pedestal serial frame to VMS: latency through socat, the real agent and each output kind.

    .venv/bin/python bench/vms_latency.py [--frames 500] [--gap 0.05] [--telemetry 20]

A simulated pedestal writes ``ALARM|OUT|<n>|1`` lines to a socat pty pair; the real ``agent
run`` reads them with the eas_serial driver, commits each alarm to its buffer, publishes it to a
local mosquitto and hands it to two outputs: an XProtect generic event over TCP (a fake event
server in this process, timestamping each string) and a webhook (a fake HTTP receiver). A
replay device adds ``--telemetry`` people-count events per second (store-like background that
the outputs filter out). Frames go one at a time, ``--gap`` apart: each figure is one alarm's
own latency. The broker's arrival is printed beside them for reference.
"""

from __future__ import annotations

import argparse
import json
import socketserver
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support import AgentProcess, Broker, Subscriber, agent_config, wait_until, write_jsonl
from vms_fakes import FakeHttp

from drivers.eas_serial.simulator import SocatPair, UrlLink


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class GenericEventServer(socketserver.ThreadingTCPServer):
    """XProtect's generic event port, as far as the agent can tell: reads each string and
    timestamps its first byte."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                first = None
                data = b""
                while chunk := self.request.recv(4096):
                    first = first or time.monotonic()
                    data += chunk
                for line in data.decode().splitlines():
                    if line.startswith("SEA eas.alarm "):
                        server.received[int(line.split()[-1])] = first or time.monotonic()

        super().__init__(("127.0.0.1", 0), Handler)


def report(name: str, sent: dict[int, float], received: dict[int, float]) -> bool:
    lat = [(received[n] - sent[n]) * 1000 for n in sent if n in received]
    lost = [n for n in sent if n not in received]
    print(f"  {name:<28} p50 {percentile(lat, 50):6.2f} ms  p95 {percentile(lat, 95):6.2f} ms  "
          f"p99 {percentile(lat, 99):6.2f} ms  max {max(lat):7.2f} ms"
          + (f"  LOST {len(lost)}" if lost else ""))
    return not lost


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between alarms")
    parser.add_argument("--telemetry", type=float, default=20,
                        help="background people-count events per second")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-vms-"))
    broker = Broker(tmp / "broker").start()
    pair = SocatPair(tmp / "pty").start()
    generic = GenericEventServer()
    threading.Thread(target=generic.serve_forever, daemon=True).start()
    hook = FakeHttp()
    mqtt: dict[int, float] = {}
    sub = Subscriber(broker, "retail/t1/events/exit1-eas/eas.alarm")
    sub.client.on_message = lambda c, u, msg: mqtt.setdefault(
        int(json.loads(msg.payload)["data"]["level"]), time.monotonic())
    rec = write_jsonl(tmp / "telemetry.jsonl", [{"type": "eas.people_count",
                                                  "data": {"in": 1, "out": 0}}])
    devices = {
        "exit1-eas": {"driver": "eas_serial", "port": str(pair.driver_end),
                      "profile": "pipe-events"},
        "counter": {"driver": "replay", "file": str(rec), "rate": args.telemetry, "loop": True},
    }
    cfg = agent_config(tmp, broker, devices, exits={"exit1": {"eas": "exit1-eas"}})
    cfg["outputs"] = {
        "xprotect": {"kind": "milestone_generic", "host": "127.0.0.1",
                     "port": generic.server_address[1], "exits": {"exit1": "Exit 1"},
                     "template": "SEA {type} {camera} {data.level}"},
        "hook": {"kind": "webhook", "url": hook.url},
    }
    agent = AgentProcess(tmp / "agent", cfg)
    try:
        agent.start(wait_connected=True)
        wait_until(lambda: "port " in agent.output() and " open" in agent.output(), 10,
                   "the driver to open the port")
        link = UrlLink(str(pair.pedestal_end))
        sent: dict[int, float] = {}
        for n in range(1, args.frames + 1):
            sent[n] = time.monotonic()
            link.write(f"ALARM|OUT|{n}|1\r\n".encode())
            time.sleep(args.gap)
        wait_until(lambda: len(generic.received) >= args.frames
                   and len(hook.requests) >= args.frames, 30, "every alarm at both outputs")
        link.close()
        webhook = {int(json.loads(r["body"])["data"]["level"]): t
                   for r, t in zip(hook.requests, hook.arrived, strict=True)}
        print(f"eas_serial frame -> VMS latency, {len(sent)} alarms {args.gap * 1000:.0f} ms "
              f"apart, {args.telemetry:g} telemetry events/s beside them, synchronous=full "
              "(target p99 < 50 ms)")
        report("MQTT (reference)", sent, mqtt)
        ok = report("milestone_generic (tcp)", sent, generic.received)
        ok = report("webhook (http)", sent, webhook) and ok
        return 0 if ok else 1
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()
        sub.close()
        generic.shutdown()
        hook.stop()
        pair.stop()
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
