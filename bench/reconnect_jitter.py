"""A fleet losing its broker: reconnect attempts per second with today's +-20 % jitter and with
full jitter, simulated with the agent's own Backoff class (no sockets: the schedule only).

    .venv/bin/python bench/reconnect_jitter.py [AGENTS] [OUTAGE_S ...]

Every agent loses its connection at t=0 (a broker restart), waits as the publisher does after a
loss (reset, then next()), and retries with reconnect_min 1 s (then 5 s), reconnect_max 60 s until the broker
is back at OUTAGE_S. Printed: the peak attempts in one second while the broker is down, the
peak connections accepted in one second once it is back, and when the last agent is back.
bench/fleet.py measures the same with real agents and a real broker.
"""

from __future__ import annotations

import collections
import random
import sys

from agent.backoff import FULL, Backoff


def simulate(agents: int, outage: float, jitter: float | str, initial: float,
             ) -> tuple[int, int, float]:
    attempts: collections.Counter[int] = collections.Counter()
    connects: collections.Counter[int] = collections.Counter()
    last = 0.0
    for _ in range(agents):
        backoff = Backoff(initial=initial, cap=60.0, jitter=jitter)  # type: ignore[arg-type]
        t = backoff.next()
        while t < outage:
            attempts[int(t)] += 1
            t += backoff.next()
        connects[int(t)] += 1
        last = max(last, t)
    return max(attempts.values(), default=0), max(connects.values()), last


def main() -> None:
    agents = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    outages = [float(a) for a in sys.argv[2:]] or [0.5, 10.0, 60.0, 300.0]
    random.seed(1)
    print(f"{agents} agents lose the broker at t=0; reconnect_max 60 s")
    print(f"{'min s':>5} {'outage s':>9} {'jitter':>7} {'peak attempts/s down':>21} "
          f"{'peak connects/s back':>21} {'all back after s':>17}")
    for initial in (1.0, 5.0):
        for outage in outages:
            for name, jitter in (("+-20%", 0.2), ("full", FULL)):
                peak_down, peak_up, last = simulate(agents, outage, jitter, initial)
                print(f"{initial:>5.0f} {outage:>9.1f} {name:>7} {peak_down:>21} {peak_up:>21} "
                      f"{last:>17.1f}")


if __name__ == "__main__":
    main()
