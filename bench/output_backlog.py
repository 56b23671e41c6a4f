"""An output down for a long while: memory and the broker's pace while its backlog builds, then the
drain to the VMS once it is back.

Run: .venv/bin/python bench/output_backlog.py [--events 50000]

The real agent replays ``--events`` alarms as fast as it can while its ``exacq_serial`` output's
target is down: the broker (a local mosquitto) takes them all, the buffer keeps them marked
published for the output. Then the fake exacqVision listener starts and the backlog drains to
it. Printed: RSS idle / peak building / peak draining, seconds to publish and to drain, and
that every alarm reached the VMS once, in order.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from backlog_memory import Counter, MiB, Peak, rss
from support import AgentProcess, Broker, agent_config, wait_until, write_jsonl
from vms_fakes import FakeTcp, exacq_transactions

START_DELAY = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    n = args.events
    tmp = Path(tempfile.mkdtemp(prefix="bench-outbacklog-"))
    rec = write_jsonl(tmp / "rec.jsonl", [
        {"type": "eas.alarm", "subject": "exit1", "data": {"direction": "out", "level": 2}}])
    broker = Broker(tmp / "broker").start()
    vms = FakeTcp()
    cfg = agent_config(tmp, broker, {"r1": {"driver": "replay", "file": str(rec), "rate": 0,
                                            "loop": True, "count": n, "start_delay": f"{START_DELAY}s"}},
                       buffer={"max_bytes": "2GiB"}, exits={"exit1": {"eas": "r1"}})
    cfg["agent"]["status_interval"] = "30s"
    cfg["outputs"] = {"exacq": {"kind": "exacq_serial", "host": "127.0.0.1", "port": vms.port,
                                "template": "{seq}", "retry_max": "2s"}}
    agent = AgentProcess(tmp / "a", cfg)
    counter = Counter(broker)
    counter.connect(broker)
    agent.start(wait_connected=True)
    replay_starts = time.monotonic() + START_DELAY  # give or take the driver's start
    assert agent.proc is not None
    pid = agent.proc.pid
    try:
        time.sleep(3)
        idle = rss(pid)
        build = Peak(pid)
        wait_until(lambda: counter.count >= n, 3600, "the broker to have every alarm",
                   interval=0.2)
        t_published = time.monotonic()
        wait_until(lambda: "driver finished" in agent.output(), 60, "the replay to finish")
        build_peak = build.stop()
        publish_s = t_published - replay_starts
        vms.start()
        drain = Peak(pid)
        t0 = time.monotonic()
        wait_until(lambda: vms.data.count(b"SEA END") >= n, 3600, "the backlog at the VMS",
                   interval=0.5)
        drain_s = time.monotonic() - t0
        drain_peak = drain.stop()
        seqs = [int(t[0]) for t in exacq_transactions(vms.lines(), "SEA BEGIN", "SEA END")]
        in_order = seqs == sorted(set(seqs))
        agent.stop(timeout=60)
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        counter.close()
        vms.stop()
        broker.stop()
    print(f"{n:,} alarms while the output's target was down, then drained to it")
    print(f"  RSS idle {idle / MiB:.1f} MiB, peak building {build_peak / MiB:.1f} MiB "
          f"({(build_peak - idle) / MiB:+.1f}), peak draining {drain_peak / MiB:.1f} MiB "
          f"({(drain_peak - idle) / MiB:+.1f})")
    print(f"  broker had all of them {publish_s:.1f} s after the replay began (about) "
          f"({n / publish_s:,.0f}/s); the VMS {drain_s:.1f} s after it came back "
          f"({n / drain_s:,.0f}/s)")
    print(f"  VMS received {len(seqs):,} transactions, each once and in seq order: {in_order}")
    return 0 if in_order and len(seqs) == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
