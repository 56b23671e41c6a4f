"""Memory of `agent run` while a camera and a request flood misbehave on purpose (issue 19).

A fake camera answers three snapshot requests with 1 GiB each and then PullMessages with
300 MB each (streamed without a length); then 20,000 `status` requests arrive in one burst.
Prints the agent's peak resident memory (VmHWM) after each, against its baseline.
Run: ``.venv/bin/python bench/hostile_inputs.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _common import mib
from support import AgentProcess, Broker, agent_config, publish_requests

from drivers.onvif.simulator import FakeCameraThread


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        broker = Broker(tmp / "broker").start()
        cam = FakeCameraThread(password="p")
        (tmp / "pw").write_text("p\n")
        devices = {
            "cam1": {"driver": "onvif", "host": "127.0.0.1", "port": cam.port,
                     "username": "admin", "password_file": str(tmp / "pw"),
                     "snapshot_on": ["eas.alarm"], "pull_timeout": "1s", "retry_min": "100ms",
                     "retry_max": "500ms", "request_timeout": "2s"},
            "eas1": {"driver": "gpio_input", "pin": "GPIO17", "pull": "up",
                     "on_active": {"event": "eas.alarm", "data": {"direction": "out"}}},
        }
        agent = AgentProcess(tmp / "a", agent_config(
            tmp, broker, devices, exits={"exit1": {"eas": "eas1", "camera": "cam1"}}))
        try:
            agent.start(wait_connected=True)
            time.sleep(2)
            assert agent.proc is not None
            pid = agent.proc.pid
            print(f"{'baseline (camera online)':44} VmHWM {mib(pid, 'VmHWM'):6.1f} MiB")
            cam.camera.snapshot_size = 1024**3
            for _ in range(3):
                agent.run_cli("sim", "gpio", "eas1", "pulse")
                time.sleep(1.5)
            refused = agent.output().count("larger than snapshot_max_bytes")
            print(f"{f'3 snapshots of 1 GiB ({refused} refused)':44} VmHWM {mib(pid, 'VmHWM'):6.1f} MiB")
            cam.camera.snapshot_size = 0
            cam.camera.pull_padding = 300 * 1024**2
            cam.run(cam.camera.motion, True)
            time.sleep(4)
            refused = agent.output().count("larger than xml_max_bytes")
            print(f"{f'PullMessages of 300 MB ({refused} refused)':44} VmHWM {mib(pid, 'VmHWM'):6.1f} MiB")
            cam.camera.pull_padding = 0
            before = mib(pid, "VmRSS")
            publish_requests(broker, "retail/t1/agent/request/status",
                             [b'{"id": "s%d"}' % n for n in range(20_000)])
            time.sleep(3)
            print(f"{'20,000 status requests in a burst':44} VmRSS {before:6.1f} -> "
                  f"{mib(pid, 'VmRSS'):.1f} MiB")
        finally:
            agent.stop()
            cam.close()
            broker.stop()


if __name__ == "__main__":
    main()
