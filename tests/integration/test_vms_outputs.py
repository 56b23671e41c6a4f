"""VMS and webhook outputs with a real agent, a real mosquitto and fake VMS servers on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from support import AgentProcess, Broker, agent_config, wait_until, write_jsonl
from vms_fakes import FakeHttp, FakeTcp, FakeUdp, analytics_events, exacq_transactions

SECRET = b"s3cret-hook-key"
CAMERAS = {"exit1": "Cam Exit 1 (front)", "exit2": "Cam Exit 2 (mall)"}


def store(tmp: Path, lines: list[dict[str, Any]], *, rate: float = 0,
          **sections: dict[str, Any]) -> dict[str, Any]:
    """Two exits with one replayed EAS feed each (the subjects come from each line)."""
    rec = write_jsonl(tmp / "rec.jsonl", lines)
    devices = {"eas1": {"driver": "replay", "file": str(rec), "rate": rate}}
    return {"devices": devices, "exits": {"exit1": {"eas": "eas1"}, "exit2": {}}, **sections}


def alarms(n: int, exits: tuple[str, ...] = ("exit1", "exit2")) -> list[dict[str, Any]]:
    return [{"type": "eas.alarm", "subject": exits[i % len(exits)],
             "data": {"direction": "out", "level": i}} for i in range(n)]


def make(tmp: Path, broker: Broker, lines: list[dict[str, Any]], outputs: dict[str, Any],
         agents: list[AgentProcess], *, rate: float = 0, **sections: dict[str, Any]
         ) -> AgentProcess:
    parts = store(tmp, lines, rate=rate)
    cfg = agent_config(tmp, broker, parts["devices"], exits=parts["exits"], **sections)
    cfg["outputs"] = outputs
    agent = AgentProcess(tmp / "a", cfg)
    agents.append(agent)
    return agent


def status(agent: AgentProcess) -> dict[str, Any]:
    result = agent.run_cli("status", "--json")
    return json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}


def test_each_kind_receives_the_alarm_in_its_format_with_the_exit_camera(
        tmp_path, broker, subscriber, agents):
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET + b"\n")
    hook = FakeHttp(secret=SECRET)
    analytics_http = FakeHttp()
    analytics_tcp = FakeTcp(reply=b"<ok/>").start()
    generic_tcp = FakeTcp().start()
    generic_udp = FakeUdp()
    exacq = FakeTcp().start()
    lines = [*alarms(4), {"type": "door.opened", "subject": "exit1", "data": {}}]
    outputs = {
        "hook": {"kind": "webhook", "url": hook.url, "secret_file": str(secret),
                 "exits": CAMERAS},
        "xp-generic": {"kind": "milestone_generic", "host": "127.0.0.1",
                       "port": generic_tcp.port, "exits": CAMERAS,
                       "template": "SEA {type} {camera} level={data.level}"},
        "xp-udp": {"kind": "milestone_generic", "protocol": "udp", "host": "127.0.0.1",
                   "port": generic_udp.port, "exits": CAMERAS},
        "xp-analytics": {"kind": "milestone_analytics", "host": "127.0.0.1",
                         "port": analytics_http.port, "exits": CAMERAS,
                         "message": "EAS alarm"},
        "xp-analytics-tcp": {"kind": "milestone_analytics", "transport": "tcp",
                             "host": "127.0.0.1", "port": analytics_tcp.port, "exits": CAMERAS},
        "exacq": {"kind": "exacq_serial", "host": "127.0.0.1", "port": exacq.port,
                  "exits": CAMERAS, "start_marker": "SEA BEGIN", "end_marker": "SEA END"},
    }
    agent = make(tmp_path, broker, lines, outputs, agents)
    try:
        agent.start()
        wait_until(lambda: len(hook.requests) >= 4 and len(analytics_http.requests) >= 4
                   and len(generic_tcp.lines()) >= 4 and len(generic_udp.datagrams) >= 4
                   and len(analytics_tcp.connections) >= 4
                   and len(exacq_transactions(exacq.lines(), "SEA BEGIN", "SEA END")) >= 4,
                   20, "the four alarms at every output")
        mqtt = subscriber.wait_events(4, "eas.alarm")
        time.sleep(0.5)  # a door.opened would have arrived by now
        cams = [CAMERAS[a["subject"]] for a in sorted(mqtt, key=lambda e: e["seq"])]

        events = hook.events()  # each signature was checked by the fake
        assert [e["type"] for e in events] == ["eas.alarm"] * 4
        assert [e["id"] for e in events] == [e["id"] for e in sorted(mqtt, key=lambda e: e["seq"])]
        assert all(r["headers"]["Content-Type"].startswith("application/cloudevents+json")
                   for r in hook.requests)

        assert generic_tcp.lines() == [f"SEA eas.alarm {cam} level={i}"
                                       for i, cam in enumerate(cams)]
        udp = [d.decode() for d in generic_udp.datagrams]
        assert all(d.endswith("\r\n") for d in udp)
        assert [d.split(" camera=")[1].split(" seq=")[0] for d in udp] == cams

        docs = analytics_events([r["body"] for r in analytics_http.requests])
        assert [d["message"] for d in docs] == ["EAS alarm"] * 4
        assert [d["source"] for d in docs] == cams
        assert [d["id"] for d in docs] == [e["id"] for e in events]
        tcp_docs = analytics_events([bytes(c) for c in analytics_tcp.connections])
        assert [d["source"] for d in tcp_docs] == cams

        transactions = exacq_transactions(exacq.lines(), "SEA BEGIN", "SEA END")
        assert [t[1] for t in transactions] == [f"camera {cam} device eas1" for cam in cams]
        assert all(t[0].startswith("eas.alarm exit") for t in transactions)
        assert all(len(line) <= 80 for line in exacq.lines())

        state = status(agent)["outputs"]
        assert set(state) == set(outputs)
        for name, out in state.items():
            assert out["delivered"] == 4, (name, out)
            assert out["connected"] is True, (name, out)
            assert out["last_error"] is None
        human = agent.run_cli("status").stdout
        assert "outputs:" in human and "xp-generic" in human and "delivered 4" in human
    finally:
        for server in (hook, analytics_http):
            server.stop()
        for tcp in (analytics_tcp, generic_tcp, exacq):
            tcp.stop()
        generic_udp.stop()
