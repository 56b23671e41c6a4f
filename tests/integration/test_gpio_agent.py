"""The GPIO drivers in the real `agent`: pin conflicts, simulation-only keys, `agent sim` to MQTT."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support import AGENT_BIN, AgentProcess, Subscriber, agent_config, wait_until

from agent.testing import write_config

ROOT = Path(__file__).resolve().parents[2]

EXIT1 = {
    "exit1-door": {"driver": "gpio_door", "pin": "GPIO5", "rex_pin": "GPIO6", "armed": True,
                   "shunt": "2s", "held_open_after": "0"},
    "exit1-eas-relay": {"driver": "gpio_input", "pin": "GPIO17", "pull": "up",
                        "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}}},
    "exit1-testtag": {"driver": "gpio_output", "pin": "GPIO27", "sim_drives": "exit1-eas-relay"},
}


def config_check(tmp: Path, config: dict) -> subprocess.CompletedProcess[str]:
    path = write_config(tmp / "agent.toml", config)
    return subprocess.run([AGENT_BIN, "--config", str(path), "config", "check"],
                          capture_output=True, text=True, timeout=30)


def test_two_devices_on_one_pin_is_a_config_error_naming_both(tmp_path):
    devices = {
        "relay": {"driver": "gpio_input", "pin": 17},
        "lamp": {"driver": "gpio_output", "pin": "BOARD11"},  # the same pin, by header position
        "door": {"driver": "gpio_door", "pin": "GPIO5", "rex_pin": "GPIO17"},
    }
    result = config_check(tmp_path, agent_config(tmp_path, None, devices))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "devices.lamp: claims gpio:17, already claimed by devices.relay" in result.stderr
    assert "devices.door: claims gpio:17, already claimed by devices.relay" in result.stderr


def test_simulation_wiring_is_refused_on_real_pins(tmp_path):
    config = agent_config(tmp_path, None, EXIT1, gpio={"pin_factory": "lgpio"})
    result = config_check(tmp_path, config)
    assert result.returncode == 2
    assert "devices.exit1-testtag.sim_drives" in result.stderr
    assert "only allowed in simulation mode" in result.stderr


def test_wiring_to_a_missing_or_wrong_device_is_named(tmp_path):
    devices = {**EXIT1, "exit1-testtag": {**EXIT1["exit1-testtag"], "sim_drives": "exit1-door"}}
    result = config_check(tmp_path, agent_config(tmp_path, None, devices))
    assert result.returncode == 2
    assert "devices.exit1-testtag.sim_drives" in result.stderr
    assert "'gpio_door' device" in result.stderr


def test_the_demo_store_config_is_valid():
    result = subprocess.run([AGENT_BIN, "--config", str(ROOT / "demo" / "agent.toml"), "config",
                             "check"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for part in ("1 gpio_door", "1 gpio_input", "1 gpio_output", "1 onvif", "1 replay"):
        assert part in result.stdout


def test_the_demo_replay_is_plainly_another_exit_than_the_simulated_one():
    """A first-time viewer must not see exit 1's door.opened twice: once from the recording."""
    from agent.config import load_config

    config = load_config(ROOT / "demo" / "agent.toml")
    replays = [d for d in config.devices.values() if d.driver.name == "replay"]
    assert replays
    exit1 = set(config.exits["exit1"].devices().values())
    for dev in replays:
        assert dev.id not in exit1 and dev.exit is None
        lines = [json.loads(line) for line in dev.config.file.read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        subjects = {line.get("subject") for line in lines}
        assert subjects == {"exit2"}, subjects  # every replayed event names its own exit
        assert dev.id.startswith("exit2-")


def sim(agent: AgentProcess, *args: str) -> dict:
    result = agent.run_cli("sim", "gpio", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def of(sub: Subscriber, device: str, event_type: str) -> list[dict]:
    return [e for e in sub.events(event_type) if e["deviceid"] == device]


def retained_state(sub: Subscriber, device: str) -> dict:
    payloads = sub.payloads(f"retail/t1/state/{device}")
    return json.loads(payloads[-1]) if payloads else {}


def test_agent_sim_drives_a_simulated_exit_end_to_end(tmp_path, broker, subscriber, agents):
    agent = AgentProcess(tmp_path / "a", agent_config(
        tmp_path, broker, EXIT1,
        exits={"exit1": {"eas": "exit1-eas-relay", "door": "exit1-door",
                         "test_tag": "exit1-testtag"}},
    ))
    agents.append(agent)
    agent.start(wait_connected=True)
    wait_until(lambda: retained_state(subscriber, "exit1-door").get("door") == "closed", 10,
               "the door's retained state")
    status = agent.run_cli("status")
    assert "gpio       pin factory mock" in status.stdout.splitlines(), status.stdout
    assert retained_state(subscriber, "exit1-door")["pin_factory"] == "mock"

    # A door opened with nobody pressing the request-to-exit: forced.
    assert sim(agent, "exit1-door", "open") == {"pin": "GPIO5", "level": "high", "door": "open"}
    forced = subscriber.wait_events(1, "door.forced")[0]
    assert forced["subject"] == "exit1"
    assert forced["deviceid"] == "exit1-door"
    assert of(subscriber, "exit1-door", "door.opened")[0]["time"] == forced["time"]
    wait_until(lambda: retained_state(subscriber, "exit1-door").get("forced") is True, 10,
               "forced in the door's state")
    sim(agent, "exit1-door", "close")
    subscriber.wait_events(1, "door.closed")
    # With the request-to-exit pressed first: opened, not forced.
    assert sim(agent, "exit1-door", "rex", "--for", "1s") == {"rex_pin": "GPIO6", "for": 1.0}
    wait_until(lambda: retained_state(subscriber, "exit1-door").get("rex_active") is True, 10,
               "the REX in the door's state")
    sim(agent, "exit1-door", "open")
    subscriber.wait_events(2, "door.opened")
    sim(agent, "exit1-door", "close")
    subscriber.wait_events(2, "door.closed")
    assert len(of(subscriber, "exit1-door", "door.forced")) == 1

    # The test-tag coil is wired to the pedestal's relay: pulsing it raises an EAS alarm.
    assert sim(agent, "exit1-testtag", "pulse", "--for", "300ms") == {"output": "on", "for": 0.3}
    alarm = subscriber.wait_events(1, "eas.alarm")[0]
    assert alarm["deviceid"] == "exit1-eas-relay"
    assert alarm["subject"] == "exit1"
    # A dead pedestal: cut the wire; the pulse no longer reaches the relay.
    assert sim(agent, "exit1-testtag", "unwire") == {"wired_to": None}
    sim(agent, "exit1-testtag", "pulse", "--for", "100ms")
    wait_until(lambda: retained_state(subscriber, "exit1-testtag").get("actuations") == 5, 10,
               "the unwired pulse to end (actuations: safe state, pulse, end, pulse, end)")
    # The relay input itself still works, and its alarm is the second one, not a third.
    sim(agent, "exit1-eas-relay", "pulse")
    subscriber.wait_events(2, "eas.alarm")
    assert len(of(subscriber, "exit1-eas-relay", "eas.alarm")) == 2

    bad = agent.run_cli("sim", "gpio", "exit1-door", "fly")
    assert bad.returncode == 2
    assert "simulates open, close" in bad.stderr

    assert agent.stop() == 0
    subscriber.sync()  # the output's last state, published while stopping
    final = retained_state(subscriber, "exit1-testtag")
    assert final["output"] == "off"
    assert final["last_action"]["reason"] == "stop"
