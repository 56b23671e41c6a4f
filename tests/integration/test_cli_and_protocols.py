"""The CLI around the pipeline (tail, schema, status) and the broker protocols and certificates."""

from __future__ import annotations

import json
import subprocess

import pytest
from support import AGENT_BIN, AgentProcess, Broker, Subscriber, agent_config, wait_until, write_jsonl


def replay(tmp, events, **kw):
    rec = write_jsonl(tmp / "rec.jsonl", events)
    return {"r1": {"driver": "replay", "file": str(rec), **kw}}


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_both_mqtt_protocols_deliver(tmp_path, broker, subscriber, agents, protocol):
    cfg = agent_config(tmp_path, broker, replay(tmp_path, [{"type": "door.opened"}] * 5),
                       mqtt={"protocol": protocol})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start()
    subscriber.wait_events(5, "door.opened")
    agent.stop()


def test_tail_prints_one_readable_line_per_event(tmp_path, broker, agents):
    cfg = agent_config(tmp_path, broker, replay(
        tmp_path, [{"type": "eas.alarm", "data": {"direction": "out", "level": 3}, "delay": 1.0}]))
    cfg["exits"] = {"exit1": {"eas": "r1"}}
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    tail = subprocess.Popen([AGENT_BIN, "--config", str(agent.config_path), "tail", "-n", "3",
                             "--timeout", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_until(lambda: True, 0.5)
    agent.start()
    out, err = tail.communicate(timeout=30)
    agent.stop()
    assert tail.returncode == 0, err
    lines = [line for line in out.splitlines() if "#" in line]
    alarm = next(line for line in lines if "eas.alarm" in line)
    assert "r1" in alarm and "direction=out" in alarm and "level=3" in alarm and "[exit1]" in alarm


def test_schema_is_json_with_every_type(tmp_path):
    out = subprocess.run([AGENT_BIN, "schema"], capture_output=True, text=True, check=True).stdout
    schema = json.loads(out)
    assert {"eas.alarm", "door.forced", "selftest.step", "agent.events_dropped"} <= set(
        schema["data"])
    assert schema["envelope"]["properties"]["seq"]["minimum"] == 1


def test_status_of_a_running_agent_and_exit_3_when_not_running(tmp_path, broker, agents):
    agent = AgentProcess(tmp_path / "a", agent_config(
        tmp_path, broker, replay(tmp_path, [{"type": "door.opened"}], loop=True, rate=2)))
    agents.append(agent)
    agent.start(wait_connected=True)
    result = agent.run_cli("status")
    assert result.returncode == 0, result.stderr
    assert "store t1" in result.stdout and "connected" in result.stdout
    assert "r1" in result.stdout and "replay" in result.stdout and "online" in result.stdout
    as_json = json.loads(agent.run_cli("status", "--json").stdout)
    assert as_json["devices"]["r1"]["online"] is True
    agent.stop()
    result = agent.run_cli("status")
    assert result.returncode == 3
    assert "not running" in result.stderr


def test_client_certificate_is_required_and_used(tmp_path, agents):
    from support import make_tls

    tls = make_tls(tmp_path / "tls", client=True)
    broker = Broker(tmp_path / "broker", tls={**tls, "require_certificate": True}).start()
    try:
        sub = Subscriber(broker, "retail/#", tls_ca=tls["ca"], client_cert=(
            tls["client_cert"], tls["client_key"]))
        cfg = agent_config(tmp_path, broker, replay(tmp_path, [{"type": "door.opened"}]),
                           mqtt={"tls": True, "ca_file": str(tls["ca"])})
        without = AgentProcess(tmp_path / "no-cert", cfg)
        agents.append(without)
        without.start()
        wait_until(lambda: "require a TLS client certificate" in without.output(), 15,
                   "a refused TLS connection, with a hint")
        without.kill()
        assert not sub.events("door.opened")

        cfg["mqtt"].update(cert_file=str(tls["client_cert"]), key_file=str(tls["client_key"]))
        cfg["agent"]["data_dir"] = str(tmp_path / "data2")
        with_cert = AgentProcess(tmp_path / "cert", cfg)
        agents.append(with_cert)
        with_cert.start()
        sub.wait_events(1, "door.opened")
        with_cert.stop()
        sub.close()
    finally:
        broker.stop()
