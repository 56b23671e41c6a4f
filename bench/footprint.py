"""Idle footprint of ``agent run``: resident memory, the third-party packages loaded, import time.

Run: .venv/bin/python bench/footprint.py [--rounds 5] [--seconds 4] [--imports]
Target (issue 17): idle RSS at most 45 MiB with only the replay driver.
Another tree (e.g. ``git archive main | tar -x -C /tmp/base``) is measured with
``PYTHONPATH=/tmp/base``: the agent and the probes import it instead of this checkout.

Two configs, run in alternating rounds against one mosquitto on 127.0.0.1 started here:
``replay``, one replay device that waits an hour before its first event, and ``demo``,
demo/agent.toml without its camera (web page on, a schedule, GPIO, serial and Modbus simulators).
Idle RSS is the median of VmRSS sampled every 100 ms for ``--seconds`` from 2 s after the
"started" line; ``.so`` counts the shared objects the measured process maps. The packages are
those in ``sys.modules`` of a separate run of the same command (``agent.cli.main`` under a
SIGUSR1 hook that writes them: tests/support.py ``ProbedAgentProcess``; nothing is added to the
agent). Import times are medians in fresh interpreters: ``import agent.runtime``, and the CLI's
parser that every command builds. ``--imports`` adds what each optional import costs in RSS on
top of the modules every agent needs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support import AgentProcess, Broker, ProbedAgentProcess, agent_config, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
SETTLE = 2.0
CORE = ("agent.config", "agent.events", "agent.buffer", "agent.pipeline", "agent.publisher",
        "agent.supervisor", "agent.control", "agent.commands", "agent.context")
"""What every ``agent run`` imports; ``--imports`` measures the rest on top of it."""
OPTIONAL = ("aiohttp", "agent.web", "apscheduler.schedulers.asyncio", "agent.selftest.schedule",
            "prometheus_client", "agent.metrics", "agent.outputs.manager", "agent.homeassistant",
            "agent.selftest", "agent.runtime", "onvif", "pymodbus.client", "serial",
            "gpiozero")
IMPORTS = {
    "import agent.runtime": "import agent.runtime",
    "the CLI's parser (every agent command)": "import agent.cli; agent.cli.build_parser()",
}
IMPORT_PROBE = """
import gc, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
for name in sys.argv[1].split(","):
    __import__(name)
gc.collect()
before = rss()
__import__(sys.argv[2])
gc.collect()
print(rss() - before)
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def shared_objects(pid: int) -> int:
    """How many distinct .so files the process maps (C extensions and the libraries they use)."""
    paths = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
             if ".so" in line.rsplit("/", 1)[-1]}
    return len(paths)


def configs(tmp: Path, broker: Broker) -> dict[str, dict[str, Any]]:
    """The two agent configs, as dicts for ``AgentProcess``."""
    rec = write_jsonl(tmp / "rec.jsonl", [{"type": "door.opened", "data": {}}])
    replay = agent_config(tmp / "replay", broker, {"r1": {
        "driver": "replay", "file": str(rec), "loop": True, "start_delay": "1h"}})
    replay["agent"]["status_interval"] = "30s"
    demo = tomllib.loads((ROOT / "demo" / "agent.toml").read_text())
    del demo["devices"]["demo-cam"]
    demo["devices"]["exit2-replay"]["file"] = str(ROOT / "demo" / "store.jsonl")
    demo["agent"].update(data_dir=str(tmp / "demo" / "data"),
                         control_socket=str(tmp / "demo" / "control.sock"))
    demo["mqtt"]["port"] = broker.port
    demo["web"]["listen"] = "127.0.0.1:0"
    return {"replay": replay, "demo": demo}


def idle(workdir: Path, config: dict[str, Any], seconds: float) -> tuple[float, int]:
    """Median idle RSS (MiB) and mapped .so count of one ``agent run``."""
    agent = AgentProcess(workdir, config).start(wait_connected=True)
    assert agent.proc is not None
    try:
        time.sleep(SETTLE)
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(rss(agent.proc.pid))
            time.sleep(0.1)
        objects = shared_objects(agent.proc.pid)
        agent.stop()
    finally:
        if agent.proc.poll() is None:
            agent.kill()
    return statistics.median(samples) / MiB, objects


def packages(workdir: Path, config: dict[str, Any]) -> list[str]:
    """Top-level third-party packages in ``sys.modules`` of an idle ``agent run``."""
    agent = ProbedAgentProcess(workdir, config).start(wait_connected=True)
    try:
        time.sleep(SETTLE)
        names = {m.split(".")[0] for m in agent.modules()}
        agent.stop()
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill()
    own = {"agent", "drivers", "__main__", "sitecustomize", "_virtualenv"}
    return sorted(n for n in names if n not in sys.stdlib_module_names and n not in own
                  and not n.startswith("_"))


def import_time(statement: str, rounds: int) -> float:
    """Median seconds of ``statement`` (imports) in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-P", "-c", code], capture_output=True,
                                  text=True, check=True).stdout) for _ in range(rounds)]
    return statistics.median(times)


def import_costs(rounds: int) -> None:
    """RSS each optional import adds on top of ``CORE`` (median of ``rounds`` interpreters)."""
    print(f"\nRSS added on top of {len(CORE)} core modules (median of {rounds}):")
    for name in OPTIONAL:
        values = []
        for _ in range(rounds):
            out = subprocess.run([sys.executable, "-P", "-c", IMPORT_PROBE, ",".join(CORE), name],
                                 capture_output=True, text=True, check=False)
            if out.returncode:
                break
            values.append(int(out.stdout))
        cost = f"{statistics.median(values) / MiB:+6.1f} MiB" if values else "not installed"
        print(f"  {name:32} {cost}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--imports", action="store_true", help="also the cost of each import")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        broker = Broker(tmp / "broker").start()
        try:
            cfgs = configs(tmp, broker)
            results: dict[str, list[tuple[float, int]]] = {name: [] for name in cfgs}
            for n in range(args.rounds):
                order = list(cfgs) if n % 2 == 0 else list(reversed(cfgs))
                for name in order:
                    results[name].append(idle(tmp / name, cfgs[name], args.seconds))
            loaded = {name: packages(tmp / name, cfg) for name, cfg in cfgs.items()}
        finally:
            broker.stop()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.rounds} rounds")
    print(f"{'config':8} {'idle RSS':>9} {'min':>7} {'max':>7} {'.so':>5}  third-party packages")
    for name, runs in results.items():
        values = [r[0] for r in runs]
        print(f"{name:8} {statistics.median(values):7.1f}Mi {min(values):6.1f}Mi "
              f"{max(values):6.1f}Mi {runs[0][1]:5}  {len(loaded[name])}: "
              f"{' '.join(loaded[name])}")
    for what, statement in IMPORTS.items():
        print(f"{what}: {import_time(statement, 7) * 1000:.0f} ms (median of 7)")
    if args.imports:
        import_costs(3)


if __name__ == "__main__":
    main()
