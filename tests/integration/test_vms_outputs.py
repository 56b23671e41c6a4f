"""VMS and webhook outputs with a real agent, a real mosquitto and fake VMS servers on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import AgentProcess, Broker, agent_config, metrics_port, wait_until, write_jsonl
from test_contract import PROMTOOL
from test_storage_faults import fill, small_disk  # noqa: F401 (a fixture)
from vms_fakes import FakeHttp, FakeTcp, FakeUdp, analytics_events, exacq_transactions

from agent.asyncapi import Status
from agent.testing import write_config

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

        whole = status(agent)
        Status.model_validate(whole)  # as the AsyncAPI document describes agent/status
        state = whole["outputs"]
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


def test_target_down_during_a_burst_gets_every_alarm_afterwards_in_order_mqtt_undelayed(
        tmp_path, broker, subscriber, agents):
    vms = FakeTcp()  # its port is closed until start(): connection refused
    outputs = {"vms": {"kind": "milestone_generic", "host": "127.0.0.1", "port": vms.port,
                       "exits": CAMERAS, "retry_max": "1s", "template": "SEA {seq} {camera}"}}
    agent = make(tmp_path, broker, alarms(100), outputs, agents, rate=100)
    try:
        agent.start()
        start = time.monotonic()
        mqtt = subscriber.wait_events(100, "eas.alarm", timeout=10)
        took = time.monotonic() - start
        state = status(agent)["outputs"]["vms"]
        assert state["delivered"] == 0 and state["connected"] is False
        assert state["lag_events"] >= 100, state
        assert "refused" in (state["last_error"] or "").lower(), state
        # 100 alarms at 100/s: the broker had them as they came, not after the VMS timed out
        assert took < 5, f"MQTT took {took:.1f} s for a 1 s burst while the VMS was down"
        assert "output vms (milestone_generic): seq" in agent.output()

        vms.start()
        wait_until(lambda: len(vms.lines()) >= 100, 15, "the burst at the VMS after it is back")
        got = [int(line.split()[1]) for line in vms.lines()]
        want = sorted(e["seq"] for e in mqtt)
        assert got == want, "every alarm, once, in seq order"
        wait_until(lambda: status(agent)["outputs"]["vms"]["lag_events"] == 0, 10, "no lag")
        assert "output vms (milestone_generic) delivers again" in agent.output()
    finally:
        vms.stop()


def test_kill_9_while_an_output_lags_loses_nothing_and_keeps_order(
        tmp_path, broker, subscriber, agents):
    vms = FakeTcp()
    outputs = {"vms": {"kind": "exacq_serial", "host": "127.0.0.1", "port": vms.port,
                       "retry_max": "1s", "template": "{seq}"}}
    agent = make(tmp_path, broker, alarms(60), outputs, agents, rate=200)
    try:
        agent.start()
        mqtt = subscriber.wait_events(60, "eas.alarm", timeout=10)
        time.sleep(4.5)  # the broker's acks are committed (every 3 s): the events stay only for the output
        agent.kill()
        vms.start()
        cfg = tomllib.loads(agent.config_path.read_text())
        cfg["devices"] = {}  # the replay would start over: only what was buffered is sent
        cfg["exits"]["exit1"] = {}
        write_config(agent.config_path, cfg)
        agent.start()
        want = sorted(e["seq"] for e in mqtt)
        wait_until(lambda: len(exacq_transactions(vms.lines(), "SEA BEGIN", "SEA END")) >= 60,
                   15, "the alarms at the VMS after the restart")
        got = [int(t[0]) for t in exacq_transactions(vms.lines(), "SEA BEGIN", "SEA END")]
        assert got == want, "nothing lost, nothing repeated, in seq order"
        agent.stop()
        assert len(subscriber.events("eas.alarm")) == 60, "the broker's acked events were not sent again"
    finally:
        vms.stop()


def test_webhook_signature_checked_wrong_secret_fails_visibly_and_outputs_test(
        tmp_path, broker, agents):
    good, bad = tmp_path / "good.secret", tmp_path / "bad.secret"
    good.write_bytes(SECRET + b"\n")
    bad.write_bytes(b"not-the-key\n")
    hook = FakeHttp(secret=SECRET)
    outputs = {
        "wrong": {"kind": "webhook", "url": hook.url, "secret_file": str(bad),
                  "retry_max": "1s"},
        "right": {"kind": "webhook", "url": hook.url, "secret_file": str(good),
                  "exits": CAMERAS, "types": ["eas.alarm"]},
    }
    agent = make(tmp_path, broker, alarms(2), outputs, agents)
    try:
        agent.start()
        wait_until(lambda: len(hook.requests) >= 2, 10, "the right output's two alarms")
        wait_until(lambda: "401" in (status(agent).get("outputs", {}).get("wrong", {})
                                     .get("last_error") or ""), 10, "the refusal in the status")
        human = agent.run_cli("status")
        assert "wrong" in human.stdout and "FAILING" in human.stdout and "401" in human.stdout
        assert human.returncode == 1, "a failing output makes the status unhealthy"
        assert "attention: output wrong failing" in human.stdout
        assert "output wrong (webhook): seq" in agent.output() and "401" in agent.output()

        refused = agent.run_cli("outputs", "test", "wrong")
        assert refused.returncode == 1, refused
        assert "NOT DELIVERED" in refused.stdout and "HTTP 401" in refused.stdout

        before = len(hook.requests)
        ok = agent.run_cli("outputs", "test", "right")
        assert ok.returncode == 0, ok
        assert "DELIVERED" in ok.stdout and "HTTP 200 OK: ok" in ok.stdout
        assert "Cam Exit 1 (front)" in ok.stdout
        test_event = hook.events()[before]
        assert test_event["test"] is True and test_event["testlabel"] == "TEST"

        unknown = agent.run_cli("outputs", "test", "nope")
        assert unknown.returncode == 2 and "no output 'nope'" in unknown.stderr
        assert SECRET.decode() not in agent.output() and "not-the-key" not in agent.output()
    finally:
        hook.stop()


def test_output_down_for_good_under_the_capacity_policy_is_announced_mqtt_unaffected(
        tmp_path, broker, subscriber, agents):
    vms = FakeTcp()  # never started
    outputs = {"vms": {"kind": "milestone_generic", "host": "127.0.0.1", "port": vms.port,
                       "retry_max": "1s"}}
    agent = make(tmp_path, broker, alarms(400), outputs, agents, rate=200,
                 buffer={"max_bytes": "40kB"}, metrics={"listen": "127.0.0.1:0"})
    agent.start()
    mqtt = subscriber.wait_events(400, "eas.alarm", timeout=20)
    assert sorted(e["seq"] for e in mqtt) == sorted({e["seq"] for e in mqtt}), "no duplicates"
    wait_until(lambda: status(agent)["outputs"]["vms"]["dropped"] > 0, 10, "the output's loss")
    state = status(agent)["outputs"]["vms"]
    drop = state["last_drop"]
    assert drop["reason"] == "buffer_full" and drop["count"] == state["dropped"]
    log = agent.output()
    first = re.search(r"output vms \(milestone_generic\): (\d+) events it had not delivered "
                      r"were dropped from the buffer \(seq (\d+)\.\.(\d+), buffer_full\)", log)
    assert first, "the loss is announced for the output, with its seq range"
    assert int(first.group(2)) == drop["first_seq"] <= int(first.group(3)) <= drop["last_seq"]
    assert 0 < int(first.group(1)) <= state["dropped"]
    # The broker's own reports name only what it never had (near capacity the acks go with
    # every commit; one acknowledged between two commits may still be named).
    reports = subscriber.events("agent.events_dropped")
    assert all(r["data"]["reason"] == "buffer_full" for r in reports)
    named = sum(r["data"]["count"] for r in reports)
    assert named < state["dropped"] / 2, (named, state["dropped"])
    port = metrics_port(log)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    line = next(x for x in text.splitlines()
                if x.startswith('store_edge_agent_output_dropped_total{kind="milestone_generic",output="vms"}'))
    assert float(line.split()[-1]) == state["dropped"]
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, check=False)
    assert lint.returncode == 0 and lint.stdout + lint.stderr == "", lint.stdout + lint.stderr
    assert agent.stop() == 0


@pytest.mark.slow
def test_a_disk_full_of_events_owed_to_a_down_vms_is_freed_when_it_catches_up(
        tmp_path, small_disk, broker, subscriber, agents):  # noqa: F811 (the fixture)
    vms = FakeTcp()
    outputs = {"vms": {"kind": "exacq_serial", "host": "127.0.0.1", "port": vms.port,
                       "template": "{seq}", "retry_max": "1s"}}
    agent = make(tmp_path, broker, alarms(12_000, ("exit1",)), outputs, agents, rate=1500,
                 buffer={"reserve": "1MiB", "hold_max": 3000})
    cfg = tomllib.loads(agent.config_path.read_text())
    cfg["agent"]["data_dir"] = str(small_disk / "data")
    write_config(agent.config_path, cfg)
    fill(small_disk, 4 * 1024**2)
    try:
        agent.start()
        # the broker takes every event, but they stay for the VMS: the disk fills up
        wait_until(lambda: "cannot be written: the disk is full" in agent.output(), 60,
                   "the disk to fill up with events owed to the VMS")
        wait_until(lambda: "driver finished" in agent.output(), 60, "the replay to finish")
        resumed = "can be written again: the events held in memory are committed"
        assert resumed not in agent.output()
        vms.start()
        wait_until(lambda: resumed in agent.output(), 60,
                   "the VMS's progress to free the disk")

        def vms_seqs() -> list[int]:
            return [int(t[0]) for t in exacq_transactions(vms.lines(), "SEA BEGIN", "SEA END")]

        def caught_up() -> bool:
            mqtt = {e["seq"] for e in subscriber.events("eas.alarm")}
            return bool(mqtt) and set(vms_seqs()) >= mqtt

        wait_until(caught_up, 90, "every alarm the broker got at the VMS too")
        assert agent.stop() == 0
        subscriber.sync()
        mqtt = subscriber.events("eas.alarm")
        got = vms_seqs()
        assert got == sorted(set(got)), "each once, in seq order"
        # Every alarm the broker got, the VMS got too. The VMS may be ahead: what the broker
        # had not acknowledged when the agent stopped stays buffered for the next start.
        assert set(got) >= {e["seq"] for e in mqtt}
        assert "Traceback" not in agent.output()
    finally:
        vms.stop()
