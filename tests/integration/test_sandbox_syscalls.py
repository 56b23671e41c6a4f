"""The unit's system-call and socket filters allow everything the real agent does (strace)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from support import AGENT_BIN, agent_config, metrics_port, wait_until, write_jsonl

from agent.testing import write_config

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "store-edge-agent.service"
ROOT_ONLY = {"fchown"}  # SQLite hands its files to their owner only when running as root

pytestmark = pytest.mark.skipif(
    not (shutil.which("strace") and shutil.which("systemd-analyze")),
    reason="needs strace and systemd-analyze (scripts/setup installs both)",
)


@functools.cache
def syscall_group(name: str) -> frozenset[str]:
    """The system calls of a systemd group such as @system-service, nested groups expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True,
                         text=True, check=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= syscall_group(item) if item.startswith("@") else {item}
    return frozenset(calls)


def allowed_by_unit() -> set[str]:
    """SystemCallFilter= as systemd reads it: the first line (an allow list) sets the base,
    later lines add calls or, with ~, take them away."""
    allowed: set[str] = set()
    for line in UNIT.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1]
        deny = value.startswith("~")
        names = set()
        for item in value.lstrip("~").split():
            names |= syscall_group(item) if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names
    return allowed


def _agent_child(tracer: int) -> int | None:
    """The traced agent's pid (strace also forks short-lived children to probe ptrace)."""
    for pid in Path(f"/proc/{tracer}/task/{tracer}/children").read_text().split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if not argv[0].endswith(b"strace") and b"run" in argv:  # exec'd: it is the agent
            return int(pid)
    return None


def test_every_system_call_of_a_running_agent_passes_the_units_filter(tmp_path, broker):
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "eas.alarm", "data": {"direction": "out"}},
                                                {"type": "door.opened", "data": {}}])
    config = write_config(tmp_path / "agent.toml", agent_config(
        tmp_path, broker, {"replay1": {"driver": "replay", "file": str(rec), "rate": 100,
                                       "loop": True, "count": 100}},
        metrics={"listen": "127.0.0.1:0"}, web={"listen": "127.0.0.1:0"}))
    trace = tmp_path / "trace"
    log = (tmp_path / "agent.log").open("w")
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), AGENT_BIN, "--config",
                               str(config), "run"], stdout=log, stderr=subprocess.STDOUT)
    try:
        agent_pid = wait_until(lambda: _agent_child(tracer.pid), 10, "the agent under strace")
        wait_until(lambda: "driver finished" in (tmp_path / "agent.log").read_text(), 30,
                   "the replay to finish")
        port = wait_until(lambda: metrics_port((tmp_path / "agent.log").read_text()), 10,
                          "the metrics port in the log")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert b"store_edge_agent_events_published_total" in reply.read()
        status = subprocess.run([AGENT_BIN, "--config", str(config), "status"],
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stdout + status.stderr
        # The web page: its certificate made by openssl on first start, served over TLS.
        url = re.search(r"web page on (https://\S+) ", (tmp_path / "agent.log").read_text())
        assert url, "the web page's address in the log"
        tls = ssl.create_default_context(cafile=str(tmp_path / "data" / "web" / "web.crt"))
        with urllib.request.urlopen(url.group(1) + "/", timeout=10, context=tls) as reply:
            assert b"/static/app.js" in reply.read()
        os.kill(agent_pid, signal.SIGTERM)
        assert tracer.wait(30) == 0
    finally:
        if tracer.poll() is None:
            tracer.kill()
        log.close()

    used = {m.group(1) for line in trace.read_text().splitlines()
            if (m := re.match(r"\d+\s+([a-z0-9_]+)\(", line))}
    assert len(used) > 30  # the trace really holds the agent's calls
    denied = used - allowed_by_unit() - ROOT_ONLY
    assert not denied, f"the unit's SystemCallFilter= would deny {sorted(denied)}"

    families = set(re.findall(r"socket(?:pair)?\((AF_[A-Z0-9]+)", trace.read_text()))
    restricted = next(line.split("=", 1)[1].split() for line in UNIT.read_text().splitlines()
                      if line.startswith("RestrictAddressFamilies="))
    assert families, "the trace shows no sockets"
    assert families <= set(restricted), f"RestrictAddressFamilies= would deny {families}"
