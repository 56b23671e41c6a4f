"""The driver kit: every built-in driver passes the conformance checks, the checks catch broken
drivers, and `agent drivers` shows what is installed, allowed and broken."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import AGENT_BIN

from agent.conformance import CHECKS, run_check
from agent.registry import discover

ROOT = Path(__file__).resolve().parents[2]
KITBAD = ROOT / "tests" / "fixtures" / "kitbad"
"""A ``*.dist-info`` with entry points and the modules they name: importlib.metadata finds it on
sys.path like an installed package, so broken drivers cost no virtualenv."""

BUILTIN = sorted(name for name, info in discover().items() if info.package == "store-edge-agent")


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("driver", BUILTIN)
def test_every_builtin_driver_passes_the_kit(driver, check, tmp_path):
    result = run_check(driver, check, tmp_path)
    assert result.ok, f"{driver} {check}:\n{result.report()}"


def test_builtin_drivers_are_found_through_the_entry_points():
    assert {"replay", "gpio_door", "gpio_input", "gpio_output"} <= set(BUILTIN)


def test_the_cli_offers_every_check():
    from agent.cli import CHECK_NAMES

    assert CHECK_NAMES == CHECKS


@pytest.fixture
def kitbad(monkeypatch):
    monkeypatch.syspath_prepend(str(KITBAD))


def problems(driver: str, check: str, tmp_path: Path) -> str:
    result = run_check(driver, check, tmp_path)
    assert not result.ok, f"{driver} {check} passed but must not"
    return result.report()


def test_metadata_and_sample_problems_are_each_named(kitbad, tmp_path):
    report = problems("kitbad_sloppy", "metadata", tmp_path)
    for expected in ("version is not set", "vendor is not set", "description is not set",
                     "emits 'agent.started', which only the agent itself emits",
                     "emits 'no.such', which is not a catalogue event type",
                     "actions pulse are declared but action() is not implemented",
                     "conformance is not declared"):
        assert expected in report
    assert "no " + str(KITBAD / "sample.toml") in problems("kitbad_sloppy", "sample", tmp_path)
    assert "conformance is not declared" in problems("kitbad_sloppy", "working", tmp_path)
    assert "Config must forbid unknown keys" in problems("kitbad_undeclared", "metadata", tmp_path)


def test_undeclared_types_swallowed_refusals_and_crashes_are_caught(kitbad, tmp_path):
    report = problems("kitbad_undeclared", "working", tmp_path / "w")
    assert "emitted door.opened, which is not declared in emits" in report
    assert "an emit was refused: invalid data for eas.alarm: direction" in report
    report = problems("kitbad_undeclared", "failing", tmp_path / "f")
    assert report == ("- run() raised ConnectionRefusedError: connection refused, instead of "
                      "reporting device.offline and retrying")


def test_slow_stop_and_slow_health_are_caught(kitbad, tmp_path):
    report = problems("kitbad_slow", "working", tmp_path)
    assert "health() did not answer within 2 s" in report
    assert "run() did not stop within 2.0 s of cancellation" in report


def test_mqtt_and_sqlite_imports_are_caught_loaded_or_lazy(kitbad, tmp_path):
    report = problems("kitbad_sqlite", "imports", tmp_path)
    assert "importing kitbad_sqlite loads sqlite3" in report
    source = KITBAD / "kitbad_sqlite.py"
    line = source.read_text().splitlines().index("        import paho.mqtt.client") + 1
    assert f"{source}:{line} imports paho.mqtt.client" in report


def agent(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run([AGENT_BIN, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_drivers_lists_a_broken_package_and_skips_it(tmp_path):
    proc = agent("-c", str(tmp_path / "none.toml"), "drivers",
                 env={"PYTHONPATH": str(KITBAD)})
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert lines["kitbad_broken"].split()[-1] == "failed"
    assert "kitbad_broken: import failed: ModuleNotFoundError: No module named 'kitbad_missing'" \
        in proc.stdout
    assert "kitbad_notdriver: kitbad_common:NOT_A_DRIVER is not a subclass" in proc.stdout
    assert lines["replay"].split()[-1] == "loaded"
    assert "kitbad-drivers 1.0" in lines["kitbad_slow"]


def test_a_device_on_a_broken_driver_is_a_config_error_naming_both(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nstore_id = "t1"\n\n[devices.exit1-eas]\ndriver = "kitbad_broken"\n')
    proc = agent("-c", str(cfg), "config", "check", env={"PYTHONPATH": str(KITBAD)})
    assert proc.returncode == 2
    assert f"{cfg}: devices.exit1-eas.driver: got 'kitbad_broken': driver 'kitbad_broken' from " \
           "kitbad-drivers cannot be used: import failed: ModuleNotFoundError" in proc.stderr


def test_check_command_exits_1_naming_each_problem(tmp_path):
    proc = agent("drivers", "check", "kitbad_undeclared", "--check", "failing",
                 env={"PYTHONPATH": str(KITBAD)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "kitbad_undeclared failing" in proc.stdout
    assert "run() raised ConnectionRefusedError: connection refused" in proc.stdout
    assert "0 of 1 checks passed: kitbad_undeclared failing" in proc.stdout
    assert agent("drivers", "check", "nosuch").returncode == 2


def test_check_command_passes_a_good_driver_as_json():
    proc = agent("drivers", "check", "replay", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)
    assert [(r["check"], r["ok"]) for r in results] == [(c, True) for c in CHECKS]


ALLOW_REPLAY = '[agent]\nstore_id = "t1"\ndrivers = ["replay"]\n'


def test_a_driver_outside_the_allowlist_is_listed_not_loaded(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(ALLOW_REPLAY)
    rows = {r["name"]: r for r in json.loads(agent("-c", str(cfg), "drivers", "--json").stdout)}
    assert rows["replay"]["status"] == "loaded"
    assert rows["gpio_door"]["status"] == "not allowed"
    assert rows["gpio_door"]["error"] == ("not in the driver allowlist ([agent] drivers or "
                                          "AGENT_DRIVERS_ALLOW)")
    # The environment variable overrides the file.
    rows = {r["name"]: r for r in json.loads(
        agent("-c", str(cfg), "drivers", "--json", env={"AGENT_DRIVERS_ALLOW": "gpio_door"}).stdout)}
    assert rows["replay"]["status"] == "not allowed"
    assert rows["gpio_door"]["status"] == "loaded"


def test_a_device_needing_a_disallowed_driver_is_a_config_error(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(ALLOW_REPLAY + '\n[devices.exit1-door]\ndriver = "gpio_door"\npin = 5\n')
    proc = agent("-c", str(cfg), "config", "check")
    assert proc.returncode == 2
    assert (f"{cfg}: devices.exit1-door.driver: got 'gpio_door': driver 'gpio_door' from "
            "store-edge-agent cannot be used: not in the driver allowlist") in proc.stderr
    # `agent drivers` still reads the allowlist of a file whose devices are wrong.
    listing = agent("-c", str(cfg), "drivers").stdout
    door = next(line for line in listing.splitlines() if line.startswith("gpio_door "))
    assert door.endswith("not allowed")


def test_the_pytest_suite_class_fails_with_the_problems(kitbad):
    from agent.conformance import DriverConformance

    class TestSloppy(DriverConformance):
        driver = "kitbad_sloppy"

    with pytest.raises(AssertionError, match=r"kitbad_sloppy: metadata:\n- version is not set"):
        TestSloppy().test_metadata()
    with pytest.raises(AssertionError, match="set driver ="):
        DriverConformance().test_metadata()
