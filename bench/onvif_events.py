"""Events per second through one ONVIF pull point: fake camera (own process) -> driver -> SQLite buffer.

The fake camera keeps every subscription topped up (``--flood``), so the driver always finds a
full PullMessages answer: the figure is what the driver, the zeep client and the pipeline can
take, not what a camera sends. Run: ``.venv/bin/python bench/onvif_events.py [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.testing import DriverHarness

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support import free_port


async def measure(port: int, limit: int, seconds: float, tmp: Path) -> dict[str, float]:
    secret = tmp / "pw"
    secret.write_text("secret")
    options = {"host": "127.0.0.1", "port": port, "username": "admin", "password_file": str(secret),
               "pull_timeout": "1s", "message_limit": limit}
    async with DriverHarness("onvif", options, tmp_path=tmp) as h:
        await h.wait_for("device.online", timeout=30)
        await asyncio.sleep(1.0)  # warm up
        pulls0 = h.driver.counts["pulls"]
        n0, t0 = len(h.events), time.monotonic()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(seconds)
        n1, t1 = len(h.events), time.monotonic()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        pulls = h.driver.counts["pulls"] - pulls0
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"events_s": (n1 - n0) / (t1 - t0), "pulls_s": pulls / (t1 - t0),
            "cpu_pct": 100 * cpu / (t1 - t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--limits", default="100,1024", help="PullMessages MessageLimit values")
    args = parser.parse_args()
    for limit in (int(x) for x in args.limits.split(",")):
        port = free_port()
        camera = subprocess.Popen(
            [sys.executable, "-m", "drivers.onvif.simulator", "--port", str(port),
             "--password", "secret", "--flood", str(max(2 * limit, 1000))],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert camera.stdout is not None
            camera.stdout.readline()  # "fake ONVIF camera on ..."
            with tempfile.TemporaryDirectory() as tmp:
                result = asyncio.run(measure(port, limit, args.seconds, Path(tmp)))
        finally:
            camera.terminate()
            camera.wait(5)
        print(f"message_limit={limit:5d}: {result['events_s']:8.0f} events/s committed, "
              f"{result['pulls_s']:6.1f} pulls/s, driver+pipeline process CPU {result['cpu_pct']:.0f}%")


if __name__ == "__main__":
    main()
