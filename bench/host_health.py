"""What reading the host's health costs: every status report and every metrics scrape does it.

    .venv/bin/python bench/host_health.py

Times HostHealth.read() on this machine's /proc and /sys and on the Pi 4 sample tree of the
tests (tests/fixtures/host/pi4), 2,000 reads each; prints the median and the 99th percentile.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from agent.health import HostHealth

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "host" / "pi4"


def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        for name, root in (("this machine", Path("/")), ("Pi 4 sample tree", SAMPLES)):
            health = HostHealth(Path(data), root=root)
            runs = []
            for _ in range(2000):
                start = time.perf_counter()
                health.read()
                runs.append(time.perf_counter() - start)
            runs.sort()
            print(f"{name:<18} HostHealth.read(): median {statistics.median(runs) * 1e3:.3f} ms, "
                  f"p99 {runs[int(len(runs) * 0.99)] * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
