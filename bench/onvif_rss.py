"""Resident memory of `agent run` without and with an ONVIF camera configured (and connected).

Each case starts the real agent against a local mosquitto; the ONVIF case also a fake camera
in its own process, and waits until the device is online and has pulled for a while.
Run: ``.venv/bin/python bench/onvif_rss.py``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support import AgentProcess, Broker, agent_config, free_port, wait_until, write_jsonl


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def run_case(tmp: Path, broker: Broker, devices: dict, settle: float) -> tuple[int, float]:
    agent = AgentProcess(tmp / "agent", agent_config(tmp, broker, devices))
    start = time.monotonic()
    agent.start(wait_connected=True)
    try:
        if "cam1" in devices:
            wait_until(lambda: "subscribed to events" in agent.output(), 30, "camera online")
        ready = time.monotonic() - start
        time.sleep(settle)
        assert agent.proc is not None
        return rss_kib(agent.proc.pid), ready
    finally:
        agent.stop()


def main() -> None:
    settle = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        broker = Broker(tmp / "broker").start()
        rec = write_jsonl(tmp / "rec.jsonl", [{"type": "door.opened", "data": {}, "delay": 1}])
        replay = {"door1": {"driver": "replay", "file": str(rec), "loop": True}}
        port = free_port()
        camera = subprocess.Popen(
            [sys.executable, "-m", "drivers.onvif.simulator", "--port", str(port),
             "--password", "secret", "--motion-every", "1"], stdout=subprocess.PIPE, text=True)
        try:
            assert camera.stdout is not None
            camera.stdout.readline()
            (tmp / "pw").write_text("secret")
            cam = {"cam1": {"driver": "onvif", "host": "127.0.0.1", "port": port,
                            "username": "admin", "password_file": str(tmp / "pw"),
                            "pull_timeout": "2s"}}
            without, _ = run_case(tmp / "a", broker, replay, settle)
            with_cam, t1 = run_case(tmp / "b", broker, {**replay, **cam}, settle)
        finally:
            camera.terminate()
            camera.wait(5)
            broker.stop()
    print(f"agent run, replay device only:          RSS {without / 1024:6.1f} MiB")
    print(f"agent run, replay + one ONVIF camera:   RSS {with_cam / 1024:6.1f} MiB "
          f"(+{(with_cam - without) / 1024:.1f} MiB; online {t1:.1f} s after start)")


if __name__ == "__main__":
    main()
