"""CPU per event of the hold between emit() and the commit (``agent.spill.Spill``), in-process.

    .venv/bin/python bench/hold.py [--checkout ../before]

Polls of 10 events and a kept state, as the Modbus driver makes them, with and without a group
(``begin``/``end``, what ``DriverContext.together()`` opens), the writer taking every third poll;
prints microseconds per event (the best of 5 runs of 200,000 events). ``--checkout`` measures
another checkout's hold in a second process, for a before/after in one run (its hold may have no
groups: then both figures are without).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

EVENTS_PER_POLL, POLLS, RUNS = 10, 20_000, 5


def per_event(group: bool) -> float:
    from agent.buffer import Pending
    from agent.events import PRIORITY_ALARM
    from agent.spill import Spill

    spill = Spill(5000)
    events = [Pending({"n": i}, PRIORITY_ALARM) for i in range(EVENTS_PER_POLL)]
    grouped = group and hasattr(spill, "begin")
    start = time.perf_counter()
    for poll in range(POLLS):
        token = spill.begin() if grouped else 0
        for event in events:
            spill.put(event)
        spill.keep("d/counters", "{}")
        if grouped:
            spill.end(token)
        if poll % 3 == 0:
            spill.take_with_kept(2000)
    spill.take_with_kept(10**6)
    return (time.perf_counter() - start) / (POLLS * EVENTS_PER_POLL) * 1e6


def measure(root: Path) -> str:
    sys.path.insert(0, str(root))
    plain = min(per_event(False) for _ in range(RUNS))
    grouped = min(per_event(True) for _ in range(RUNS))
    return f"{root}: {plain:.3f} us per event without a group, {grouped:.3f} with"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, help="another checkout to measure in turn")
    parser.add_argument("--only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only is not None:
        print(measure(args.only.resolve()))
        return 0
    roots = [Path(__file__).resolve().parents[1]]
    if args.checkout is not None:
        roots.insert(0, args.checkout.resolve())
    for _ in range(2):  # alternated: the machine is shared
        for root in roots:
            subprocess.run([sys.executable, __file__, "--only", str(root)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
