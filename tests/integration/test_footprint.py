"""Issue 17: an agent loads only the libraries of the features its config uses (resident memory)."""

from __future__ import annotations

from support import ProbedAgentProcess, agent_config, write_jsonl

UNUSED = {
    "aiohttp": "[web] listen is empty",
    "apscheduler": "no exit has a schedule",
    "prometheus_client": "[metrics] listen is empty",
    "onvif": "no camera",
    "zeep": "no camera",
    "httpx": "no camera",
    "lxml": "no camera",
    "pymodbus": "no Modbus device",
    "serial": "no serial pedestal",
    "gpiozero": "no GPIO device",
    "agent.outputs": "no [outputs]",
    "drivers.modbus": "no Modbus device",
    "drivers.gpio_door": "no GPIO device",
    "drivers.eas_serial": "no serial pedestal",
    "drivers.onvif": "no camera",
}


def loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_a_replay_only_agent_imports_no_unused_feature(tmp_path, broker):
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "door.opened", "data": {}}])
    agent = ProbedAgentProcess(tmp_path / "a", agent_config(tmp_path, broker, {
        "r1": {"driver": "replay", "file": str(rec), "start_delay": "1h"}}))
    agent.start(wait_connected=True)
    try:
        modules = agent.modules()
        assert agent.run_cli("web", "sessions").stderr.strip() == (
            "agent web: the web page is off: set [web] listen in the config file (docs/web.md)")
    finally:
        assert agent.stop() == 0
    assert loaded(modules, "drivers.replay")  # the probe sees what the agent imported
    assert {name: why for name, why in UNUSED.items() if loaded(modules, name)} == {}


def test_each_feature_loads_its_library_when_configured(tmp_path, broker):
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "door.opened", "data": {}}])
    cfg = agent_config(tmp_path, broker, {
        "r1": {"driver": "replay", "file": str(rec), "start_delay": "1h"},
        "relay": {"driver": "gpio_input", "pin": "GPIO17", "pull": "up",
                  "on_active": {"event": "eas.alarm", "data": {"direction": "unknown"}}},
        "tag": {"driver": "gpio_output", "pin": "GPIO27", "safe_state": "off", "pulse": "1s"},
    }, web={"listen": "127.0.0.1:0"}, metrics={"listen": "127.0.0.1:0"})
    cfg["exits"] = {"exit1": {"eas": "relay", "test_tag": "tag", "schedule": "0 6 * * *"}}
    agent = ProbedAgentProcess(tmp_path / "a", cfg)
    agent.start(wait_connected=True)
    try:
        modules = agent.modules()
    finally:
        assert agent.stop() == 0
    for name in ("aiohttp", "apscheduler", "prometheus_client", "gpiozero", "drivers.gpio_input"):
        assert loaded(modules, name), name
    for name in ("pymodbus", "serial", "onvif", "agent.outputs"):
        assert not loaded(modules, name), name
