"""The CLI around the pipeline (tail, schema, status) and the broker protocols and certificates."""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support import (
    AGENT_BIN,
    AgentProcess,
    Broker,
    Subscriber,
    agent_config,
    free_port,
    wait_until,
    write_jsonl,
)


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
    assert "listening on" in tail.stderr.readline()  # subscribed: it misses nothing from here
    agent.start()
    out, err = tail.communicate(timeout=30)
    agent.stop()
    assert tail.returncode == 0, err
    lines = [line for line in out.splitlines() if "#" in line]
    alarm = next(line for line in lines if "eas.alarm" in line)
    assert "r1" in alarm and "direction=out" in alarm and "level=3" in alarm and "[exit1]" in alarm


def test_tail_raw_is_json_lines_with_retained_payloads_whole(tmp_path, broker, agents):
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, replay(
        tmp_path, [{"type": "door.opened", "delay": 0.5}], loop=True, rate=2)))
    agents.append(agent)
    agent.start(wait_connected=True)
    wait_until(lambda: agent.run_cli("status").returncode == 0, 10, "the agent healthy")
    result = agent.run_cli("tail", "--raw", "-n", "2", "--timeout", "20")
    agent.stop()
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    status = next(m for m in messages if m["topic"] == "retail/t1/agent/status")
    assert status["retained"] is True and status["payload"]["storeid"] == "t1"
    assert len(json.dumps(status["payload"])) > 200  # whole, not cut at 200 characters
    events = [m for m in messages if "/events/" in m["topic"]]
    assert len(events) == 2 and all(m["payload"]["type"] == "door.opened" for m in events)
    plain = agent.run_cli("tail", "--timeout", "2")  # the retained messages arrive at once
    assert "state of" not in plain.stdout and "agent status updated" not in plain.stdout


def test_schema_is_json_with_every_type(tmp_path):
    out = subprocess.run([AGENT_BIN, "schema"], capture_output=True, text=True, check=True).stdout
    schema = json.loads(out)
    assert {"eas.alarm", "door.forced", "selftest.step", "agent.events_dropped"} <= set(
        schema["$defs"])
    assert schema["properties"]["seq"]["minimum"] == 1


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


def _as_someone_who_cannot_read(path: Path) -> list[str]:
    """chmod 000 ``path``; the command prefix that runs as a user it stops (root reads anyway)."""
    path.chmod(0)
    if os.geteuid() != 0:
        return []
    why = "running as root, where chmod 000 does not stop reads, "
    if shutil.which("setpriv") is None:
        pytest.skip(why + "and setpriv is not there to run the command as nobody")
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    if subprocess.run([*prefix, AGENT_BIN, "--version"], capture_output=True).returncode != 0:
        pytest.skip(why + "and nobody:nogroup cannot run the agent command")
    return prefix


def test_status_and_sim_use_the_control_socket_when_the_config_is_unreadable(tmp_path, broker,
                                                                             agents):
    # The socket in a runtime directory whose group it takes (setgid), as the service's group
    # under systemd: a store technician in that group reaches it but may not read the config.
    with tempfile.TemporaryDirectory() as run_dir:
        sock = Path(run_dir) / "control.sock"
        os.chmod(run_dir, 0o2755)
        if os.geteuid() == 0:
            os.chown(run_dir, -1, grp.getgrnam("nogroup").gr_gid)
        cfg = agent_config(tmp_path, broker, {"relay": {"driver": "gpio_input", "pin": "GPIO17"}})
        cfg["agent"]["control_socket"] = str(sock)
        agent = AgentProcess(tmp_path / "a", cfg)
        agents.append(agent)
        agent.start(wait_connected=True)
        prefix = _as_someone_who_cannot_read(agent.config_path)

        def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*prefix, AGENT_BIN, "--config", str(agent.config_path), *args],
                                  capture_output=True, text=True, timeout=30,
                                  env={**os.environ, **env})

        override = {"AGENT_AGENT__CONTROL_SOCKET": str(sock)}
        status = run("status", **override)
        assert status.returncode == 0, status.stderr
        assert "store t1" in status.stdout and "relay" in status.stdout
        assert status.stderr == (f"agent status: cannot read {agent.config_path} (permission "
                                 f"denied); using $AGENT_AGENT__CONTROL_SOCKET control socket "
                                 f"{sock}\n")
        result = run("sim", "gpio", "relay", "high", **override)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["level"] == "high"
        assert result.stderr.startswith("agent sim: cannot read") and result.stderr.count("\n") == 1
        result = run("selftest", **override)  # the service answers: it has no exits
        assert result.returncode == 2, result.stderr
        assert "agent selftest: no exits are configured" in result.stderr
        # without the override: the default socket, where no agent runs here
        for args in (["status"], ["sim", "gpio", "relay", "high"], ["selftest"]):
            result = run(*args)
            assert result.returncode == 3, result.stderr
            assert "using the default control socket /run/store-edge-agent/control.sock" in (
                result.stderr)
            assert "configuration error" not in result.stderr
        assert "this user cannot run the self-test in-process" in result.stderr
        agent.stop()


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


def test_debug_log_tells_support_what_happens_and_never_a_secret(tmp_path, broker, agents):
    secret = "s3cr3t-Pa55word"
    (tmp_path / "mqtt.pass").write_text(secret + "\n")
    cfg = agent_config(tmp_path, broker, {"plc": {
        "driver": "modbus", "host": "127.0.0.1", "tcp_port": free_port(), "timeout": "200ms",
        "retries": 0, "reconnect_min": "100ms", "reconnect_max": "200ms",
        "registers": [{"name": "alarms", "table": "input", "address": 0,
                       "on_increment": {"type": "eas.alarm", "data": {"direction": "out"}}}]}})
    cfg["agent"]["log_level"] = "debug"
    cfg["mqtt"].update(username="store", password_file=str(tmp_path / "mqtt.pass"))
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    agent.run_cli("sim", "gpio", "nosuch", "on")  # a refused control request
    assert agent.run_cli("status").returncode == 1  # the controller is down
    wait_until(lambda: agent.output().count("DEBUG drivers.modbus: still offline") >= 2, 10,
               "retries in the debug log")
    assert agent.stop() == 0
    log = agent.output()
    assert "DEBUG drivers.modbus: connecting to 127.0.0.1:" in log  # each attempt
    assert "WARNING drivers.modbus: offline: cannot connect to 127.0.0.1:" in log  # once
    assert "DEBUG agent.control: control request status" in log
    assert "DEBUG agent.control: control request status answered ok in" in log
    assert "DEBUG agent.control: control request refused: no device 'nosuch'" in log
    assert f"DEBUG agent.publisher: connecting to broker 127.0.0.1:{broker.port} (MQTT 5, " \
           "TLS off, user 'store')" in log
    assert "DEBUG agent.publisher: broker 127.0.0.1:" in log and "answered the CONNECT" in log
    assert secret not in log
