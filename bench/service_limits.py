"""Peak memory, threads and open files of `agent run` under load: the systemd unit's limits.

Runs the demo store's devices (replay, simulated serial pedestal, simulated Modbus controller,
a GPIO exit, a simulated ONVIF camera) plus a replayed burst as fast as the agent takes it,
a walk through the remote request limit, the control socket full of idle clients, and a
self-test, sampling /proc every 50 ms. ``MemoryMax=``, ``TasksMax=`` and ``LimitNOFILE=`` in
systemd/store-edge-agent.service are set from these peaks with headroom (docs/performance.md).
Run: ``.venv/bin/python bench/service_limits.py [BURST_EVENTS]``.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support import AgentProcess, Broker, agent_config, publish_requests, write_jsonl

ROOT = Path(__file__).parents[1]


class Sampler(threading.Thread):
    """Peaks of VmHWM, Threads and open fds of ``pid`` until ``stop()``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = {"rss_mib": 0.0, "threads": 0, "fds": 0}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                fds = len(list(Path(f"/proc/{self.pid}/fd").iterdir()))
            except (FileNotFoundError, ProcessLookupError):
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            self.peak["rss_mib"] = max(self.peak["rss_mib"], int(fields["VmHWM"].split()[0]) / 1024)
            self.peak["threads"] = max(self.peak["threads"], int(fields["Threads"]))
            self.peak["fds"] = max(self.peak["fds"], fds)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return self.peak


def demo_devices(tmp: Path, burst: int) -> tuple[dict, dict]:
    demo = tomllib.loads((ROOT / "demo" / "agent.toml").read_text())
    devices = demo["devices"]
    devices["demo-replay"]["file"] = str(ROOT / "demo" / devices["demo-replay"]["file"])
    rec = write_jsonl(tmp / "burst.jsonl", [{"type": "door.opened", "data": {}}] * burst)
    devices["burst"] = {"driver": "replay", "file": str(rec), "rate": 0}
    devices["demo-cam"]["snapshot_on"] = ["eas.alarm"]
    exits = demo["exits"]
    exits["exit1"]["camera"] = "demo-cam"
    exits["exit1"].pop("schedule", None)
    return devices, exits


def main() -> None:
    burst = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        broker = Broker(tmp / "broker").start()
        devices, exits = demo_devices(tmp, burst)
        agent = AgentProcess(tmp / "a", agent_config(tmp, broker, devices, exits=exits))
        started = time.monotonic()
        agent.start(wait_connected=True, timeout=60)
        assert agent.proc is not None
        sampler = Sampler(agent.proc.pid)
        sampler.start()
        try:
            clients = []
            for _ in range(40):  # more than control_clients: the extra ones are refused
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(tmp / "control.sock"))
                clients.append(sock)
            time.sleep(0.5)
            for sock in clients:
                sock.close()
            publish_requests(broker, "retail/t1/agent/request/status",
                             [json.dumps({"id": f"s{n}"}).encode() for n in range(2000)])
            selftest = agent.run_cli("selftest", timeout=120)
            if selftest.returncode not in (0, 1):
                print(selftest.stderr, file=sys.stderr)
            for _ in range(10):
                agent.run_cli("sim", "eas", "demo-eas", "alarm", "direction=out")
            status = json.loads(agent.run_cli("status", "--json").stdout)
            deadline = time.monotonic() + 300
            while status["buffer"]["depth"] and time.monotonic() < deadline:
                time.sleep(1)
                status = json.loads(agent.run_cli("status", "--json").stdout)
        finally:
            peak = sampler.stop()
            agent.stop(30)
            broker.stop()
    print(f"agent run, demo store + {burst} replayed events, 40 control clients, 2000 requests, "
          f"a self-test ({'PASS' if selftest.returncode == 0 else 'exit ' + str(selftest.returncode)}),"
          f" {time.monotonic() - started:.0f} s:")
    print(f"  peak RSS (VmHWM) {peak['rss_mib']:.1f} MiB, peak threads {peak['threads']}, "
          f"peak open fds {peak['fds']}")


if __name__ == "__main__":
    main()
