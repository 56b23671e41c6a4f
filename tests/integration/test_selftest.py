"""Exit self-tests with the real `agent` command: simulated exit, real broker, real CLI."""

from __future__ import annotations

import json
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support import AGENT_BIN, AgentProcess, agent_config, free_port, request, wait_until

TOPIC = "retail/t1/agent"
FAST_CAM = {"pull_timeout": "1s", "retry_min": "100ms", "retry_max": "500ms",
            "request_timeout": "1s", "state_interval": "200ms"}


def exit1(**overrides: dict) -> dict:
    """A simulated exit: door contact, the pedestal's alarm relay on a GPIO input, and a
    test-tag coil wired (in simulation) to that relay: energising the tag alarms the pedestal."""
    devices = {
        "exit1-door": {"driver": "gpio_door", "pin": "GPIO5", "held_open_after": "0"},
        "exit1-eas": {"driver": "gpio_input", "pin": "GPIO17", "pull": "up",
                      "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}}},
        "exit1-testtag": {"driver": "gpio_output", "pin": "GPIO27", "pulse": "500ms",
                          "sim_drives": "exit1-eas"},
    }
    for device, table in overrides.items():
        devices[device] = {**devices.get(device, {}), **table}
    return devices


def config(tmp: Path, broker, devices: dict, **exit_keys) -> dict:
    roles = {"eas": "exit1-eas", "door": "exit1-door", "test_tag": "exit1-testtag",
             "alarm_within": "1s", **exit_keys}
    return agent_config(tmp, broker, devices, exits={"exit1": roles})


def start(tmp: Path, agents: list, cfg: dict) -> AgentProcess:
    agent = AgentProcess(tmp / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    wait_until(lambda: json.loads(agent.run_cli("status", "--json").stdout or "{}").get(
        "devices", {}) and all(d["online"] for d in json.loads(
            agent.run_cli("status", "--json").stdout)["devices"].values()),
        15, "every device online")
    return agent


def rows(stdout: str) -> dict[str, str]:
    """STEP -> the rest of its line, from the printed table."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split(None, 1)
        if line.startswith("  ") and len(parts) == 2 and not line.strip().startswith(">>>"):
            name = line[2:26].strip()
            out[name] = line[26:].strip()
    return out


def selftest_answered_by(agent: AgentProcess, *sim: str) -> dict[str, str]:
    """Run `agent selftest`; once its alarm step is printed, `agent sim` the given device (what
    a real sounder or camera does on its own). The table of a passing run."""
    proc = subprocess.Popen([AGENT_BIN, "--config", str(agent.config_path), "selftest"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip().startswith("alarm"):
            assert agent.run_cli("sim", *sim).returncode == 0
    assert proc.wait(30) == 0, "".join(lines) + proc.stderr.read()
    return rows("".join(lines))


def test_test_tag_wired_to_the_pedestal_passes_through_the_running_service(
        tmp_path, broker, subscriber, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1()))
    result = agent.run_cli("selftest", "--junit", str(tmp_path / "junit.xml"))
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(result.stdout)
    for step in ("buffer", "broker", "clock", "link eas", "link door", "link test_tag", "rest",
                 "alarm", "restore"):
        assert step in table, result.stdout
    assert table["alarm"].startswith("pass")
    assert "eas.alarm from exit1-eas" in table["alarm"]
    assert "exit1: PASS" in result.stdout
    assert "(the running agent)" in result.stdout
    assert "in-process" not in result.stderr

    # Dashboards see the run and the pedestal's alarm marked as a test.
    passed = subscriber.wait_events(1, "selftest.passed")[0]
    assert passed["data"]["exit"] == "exit1" and passed["data"]["result"] == "pass"
    assert passed["subject"] == "exit1" and passed["test"] is True
    steps = [e for e in subscriber.events("selftest.step")
             if e["data"]["run_id"] == passed["data"]["run_id"]]
    assert [s["data"]["step"] for s in steps][-2:] == ["alarm", "restore"]
    alarm = next(s for s in steps if s["data"]["step"] == "alarm")["data"]
    assert 0 < alarm["latency_ms"] < 1000
    alarms = subscriber.wait_events(1, "eas.alarm")
    assert alarms and all(e["test"] is True for e in alarms)

    # The retained report and the status show it; a real alarm afterwards is not a test.
    report = json.loads(wait_until(lambda: subscriber.payloads(f"{TOPIC}/selftest/exit1"), 10,
                                   "retained report")[-1])
    assert report["result"] == "pass" and report["run_id"] == passed["data"]["run_id"]
    status = agent.run_cli("status")
    assert "self-tests:" in status.stdout and "exit1" in status.stdout
    assert "PASS" in status.stdout
    result = agent.run_cli("sim", "gpio", "exit1-eas", "pulse")
    assert result.returncode == 0, result.stderr
    real = subscriber.wait_events(len(alarms) + 1, "eas.alarm")[-1]
    assert real["test"] is False

    junit = ET.parse(tmp_path / "junit.xml").getroot()
    suite = junit.find("testsuite")
    assert suite is not None and suite.get("name") == "exit exit1"
    assert suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")][-2:] == ["alarm", "restore"]
    assert agent.stop() == 0


def test_a_dead_pedestal_fails_at_the_stimulus_with_a_detail_a_technician_understands(
        tmp_path, broker, subscriber, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1()))
    assert agent.run_cli("sim", "gpio", "exit1-testtag", "unwire").returncode == 0
    result = agent.run_cli("selftest", "--exit", "exit1")
    assert result.returncode == 1, result.stdout + result.stderr
    table = rows(result.stdout)
    assert table["alarm"].startswith("FAIL")
    assert "no eas.alarm from exit1-eas within 1 s of energising test tag exit1-testtag" in \
        table["alarm"]
    assert "the pedestal did not detect the tag" in table["alarm"]
    assert "(waited 2 s, to tell a late alarm from none)" in table["alarm"]  # 1 s + as much
    assert table["link eas"].startswith("pass")  # the input is fine: the pedestal is not
    assert table["restore"].startswith("pass")
    assert "exit1: FAIL" in result.stdout
    failed = subscriber.wait_events(1, "selftest.failed")[0]
    assert "alarm" in failed["data"]["summary"]
    status = agent.run_cli("status")  # broker and devices are fine; the exit is not
    assert status.returncode == 1, status.stdout + status.stderr
    assert status.stdout.splitlines()[-1] == "attention: exit exit1: last self-test FAIL"
    assert agent.stop() == 0


def test_an_alarm_later_than_the_window_fails(tmp_path, broker, agents):
    # The relay's debounce delays the alarm past alarm_within (1 s): a slow pedestal.
    devices = exit1(**{"exit1-eas": {"debounce": "1500ms"}, "exit1-testtag": {"pulse": "3s"}})
    agent = start(tmp_path, agents, config(tmp_path, broker, devices))
    result = agent.run_cli("selftest", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)[0]
    alarm = next(s for s in report["steps"] if s["step"] == "alarm")
    assert alarm["result"] == "fail"
    assert "later than alarm_within 1 s" in alarm["detail"]
    assert 1500 <= alarm["latency_ms"] < 2000
    assert report["result"] == "fail"
    assert agent.stop() == 0


def test_an_offline_camera_fails_its_steps_and_the_others_still_run(
        tmp_path, broker, agents):
    secret = tmp_path / "cam.password"
    secret.write_text("x\n")
    devices = exit1(**{"exit1-cam": {"driver": "onvif", "host": "127.0.0.1",
                                     "port": free_port(), "username": "admin",
                                     "password_file": str(secret), **FAST_CAM}})
    cfg = config(tmp_path, broker, devices, camera="exit1-cam", motion_within="1s")
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    result = agent.run_cli("selftest")
    assert result.returncode == 1, result.stdout + result.stderr
    table = rows(result.stdout)
    assert table["link camera"].startswith("FAIL")
    assert "exit1-cam (onvif)" in table["link camera"]
    assert table["camera"].startswith("FAIL") and "camera offline" in table["camera"]
    assert table["alarm"].startswith("pass")
    assert table["link eas"].startswith("pass") and table["restore"].startswith("pass")
    assert agent.stop() == 0


def test_a_simulated_camera_that_sees_the_tag_passes(tmp_path, broker, agents):
    devices = exit1(**{"exit1-cam": {"driver": "onvif", "simulate": True, **FAST_CAM}})
    agent = start(tmp_path, agents, config(tmp_path, broker, devices, camera="exit1-cam",
                                           motion_within="5s"))
    # The camera "sees" the tag once the pedestal has alarmed.
    table = selftest_answered_by(agent, "onvif", "exit1-cam", "motion", "active=true")
    assert table["camera"].startswith("pass") and "camera.motion from exit1-cam" in table["camera"]
    assert agent.stop() == 0


def test_in_process_when_no_service_runs(tmp_path, broker, subscriber):
    cfg = config(tmp_path, broker, exit1())
    path = tmp_path / "agent.toml"
    from agent.testing import write_config

    write_config(path, cfg)
    result = subprocess.run([AGENT_BIN, "--config", str(path), "selftest", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no agent service is running" in result.stderr
    assert "running the self-test in-process" in result.stderr
    report = json.loads(result.stdout)[0]
    assert report["result"] == "pass" and report["trigger"] == "cli"
    # The in-process run published what it did before it stopped.
    passed = subscriber.wait_events(1, "selftest.passed")[0]
    assert passed["data"]["run_id"] == report["run_id"]
    assert not subscriber.events("agent.started")  # not the service starting


def test_in_process_run_keeps_log_noise_out_of_the_terminal(tmp_path):
    """Broker down, a simulated camera started and stopped with the run: the terminal shows the
    table and the verdict; the agent's log (broker unreachable...) goes to a file, named."""
    devices = {**exit1(), "cam": {"driver": "onvif", "simulate": True, **FAST_CAM}}
    cfg = agent_config(tmp_path, None, devices, exits={"exit1": {  # no broker listens
        "eas": "exit1-eas", "door": "exit1-door", "test_tag": "exit1-testtag"}})
    path = tmp_path / "agent.toml"
    from agent.testing import write_config

    write_config(path, cfg)
    result = subprocess.run([AGENT_BIN, "--config", str(path), "selftest"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    terminal = result.stdout + result.stderr
    for noise in ("ERROR", "WARNING", "Unclosed", "did not stop", "Traceback", "retrying in"):
        assert noise not in terminal, terminal
    table = rows(result.stdout)
    assert table["broker"].startswith("warn") and table["alarm"].startswith("pass")
    log_path = Path(cfg["agent"]["data_dir"]) / "selftest" / "in-process.log"
    assert result.stderr.splitlines()[-1].startswith(f"the agent's log of this run: {log_path}")
    assert "ERROR agent.publisher: broker 127.0.0.1" in log_path.read_text()


def test_no_test_tag_is_incomplete_not_pass(tmp_path, broker, agents):
    devices = exit1()
    del devices["exit1-testtag"]["sim_drives"]
    cfg = agent_config(tmp_path, broker, devices,
                       exits={"exit1": {"eas": "exit1-eas", "door": "exit1-door"}})
    agent = start(tmp_path, agents, cfg)
    result = agent.run_cli("selftest")
    assert result.returncode == 1, result.stdout + result.stderr
    table = rows(result.stdout)
    assert table["alarm"].startswith("skip") and "--walk" in table["alarm"]
    assert "exit1: INCOMPLETE" in result.stdout
    assert agent.stop() == 0


def test_walk_test_through_the_service(tmp_path, broker, subscriber, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1(), walk_within="10s"))
    proc = subprocess.Popen([AGENT_BIN, "--config", str(agent.config_path), "selftest",
                             "--walk"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    actions = {"LOW height": ("gpio", "exit1-eas", "pulse"),
               "MIDDLE height": ("gpio", "exit1-eas", "pulse"),
               "HIGH height": ("gpio", "exit1-eas", "pulse"),
               "Open the exit door": ("gpio", "exit1-door", "open"),
               "Close the exit door": ("gpio", "exit1-door", "close")}
    # The question goes to stderr without a newline: answer it once the door is closed.
    answered = threading.Event()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        for prompt, sim in actions.items():
            if ">>>" in line and prompt in line:
                assert agent.run_cli("sim", *sim).returncode == 0
                if prompt == "Close the exit door":
                    proc.stdin.write("y\n")
                    proc.stdin.flush()
                    answered.set()
    assert proc.wait(30) == 0, "".join(lines) + proc.stderr.read()
    assert answered.is_set()
    table = rows("".join(lines))
    for step in ("walk low", "walk middle", "walk high", "walk door opened", "walk door closed",
                 "walk sounder and lights"):
        assert table[step].startswith("pass"), (step, table)
    walk_alarms = subscriber.wait_events(4, "eas.alarm")  # the test tag's, then three passes
    assert all(e["test"] for e in walk_alarms)
    assert all(e["test"] for e in subscriber.events("door.opened"))
    assert agent.stop() == 0


def test_remote_requests_are_allow_listed_and_answered(tmp_path, broker, subscriber, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1()))
    reply = request(broker, "selftest", b'{"id": "r1", "exit": "exit1"}', v5_reply=True)
    assert reply["id"] == "r1" and reply["status"] == "ok" and reply["result"] == "pass"
    assert reply["reports"][0]["trigger"] == "remote"

    reply = request(broker, "selftest", b'{"id": "r2", "exit": "exit9"}')
    assert reply == {"id": "r2", "status": "error",
                     "error": "no exit 'exit9' (configured: exit1)"}
    reply = request(broker, "selftest", b'{"id": "r3", "walk": true}')
    assert reply["status"] == "error" and "technician" in reply["error"]
    reply = request(broker, "selftest", b"not json")
    assert reply["status"] == "error" and "not JSON" in reply["error"]
    # Driving hardware is for the control socket only.
    reply = request(broker, "action", b'{"id": "r4", "device": "exit1-testtag", "action": "on"}')
    assert reply["status"] == "error"
    assert "not allowed over MQTT; allowed: selftest, status" in reply["error"]
    reply = request(broker, "status", b'{"id": "r5"}')
    assert reply["status"] == "ok" and reply["agent"]["storeid"] == "t1"
    assert agent.run_cli("status").returncode == 0  # the agent survived all of it
    assert agent.stop() == 0


def test_scheduled_runs_wait_while_the_door_is_open(tmp_path, broker, subscriber, agents):
    cfg = config(tmp_path, broker, exit1(), schedule="*/2 * * * * *", schedule_retry="1s",
                 min_interval="0s")
    cfg["limits"] = {"selftests_per_hour": 1000}
    agent = start(tmp_path, agents, cfg)  # runs may already have happened while it started
    assert agent.run_cli("sim", "gpio", "exit1-door", "open").returncode == 0

    def postponed() -> int:
        return agent.output().count("scheduled self-test of exit1")

    wait_until(lambda: postponed() >= 1, 15, "a postponement")
    assert "door exit1-door: the door is open" in agent.output()
    subscriber.sync()
    started = len(subscriber.events("selftest.started"))
    wait_until(lambda: postponed() >= 3, 15, "two more postponed attempts")
    subscriber.sync()
    assert len(subscriber.events("selftest.started")) == started  # none while the door is open
    status = json.loads(agent.run_cli("status", "--json").stdout)
    assert status["selftest_schedule"]["exit1"]["schedule"] == "*/2 * * * * *"
    assert "the door is open" in status["selftest_schedule"]["exit1"]["postponed"]["reason"]

    assert agent.run_cli("sim", "gpio", "exit1-door", "close").returncode == 0
    passed = subscriber.wait_events(
        1, "selftest.passed", timeout=15,
        where=lambda e: e["data"]["run_id"] not in {
            s["data"]["run_id"] for s in subscriber.events("selftest.started")[:started]})[0]
    assert passed["data"]["trigger"] == "schedule"
    assert agent.stop() == 0


@pytest.mark.parametrize(("exit_keys", "message"), [
    ({"schedule": "0 6 * * *", "test_tag": None},
     "exits.exit1.schedule: got '0 6 * * *': a scheduled self-test needs test_tag"),
    ({"test_tag": "exit1-door"}, "exits.exit1.test_tag: got 'exit1-door': device 'exit1-door' "
                                 "(gpio_door) has no 'pulse' action"),
    ({"schedule": "0 25 * * *"}, "exits.exit1.schedule: "),
    ({"walk_within": "soon"}, "exits.exit1.walk_within"),
])
def test_exit_config_errors_name_the_key(tmp_path, exit_keys, message):
    from agent.testing import write_config

    cfg = config(tmp_path, None, exit1(), **exit_keys)
    cfg["exits"]["exit1"] = {k: v for k, v in cfg["exits"]["exit1"].items() if v is not None}
    path = write_config(tmp_path / "agent.toml", cfg)
    result = subprocess.run([AGENT_BIN, "--config", str(path), "config", "check"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


def test_unknown_exit_is_a_usage_error(tmp_path, broker, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1()))
    result = agent.run_cli("selftest", "--exit", "exit9")
    assert result.returncode == 2
    assert "no exit 'exit9' (configured: exit1)" in result.stderr
    assert agent.stop() == 0


def test_a_walk_test_left_by_the_technician_ends_and_stops_marking_alarms(
        tmp_path, broker, subscriber, agents):
    agent = start(tmp_path, agents, config(tmp_path, broker, exit1(), walk_within="60s"))
    proc = subprocess.Popen([AGENT_BIN, "--config", str(agent.config_path), "selftest",
                             "--walk"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if ">>> Carry the test tag" in line:
            break
    proc.kill()  # the technician's laptop goes away mid-walk
    proc.wait(10)
    failed = subscriber.wait_events(1, "selftest.failed", timeout=15)[0]
    steps = [e["data"] for e in subscriber.events("selftest.step")
             if e["data"]["run_id"] == failed["data"]["run_id"]]
    assert steps[-2]["step"] == "aborted" and steps[-1]["step"] == "restore"
    # The exit is live again: a real alarm is not marked as a test.
    alarms = len(subscriber.events("eas.alarm"))
    assert agent.run_cli("sim", "gpio", "exit1-eas", "pulse").returncode == 0
    assert subscriber.wait_events(alarms + 1, "eas.alarm")[-1]["test"] is False
    assert agent.stop() == 0


def test_the_sounder_must_answer_the_test_tag(tmp_path, broker, agents):
    devices = exit1(**{"exit1-sounder": {"driver": "gpio_input", "pin": "GPIO22",
                                         "pull": "up"}})
    agent = start(tmp_path, agents, config(tmp_path, broker, devices, sounder="exit1-sounder",
                                           sounder_within="2s"))
    # A sounder that answers: its feedback line goes active once the pedestal alarmed.
    table = selftest_answered_by(agent, "gpio", "exit1-sounder", "pulse")
    assert table["sounder"].startswith("pass") and "exit1-sounder answered" in table["sounder"]
    # A silent sounder fails its step; the alarm step still passes.
    result = agent.run_cli("selftest")
    assert result.returncode == 1
    table = rows(result.stdout)
    assert table["sounder"].startswith("FAIL")
    assert "the sounder feedback exit1-sounder did not answer within 2 s" in table["sounder"]
    assert table["alarm"].startswith("pass")
    assert agent.stop() == 0
