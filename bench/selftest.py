"""Exit self-test figures: a whole run, and test tag energised to eas.alarm committed.

The real ``agent run`` service with a simulated exit (mock pins: the test-tag output wired to
the pedestal's relay input, 50 ms debounce), a local mosquitto, and self-tests asked over the
control socket as ``agent selftest`` does. Also one ``agent selftest`` command, end to end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support import AGENT_BIN, AgentProcess, Broker, agent_config, wait_until

from agent import control

EXIT1 = {
    "exit1-door": {"driver": "gpio_door", "pin": "GPIO5"},
    "exit1-eas": {"driver": "gpio_input", "pin": "GPIO17",
                  "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}}},
    "exit1-testtag": {"driver": "gpio_output", "pin": "GPIO27", "pulse": "500ms",
                      "sim_drives": "exit1-eas"},
}


def run_once(sock: Path) -> dict:
    replies = list(control.request(sock, "selftest", timeout=60, exit="exit1"))
    reply = replies[-1]
    if reply["status"] != "ok" or reply["result"] != "pass":
        raise RuntimeError(f"self-test did not pass: {reply}")
    return reply["reports"][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker").start()
        cfg = agent_config(work, broker, EXIT1, exits={"exit1": {
            "eas": "exit1-eas", "door": "exit1-door", "test_tag": "exit1-testtag"}})
        agent = AgentProcess(work / "a", cfg).start(wait_connected=True)
        try:
            sock = Path(cfg["agent"]["control_socket"])
            wait_until(lambda: all(d["online"] for d in control.call(sock, "status")["agent"][
                "devices"].values()), 15, "devices online")
            whole, alarm = [], []
            for _ in range(args.runs):
                report = run_once(sock)
                whole.append(report["duration_ms"])
                alarm.append(next(s["latency_ms"] for s in report["steps"]
                                  if s["step"] == "alarm"))
            started = time.perf_counter()
            cli = subprocess.run([AGENT_BIN, "--config", str(agent.config_path), "selftest"],
                                 capture_output=True, text=True, timeout=60, check=False)
            cli_s = time.perf_counter() - started
            assert cli.returncode == 0, cli.stdout + cli.stderr
        finally:
            agent.stop()
            broker.stop()
    for name, values in (("whole self-test (9 steps, in the service)", whole),
                         ("test tag energised -> eas.alarm committed", alarm)):
        ms = sorted(values)
        print(f"{name}: n={len(ms)} median {statistics.median(ms):.1f} ms, "
              f"p95 {ms[int(len(ms) * 0.95) - 1]:.1f} ms, max {ms[-1]:.1f} ms")
    print(f"`agent selftest` command end to end (Python start, socket, run, print): "
          f"{cli_s * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
