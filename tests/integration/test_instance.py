"""One agent per data_dir: a second `agent run` and an in-process `agent selftest` are refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support import AGENT_BIN, AgentProcess, Subscriber, agent_config, wait_until

from agent.testing import write_config

DOOR = {"door": {"driver": "gpio_door", "pin": "GPIO5", "held_open_after": "0"}}
EXIT1 = {
    "exit1-eas": {"driver": "gpio_input", "pin": "GPIO17", "pull": "up",
                  "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}}},
    "exit1-testtag": {"driver": "gpio_output", "pin": "GPIO27", "pulse": "500ms",
                      "sim_drives": "exit1-eas"},
}


def door_opens(agent: AgentProcess, subscriber: Subscriber, count: int) -> None:
    """The running agent still turns a door opening into an event at the broker."""
    result = agent.run_cli("sim", "gpio", "door", "open")
    assert result.returncode == 0, result.stderr
    subscriber.wait_events(count, "door.opened")
    assert agent.run_cli("sim", "gpio", "door", "close").returncode == 0


def test_a_second_agent_run_on_the_same_data_dir_exits_2_naming_it_and_the_pid(
        tmp_path, broker, subscriber, agents):
    cfg = agent_config(tmp_path, broker, DOOR)
    first = AgentProcess(tmp_path / "a", cfg)
    agents.append(first)
    first.start(wait_connected=True)
    assert first.proc is not None
    door_opens(first, subscriber, 1)

    second = first.run_cli("run", timeout=20)

    assert second.returncode == 2, second.stdout + second.stderr
    data_dir = cfg["agent"]["data_dir"]
    assert f"data_dir {data_dir} is in use by PID {first.proc.pid} (agent run)" in second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    # The first one was not disturbed: same broker connection, its socket, its buffer.
    door_opens(first, subscriber, 2)
    assert first.output().count("connected to broker") == 1
    assert "disconnected" not in first.output()
    assert json.loads(first.run_cli("status", "--json").stdout)["broker"]["connected"]
    assert first.stop() == 0
    assert len(subscriber.events("agent.started")) == 1


def test_a_killed_agent_leaves_no_lock_behind(tmp_path, broker, subscriber, agents):
    cfg = agent_config(tmp_path, broker, DOOR)
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    agent.kill()
    assert (Path(cfg["agent"]["data_dir"]) / "agent.lock").exists()

    agent.start(wait_connected=True)  # the kernel released the lock with the process
    door_opens(agent, subscriber, 1)
    assert agent.stop() == 0


def test_in_process_selftest_refuses_a_data_dir_held_by_an_unreachable_agent(
        tmp_path, broker, subscriber, agents):
    cfg = agent_config(tmp_path, broker, EXIT1,
                       exits={"exit1": {"eas": "exit1-eas", "test_tag": "exit1-testtag"}})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    assert agent.proc is not None
    # The technician's config names another control socket: nothing answers there.
    elsewhere = tmp_path / "elsewhere.sock"
    other = write_config(tmp_path / "other.toml", {
        **cfg, "agent": {**cfg["agent"], "control_socket": str(elsewhere)}})

    result = subprocess.run([AGENT_BIN, "--config", str(other), "selftest"],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 3, result.stdout + result.stderr
    data_dir = cfg["agent"]["data_dir"]
    assert f"data_dir {data_dir} is in use by PID {agent.proc.pid} (agent run)" in result.stderr
    assert f"; its control socket cannot be reached: the agent is not running (no control " \
           f"socket at {elsewhere})" in result.stderr
    assert "Not running the self-test in-process" in result.stderr
    assert "no agent service is running" not in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # Nothing ran: no self-test events, no devices started beside the agent's own.
    subscriber.sync()
    assert not subscriber.events("selftest.started")
    bootids = {e["bootid"] for e in subscriber.events("device.online")}
    assert bootids == {subscriber.events("agent.started")[0]["bootid"]}
    assert agent.stop() == 0


def test_agent_run_is_refused_while_an_in_process_selftest_holds_the_data_dir(tmp_path, broker):
    cfg = agent_config(tmp_path, broker, EXIT1, exits={"exit1": {"eas": "exit1-eas"}})
    path = write_config(tmp_path / "agent.toml", cfg)
    # A walk test waits for the technician (stdin): the in-process run holds the data_dir.
    selftest = subprocess.Popen([AGENT_BIN, "--config", str(path), "selftest", "--walk"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert selftest.stderr is not None
        wait_until(lambda: "running the self-test in-process" in selftest.stderr.readline(),
                   30, "the in-process self-test to start")
        result = subprocess.run([AGENT_BIN, "--config", str(path), "run"], capture_output=True,
                                text=True, timeout=30)
        second = subprocess.run([AGENT_BIN, "--config", str(path), "selftest"],
                                capture_output=True, text=True, timeout=30)
    finally:
        selftest.kill()
        selftest.communicate()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"data_dir {cfg['agent']['data_dir']} is in use by PID {selftest.pid} " \
           "(agent selftest)" in result.stderr
    # A second technician's in-process run waits its turn.
    assert second.returncode == 3, second.stdout + second.stderr
    assert f"is in use by PID {selftest.pid} (agent selftest): one agent per data_dir; wait " \
           "until that self-test has finished" in second.stderr
