"""What this machine lacks for the configured devices, as `agent config check` and `agent run` say it.

This machine is not a Pi: no lgpio, no RPi.GPIO, no /dev/gpiochip*. That is the case a store
meets when the GPIO library was not installed, so it is tested here for real.
"""

from __future__ import annotations

import importlib.util
import os
import pty
import subprocess
from pathlib import Path

import pytest
from support import AGENT_BIN, AgentProcess, agent_config

from agent.testing import write_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lgpio") is not None or bool(list(Path("/dev").glob("gpiochip*"))),
    reason="this machine has GPIO: the missing-library case cannot be seen here",
)

DOOR = {"door": {"driver": "gpio_door", "pin": 17}}
ALARMS = {"name": "alarms", "table": "input", "address": 0, "type": "uint16",
          "on_increment": {"type": "eas.alarm", "data": {"direction": "out"}}}
PEDESTAL = {"driver": "eas_serial", "port": "/dev/ttyUSB9", "profile": "pipe-events"}


def agent(tmp: Path, config: dict, *args: str) -> subprocess.CompletedProcess[str]:
    path = write_config(tmp / "agent.toml", config)
    return subprocess.run([AGENT_BIN, "--config", str(path), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("factory", ["lgpio", "auto"])
def test_gpio_devices_without_a_gpio_library_exit_2_naming_the_factory_and_the_package(
        tmp_path, factory):
    config = agent_config(tmp_path, None, {**DOOR, "relay": {
        "driver": "gpio_input", "pin": 18,
        "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}}}},
        gpio={"pin_factory": factory})
    for command in (["config", "check"], ["run"]):
        result = agent(tmp_path, config, *command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        # one line for both devices: the factory, why, and what to install
        lines = [line for line in result.stderr.splitlines() if "devices.door" in line]
        assert len(lines) == 1, result.stderr
        line = lines[0]
        assert "devices.door, devices.relay" in line
        assert f"GPIO pin factory '{factory}' is not available on this machine" in line
        assert "lgpio: its Python library is missing" in line
        assert "sudo apt-get install python3-lgpio" in line
        assert "OK" not in result.stdout


def test_gpio_factory_is_not_checked_without_gpio_devices_or_in_simulation(tmp_path):
    replay = {"feed": {"driver": "replay", "file": str(tmp_path / "none.jsonl")}}
    (tmp_path / "none.jsonl").write_text("")
    assert agent(tmp_path, agent_config(tmp_path, None, replay, gpio={"pin_factory": "lgpio"}),
                 "config", "check").returncode == 0
    simulated = agent(tmp_path, agent_config(tmp_path, None, DOOR), "config", "check")
    assert simulated.returncode == 0, simulated.stderr
    assert simulated.stderr == ""


def test_a_serial_port_that_does_not_exist_now_is_a_warning_not_an_error(tmp_path):
    master, slave = pty.openpty()
    try:
        present = os.ttyname(slave)
        devices = {"ped": PEDESTAL,
                   "here": {**PEDESTAL, "port": present},
                   "remote": {**PEDESTAL, "port": "socket://127.0.0.1:1"},
                   "rtu": {"driver": "modbus", "port": "/dev/serial/by-id/usb-FTDI-if00-port0",
                           "registers": [ALARMS]}}
        result = agent(tmp_path, agent_config(tmp_path, None, devices), "config", "check")
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 0, result.stderr
    assert ": OK: " in result.stdout
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, result.stderr  # not the pty that exists, not the TCP one
    assert any(w.startswith("warning: ") and "devices.ped: serial port /dev/ttyUSB9 does not "
               "exist now; the agent waits for it" in w for w in warnings)
    assert any("devices.rtu: serial port /dev/serial/by-id/usb-FTDI-if00-port0 does not exist"
               in w for w in warnings)


def test_agent_run_logs_a_missing_serial_port_and_keeps_running(tmp_path, broker, agents):
    proc = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, {"ped": PEDESTAL}))
    agents.append(proc)
    proc.start(wait_connected=True)
    log = proc.output()
    assert log.count("devices.ped: serial port /dev/ttyUSB9 does not exist now") == 1, log
    assert proc.stop() == 0
