"""CPU of the real agent polling one Modbus TCP controller every 200 ms (share of one core).

    .venv/bin/python bench/modbus_poll_cpu.py [--seconds 30] [--interval 0.2] [--baseline]

The simulated EAS controller (a pymodbus server, drivers/modbus/simulator.py) runs in this
process; ``agent run`` polls its sample register map (2 requests per poll) and the agent
process' user+system CPU time is read from /proc over ``--seconds`` after a warm-up.
``--baseline`` also measures the same agent with no device, to show what polling adds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _common import cpu_seconds
from support import AgentProcess, Broker, agent_config

from drivers.modbus.simulator import ControllerThread

SAMPLE = Path(__file__).parents[1] / "drivers" / "modbus" / "sample.toml"


def measure(tmp: Path, broker: Broker, devices: dict, seconds: float) -> float:
    agent = AgentProcess(tmp, agent_config(tmp, broker, devices))
    agent.start(wait_connected=True)
    try:
        time.sleep(3)  # warm-up: imports, first connection, first polls
        assert agent.proc is not None
        c0, t0 = cpu_seconds(agent.proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(agent.proc.pid), time.monotonic()
        return (c1 - c0) / (t1 - t0) * 100
    finally:
        agent.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--baseline", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-modbus-"))
    broker = Broker(tmp / "broker").start()
    ctl = ControllerThread()
    ctl.start()
    regs = tomllib.loads(SAMPLE.read_text())["devices"]["exit1-eas"]["registers"]
    device = {"ctl": {"driver": "modbus", "host": "127.0.0.1", "tcp_port": ctl.controller.port,
                      "poll_interval": args.interval, "registers": regs}}
    try:
        polling = measure(tmp / "polling", broker, device, args.seconds)
        print(f"modbus: agent polling 1 controller every {args.interval * 1000:.0f} ms "
              f"({len(regs)} map entries, 2 requests per poll), {args.seconds:.0f} s: "
              f"{polling:.2f}% of one core (target < 2%)")
        if args.baseline:
            idle = measure(tmp / "idle", broker, {}, args.seconds)
            print(f"  same agent with no device: {idle:.2f}% of one core; polling adds "
                  f"{polling - idle:.2f}%")
    finally:
        ctl.close()
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
