"""Fleet behaviour: failover between brokers, credential rotation, per-store ACLs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import (
    AgentProcess,
    Broker,
    Subscriber,
    agent_config,
    issue_client_cert,
    make_tls,
    metrics_port,
    start_failover_agent,
    wait_until,
    write_jsonl,
)


def replay_device(tmp: Path, count: int, rate: float) -> dict[str, Any]:
    rec = write_jsonl(tmp / "rec.jsonl", [
        {"type": "eas.alarm", "data": {"direction": "out", "level": 2}},
        {"type": "door.opened", "data": {}},
    ])
    return {"replay1": {"driver": "replay", "file": str(rec), "rate": rate, "loop": True,
                        "count": count}}


def replayed_seqs(*subs: Subscriber) -> list[int]:
    """Every replayed event's seq seen by any of ``subs``, duplicates removed, sorted."""
    return sorted({e["seq"] for s in subs for e in s.events()
                   if e["deviceid"] == "replay1" and not e["type"].startswith("device.")})


def all_seqs(*subs: Subscriber) -> list[int]:
    return sorted({e["seq"] for s in subs for e in s.events()})


def stop_and_check_no_gap(agent: AgentProcess, sub: Subscriber, count: int) -> None:
    """Wait for ``count`` replayed events, stop the agent; every seq arrived, none skipped."""
    wait_until(lambda: len(replayed_seqs(sub)) >= count, 30, f"all {count} events")
    assert agent.stop() == 0
    sub.sync()
    seqs = all_seqs(sub)
    assert seqs == list(range(1, max(seqs) + 1)), "a seq is missing"


def status_of(agent: AgentProcess) -> dict[str, Any]:
    result = agent.run_cli("status", "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def ask_status(broker: Broker, request_id: str) -> dict[str, Any]:
    """A remote `status` request on ``broker``; the agent's response."""
    requester = Subscriber(broker, "retail/t1/agent/response/#")
    try:
        def answered() -> dict[str, Any] | None:
            requester.client.publish("retail/t1/agent/request/status",
                                     json.dumps({"id": request_id}), qos=1)
            replies = [json.loads(p) for p in requester.payloads(
                "retail/t1/agent/response/status")]
            return next((r for r in replies if r["id"] == request_id), None)

        return wait_until(answered, 15, f"a response to {request_id}", interval=1.0)
    finally:
        requester.close()


@pytest.fixture
def two_brokers(tmp_path: Path):
    b1 = Broker(tmp_path / "b1").start()
    b2 = Broker(tmp_path / "b2").start()
    yield b1, b2
    b1.stop()
    b2.stop()


def test_failover_to_the_next_broker_and_back_only_when_the_connection_drops(
        tmp_path, two_brokers, agents):
    b1, b2 = two_brokers
    sub1, sub2 = Subscriber(b1, "retail/#"), Subscriber(b2, "retail/#")
    try:
        agent = start_failover_agent(tmp_path, [b1, b2], replay_device(tmp_path, 3000, rate=200),
                                     agents, metrics={"listen": "127.0.0.1:0"})
        wait_until(lambda: len(replayed_seqs(sub1)) >= 300, 20, "events on the preferred broker")

        b1.stop()  # the broker in use goes away mid-stream
        wait_until(lambda: f"connected to broker 127.0.0.1:{b2.port}" in agent.output(), 15,
                   "failover to the second broker")
        status = status_of(agent)
        assert status["broker"]["host"] == f"127.0.0.1:{b2.port}"
        assert status["broker"]["brokers"] == [f"127.0.0.1:{b.port}" for b in (b1, b2)]
        assert f"failed over: on 127.0.0.1:{b2.port}" in agent.run_cli("status").stdout
        port = metrics_port(agent.output())
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert f'store_edge_agent_broker_info{{broker="127.0.0.1:{b2.port}",position="2"}} 1.0' \
            in text
        # requests are subscribed again on the new broker
        assert ask_status(b2, "after-failover")["status"] == "ok"

        # The preferred broker is back: a healthy connection is not torn down for it.
        b1.start()
        sub1b = Subscriber(b1, "retail/#")
        time.sleep(4)
        assert status_of(agent)["broker"]["host"] == f"127.0.0.1:{b2.port}"
        wait_until(lambda: len(replayed_seqs(sub1, sub2)) >= 3000, 40, "all 3000 events")

        # ... but when that connection drops, the agent goes back to the preferred one.
        b2.stop()
        wait_until(lambda: agent.output().count(f"connected to broker 127.0.0.1:{b1.port}") >= 2,
                   15, "back to the preferred broker")
        assert agent.stop() == 0
        sub1b.sync()
        seqs = all_seqs(sub1, sub2, sub1b)
        assert seqs == list(range(1, max(seqs) + 1)), "a seq is missing across the failovers"
        assert len(replayed_seqs(sub1, sub2, sub1b)) == 3000
    finally:
        for s in (sub1, sub2):
            s.close()


def test_new_client_certificate_on_disk_is_used_without_a_restart_or_a_loss(tmp_path, agents):
    tls = make_tls(tmp_path / "tls", client=True)  # the client certificate expires in 2 days
    broker = Broker(tmp_path / "broker", tls={**tls, "require_certificate": True}).start()
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    shutil.copy(tls["client_cert"], cert)
    shutil.copy(tls["client_key"], key)
    sub = Subscriber(broker, "retail/#", tls_ca=tls["ca"],
                     client_cert=(tls["client_cert"], tls["client_key"]))
    cfg = agent_config(tmp_path, broker, replay_device(tmp_path, 1500, rate=150),
                       mqtt={"tls": True, "ca_file": str(tls["ca"]), "cert_file": str(cert),
                             "key_file": str(key)})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    try:
        agent.start(wait_connected=True)
        assert f"the client certificate {cert} expires in 2 days" in agent.output()
        assert 1.9 < status_of(agent)["broker"]["cert_days_left"] <= 2
        assert "client certificate: 2 days left (EXPIRES SOON" in agent.run_cli("status").stdout
        wait_until(lambda: len(replayed_seqs(sub)) >= 200, 20, "events before the rotation")

        # what a certificate manager does: write the new pair beside, rename over the old one
        new_cert, new_key = issue_client_cert(tmp_path / "tls", "renewed", days=400)
        os.replace(new_key, key)
        os.replace(new_cert, cert)
        wait_until(lambda: "credential files changed" in agent.output(), 10,
                   "the agent to notice the new files")
        wait_until(lambda: (status_of(agent)["broker"]["cert_days_left"] or 0) > 399, 10,
                   "the renewed certificate in use")
        stop_and_check_no_gap(agent, sub, 1500)
        assert "retrying" not in agent.output(), "the rotation must not look like a failure"
    finally:
        sub.close()
        broker.stop()


def test_new_password_file_is_used_within_seconds(tmp_path, agents):
    broker = Broker(tmp_path / "broker", password={"store-t1": "old-secret",
                                                   "dashboard": "d"}).start()
    pwfile = tmp_path / "mqtt-password"
    pwfile.write_text("old-secret\n")
    sub = Subscriber(broker, "retail/#", username="dashboard", password="d")
    cfg = agent_config(tmp_path, broker, replay_device(tmp_path, 1000, rate=100),
                       mqtt={"username": "store-t1", "password_file": str(pwfile)})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    try:
        agent.start(wait_connected=True)
        wait_until(lambda: len(replayed_seqs(sub)) >= 100, 20, "events before the rotation")
        # the broker learns the new password first (existing sessions stay), then the store
        subprocess.run(["mosquitto_passwd", "-b", str(broker.dir / "passwd"), "store-t1",
                        "new-secret"], check=True)
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        tmp = tmp_path / "mqtt-password.new"
        tmp.write_text("new-secret\n")
        os.replace(tmp, pwfile)
        wait_until(lambda: agent.output().count("connected to broker") >= 2, 10,
                   "a reconnection with the new password")
        stop_and_check_no_gap(agent, sub, 1000)
        out = agent.output()
        assert "refused the credentials" not in out
        assert "new-secret" not in out and "old-secret" not in out
    finally:
        sub.close()
        broker.stop()


STORE_ACL = """\
# each store's username is its store_id: it may publish only under its own subtree and read
# only its requests (and its own availability, which MQTT 3.1.1 agents read back)
pattern write retail/%u/#
pattern read retail/%u/agent/request/+
pattern read retail/%u/agent/availability
user dashboard
topic readwrite retail/#
"""


@pytest.fixture
def acl_broker(tmp_path: Path):
    broker = Broker(tmp_path / "broker", acl=STORE_ACL,
                    password={"t1": "s1", "t2": "s2", "dashboard": "d"}).start()
    (tmp_path / "pw-t1").write_text("s1\n")
    yield broker
    broker.stop()


def store_agent(tmp_path: Path, broker: Broker, store_id: str, protocol: str) -> AgentProcess:
    """An agent logged in as user t1 that believes it is ``store_id``."""
    cfg = agent_config(tmp_path, broker, replay_device(tmp_path, 20, rate=50),
                       mqtt={"username": "t1", "password_file": str(tmp_path / "pw-t1"),
                             "protocol": protocol, "auth_retry": "3s"})
    cfg["agent"]["store_id"] = store_id
    return AgentProcess(tmp_path / f"agent-{store_id}-{protocol}", cfg)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_agent_works_under_the_per_store_acl(tmp_path, acl_broker, agents, protocol):
    sub = Subscriber(acl_broker, "retail/#", username="dashboard", password="d")
    agent = store_agent(tmp_path, acl_broker, "t1", protocol)
    agents.append(agent)
    try:
        agent.start(wait_connected=True)
        wait_until(lambda: len(replayed_seqs(sub)) >= 20, 20, "the store's events")
        reply = json.loads(sub.payloads("retail/t1/agent/status")[-1])
        assert reply["storeid"] == "t1"
        if protocol == "3.1.1":
            time.sleep(11)  # past the echo check: no false alarm
        assert status_of(agent)["broker"]["refusal"] is None
        stop_and_check_no_gap(agent, sub, 20)
        assert "refused" not in agent.output() and "did not echo" not in agent.output()
    finally:
        sub.close()


def test_another_stores_id_is_refused_and_said_in_plain_words_mqtt5(tmp_path, acl_broker, agents):
    sub = Subscriber(acl_broker, "retail/#", username="dashboard", password="d")
    agent = store_agent(tmp_path, acl_broker, "t2", "5")  # user t1, store_id t2: a copied config
    agents.append(agent)
    try:
        agent.start()
        expected = ("refused to take seq 1 on retail/t2/events/agent/agent.started: Not "
                    "authorized (reason code 135). Its access control does not let user 't1' "
                    "publish there: check agent.store_id")
        wait_until(lambda: expected in agent.output(), 15, "the refusal in the log")
        wait_until(lambda: expected in (status_of(agent)["broker"]["refusal"] or ""), 10,
                   "the refusal in agent status")
        assert "REFUSED: broker" in agent.run_cli("status").stdout
        # kept, not lost: the agent tries again after auth_retry, the events stay buffered
        wait_until(lambda: agent.output().count(expected) >= 2, 15, "a later attempt")
        assert status_of(agent)["buffer"]["depth"] >= 20
        assert not sub.events()
    finally:
        sub.close()


def test_another_stores_id_is_detected_by_the_missing_echo_mqtt311(tmp_path, acl_broker, agents):
    agent = store_agent(tmp_path, acl_broker, "t2", "3.1.1")
    agents.append(agent)
    agent.start(wait_connected=True)
    expected = "did not echo this agent's 'online' on retail/t2/agent/availability within 10 s"
    wait_until(lambda: expected in agent.output(), 20, "the missing echo in the log")
    assert "events may be lost at the broker" in status_of(agent)["broker"]["refusal"]
