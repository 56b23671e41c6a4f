"""SIGHUP / `systemctl reload` with the real agent and a real broker: only what changed restarts."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import AgentProcess, Broker, Subscriber, agent_config, wait_until, write_jsonl

from agent.testing import write_config

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "store-edge-agent.service"

DOOR = {"driver": "gpio_door", "pin": "GPIO5", "held_open_after": "0"}
RELAY = {"driver": "gpio_input", "pin": "GPIO17", "pull": "up",
         "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}}}
SPARE = {"driver": "gpio_input", "pin": "GPIO22"}


def systemctl_reload(agent: AgentProcess) -> None:
    """Run the unit's ExecReload= as systemd does, with $MAINPID the agent's PID."""
    assert agent.proc is not None
    (line,) = [x for x in UNIT.read_text().splitlines() if x.startswith("ExecReload=")]
    argv = shlex.split(line.removeprefix("ExecReload=").replace("$MAINPID", str(agent.proc.pid)))
    subprocess.run(argv, check=True, timeout=10)


def reload(agent: AgentProcess, cfg: dict[str, Any], outcome: str) -> str:
    """Write ``cfg`` over the agent's file, reload, wait for ``outcome`` in the log; the log."""
    write_config(agent.config_path, cfg)
    before = agent.output().count(outcome)
    systemctl_reload(agent)
    wait_until(lambda: agent.output().count(outcome) > before, 15, f"{outcome!r} in the log")
    return agent.output()


def start(tmp: Path, agents: list[AgentProcess], cfg: dict[str, Any],
          subscriber: Subscriber) -> AgentProcess:
    agent = AgentProcess(tmp / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    subscriber.wait_events(len(cfg["devices"]), "device.online")
    return agent


def online(subscriber: Subscriber, device: str) -> int:
    return len([e for e in subscriber.events("device.online") if e["deviceid"] == device])


def status(agent: AgentProcess) -> dict[str, Any]:
    result = agent.run_cli("status", "--json")
    assert result.stdout, result.stderr
    return dict(json.loads(result.stdout))


def sim(agent: AgentProcess, device: str, command: str) -> None:
    result = agent.run_cli("sim", "gpio", device, command)
    assert result.returncode == 0, result.stderr


def test_reload_restarts_only_the_changed_devices_and_keeps_the_broker_connection(
        tmp_path, broker, subscriber, agents):
    cfg = agent_config(tmp_path, broker, {"door": DOOR, "relay": RELAY, "spare": SPARE})
    agent = start(tmp_path, agents, cfg, subscriber)
    bootid = subscriber.wait_events(1, "agent.started")[0]["bootid"]

    new = {**cfg, "devices": {"door": {**DOOR, "held_open_after": "1s"}, "relay": RELAY,
                              "added": {"driver": "gpio_input", "pin": "GPIO23"}}}
    log = reload(agent, new, "configuration reloaded")

    reloaded = subscriber.wait_events(1, "agent.config_reloaded")[0]
    check = agent.run_cli("config", "check")
    assert reloaded["data"] == {"config_hash": status(agent)["config_hash"],
                                "changed": ["added", "door", "spare"]}
    assert reloaded["data"]["config_hash"] in check.stdout
    assert reloaded["bootid"] == bootid  # the same process, not a restart
    subscriber.wait_events(1, "device.online", where=lambda e: e["deviceid"] == "added")
    wait_until(lambda: online(subscriber, "door") == 2, 10, "the door back online")
    offline = {e["deviceid"]: e["data"]["reason"] for e in subscriber.events("device.offline")}
    assert offline == {"door": "restarting with its new configuration",
                       "spare": "removed from the configuration"}
    # The changed door runs with its new table: held open after 1 s.
    sim(agent, "door", "open")
    held = subscriber.wait_events(1, "door.held_open")[0]
    assert held["data"]["open_for_s"] >= 1
    # The unchanged relay was never restarted, and still delivers.
    sim(agent, "relay", "low")
    subscriber.wait_events(1, "eas.alarm", where=lambda e: e["deviceid"] == "relay")
    subscriber.sync()
    assert online(subscriber, "relay") == 1
    # The broker connection stayed up; the removed device's retained state is gone.
    assert log.count("connected to broker") == 1
    assert subscriber.payloads("retail/t1/agent/availability") == [b"online"]
    assert status(agent)["broker"]["reconnects"] == 0
    assert subscriber.payloads("retail/t1/state/spare")[-1] == b""
    assert sorted(status(agent)["devices"]) == ["added", "door", "relay"]
    assert "Traceback" not in agent.output()


def test_a_bad_file_is_logged_like_config_check_and_changes_nothing(
        tmp_path, broker, subscriber, agents):
    cfg = agent_config(tmp_path, broker, {"door": DOOR, "relay": RELAY})
    agent = start(tmp_path, agents, cfg, subscriber)
    hash_before = status(agent)["config_hash"]

    bad = {**cfg, "devices": {"door": {**DOOR, "held_open_after": "soon"},
                              "relay": {**RELAY, "pul": "up"}}}
    log = reload(agent, bad, "configuration reload refused")

    check = agent.run_cli("config", "check")
    assert check.returncode == 2
    problems = [line.strip() for line in check.stderr.splitlines()[1:]]
    assert any("devices.door.held_open_after" in p for p in problems), problems
    assert any("devices.relay.pul: unknown key" in p for p in problems), problems
    for problem in problems:  # the same lines as `agent config check`
        assert problem in log
    assert agent.proc is not None and agent.proc.poll() is None
    assert status(agent)["config_hash"] == hash_before
    # Still running the old configuration, and delivering.
    sim(agent, "door", "open")
    subscriber.wait_events(1, "door.opened")
    sim(agent, "relay", "low")
    subscriber.wait_events(1, "eas.alarm")
    subscriber.sync()
    assert not subscriber.events("agent.config_reloaded")
    assert online(subscriber, "door") == 1 and not subscriber.events("device.offline")
    assert "Traceback" not in log


def test_a_gpio_factory_that_cannot_load_here_is_refused_like_config_check(
        tmp_path, broker, subscriber, agents):
    if importlib.util.find_spec("lgpio") is not None:
        pytest.skip("this machine has lgpio")
    cfg = agent_config(tmp_path, broker, {"door": DOOR, "relay": RELAY})
    agent = start(tmp_path, agents, cfg, subscriber)
    log = reload(agent, {**cfg, "gpio": {"pin_factory": "lgpio"}}, "configuration reload refused")
    assert "devices.door, devices.relay: GPIO pin factory 'lgpio' is not available on this " \
        "machine" in log
    assert agent.proc is not None and agent.proc.poll() is None
    sim(agent, "door", "open")  # still on the mock pins
    subscriber.wait_events(1, "door.opened")


def test_a_changed_mqtt_section_reconnects_and_the_rest_stays(tmp_path, broker, subscriber,
                                                              agents):
    cfg = agent_config(tmp_path, broker, {"door": DOOR})
    agent = start(tmp_path, agents, cfg, subscriber)
    other = Broker(tmp_path / "broker2").start()
    try:
        at_other = Subscriber(other, "retail/#")
        try:
            new = {**cfg, "mqtt": {**cfg["mqtt"], "port": other.port},
                   "buffer": {"max_bytes": "64MiB"},
                   "agent": {**cfg["agent"], "data_dir": str(tmp_path / "elsewhere")}}
            log = reload(agent, new, "configuration reloaded")

            reloaded = at_other.wait_events(1, "agent.config_reloaded")[0]
            assert reloaded["data"]["changed"] == ["agent", "mqtt", "buffer"]
            assert f"agent.data_dir changed from {cfg['agent']['data_dir']} to " \
                   f"{tmp_path / 'elsewhere'}: that needs a restart" in log
            assert not (tmp_path / "elsewhere").exists()
            # The old broker was told we left; the new one has our state and our events.
            wait_until(lambda: subscriber.payloads("retail/t1/agent/availability")[-1:]
                       == [b"offline"], 10, "offline on the old broker")
            wait_until(lambda: at_other.payloads("retail/t1/state/door"), 10,
                       "the door's state on the new broker")
            sim(agent, "door", "open")
            opened = at_other.wait_events(1, "door.opened")[0]
            assert opened["bootid"] == reloaded["bootid"]
            assert status(agent)["broker"]["host"] == f"127.0.0.1:{other.port}"
            # The door was not restarted for a broker change (an event the old broker took
            # just before may come again from the buffer: with the same id).
            at_other.sync()
            ids = {e["id"] for sub in (subscriber, at_other) for e in sub.events("device.online")}
            assert len(ids) == 1
        finally:
            at_other.close()
    finally:
        assert agent.stop() == 0
        other.stop()


def test_a_changed_schedule_is_applied_without_restarting_the_exit(
        tmp_path, broker, subscriber, agents):
    devices = {"relay": RELAY, "tag": {"driver": "gpio_output", "pin": "GPIO27",
                                       "sim_drives": "relay"}}
    exit1 = {"eas": "relay", "test_tag": "tag", "schedule": "0 6 * * *"}
    cfg = agent_config(tmp_path, broker, devices, exits={"exit1": exit1})
    agent = start(tmp_path, agents, cfg, subscriber)
    assert status(agent)["selftest_schedule"]["exit1"]["schedule"] == "0 6 * * *"

    new = {**cfg, "exits": {"exit1": {**exit1, "schedule": "30 7 * * *"}}}
    reload(agent, new, "configuration reloaded")

    assert subscriber.wait_events(1, "agent.config_reloaded")[0]["data"]["changed"] == \
        ["exits.exit1"]
    schedule = status(agent)["selftest_schedule"]["exit1"]
    assert schedule["schedule"] == "30 7 * * *"
    assert "T07:30:00" in schedule["next"]
    subscriber.sync()
    assert online(subscriber, "relay") == online(subscriber, "tag") == 1


def test_a_smaller_buffer_applies_at_once(tmp_path, broker, subscriber, agents):
    feed = write_jsonl(tmp_path / "feed.jsonl", [{"type": "door.opened"}] * 20)
    cfg = agent_config(tmp_path, broker, {"feed": {"driver": "replay", "file": str(feed),
                                                   "rate": 0, "start_delay": "2s"}})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    broker.stop()  # before the feed starts: its events stay in the buffer
    before = wait_until(lambda: (s := status(agent)["buffer"])["depth"] >= 20 and s, 10,
                        "20 events buffered")
    assert not before["dropped"] and before["bytes"] > 4 * 1024

    log = reload(agent, {**cfg, "buffer": {"max_bytes": "1KiB"}}, "configuration reloaded")

    assert "configuration reloaded (hash" in log and ": buffer;" in log
    buffered = wait_until(lambda: (s := status(agent)["buffer"])["dropped"] and s, 10,
                          "the buffer to drop down to its new size")
    assert buffered["dropped"]["buffer_full"] > 0
    # (what it holds now, and the report of what it dropped, are about 1 KiB)
    assert buffered["bytes"] < 2 * 1024 and buffered["depth"] < before["depth"]
