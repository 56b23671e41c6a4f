"""systemd/store-edge-agent.service: verified and security-rated by systemd-analyze itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "store-edge-agent.service"
INSTALLED_AGENT = "/opt/store-edge-agent/venv/bin/agent"

analyze = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    analyze is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def _unit_with_existing_binary(tmp_path: Path) -> Path:
    """The unit as installed, but with ExecStart pointing at this checkout's agent: `verify`
    checks that the binary exists, and /opt/store-edge-agent is only there after install."""
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_AGENT} run" in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED_AGENT, str(Path(sys.executable).with_name("agent"))))
    return unit


def test_unit_verifies_without_warnings(tmp_path):
    result = subprocess.run([analyze, "verify", str(_unit_with_existing_binary(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == ""


def test_verify_would_catch_a_typo(tmp_path):
    unit = _unit_with_existing_binary(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomme=yes"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert "ProtectHomme" in result.stderr


def test_security_exposure_is_2_5_or_better(tmp_path):
    unit = _unit_with_existing_binary(tmp_path)
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5, result.stdout


def test_hardening_keeps_serial_gpio_and_network_usable():
    text = UNIT.read_text()
    directives = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            directives.setdefault(key, []).append(value)
    assert directives["Type"] == ["notify"]
    assert directives["Restart"] == ["always"]
    assert directives["SupplementaryGroups"] == ["dialout gpio"]
    assert directives["User"] == ["store-edge-agent"]
    for name in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert directives[name] == ["store-edge-agent"]
    # The devices the drivers open stay reachable; everything else is closed.
    assert directives["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in directives["DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-gpiochip"} <= allowed
    assert "PrivateDevices" not in directives  # it would hide /dev/ttyUSB0 and /dev/gpiochip0
    assert "PrivateNetwork" not in directives
    families = directives["RestrictAddressFamilies"][0].split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)
    # gpiozero reads the Pi's revision from /proc/cpuinfo or /proc/device-tree
    assert "ProcSubset" not in directives
    # lgpio makes its notification pipes in the working directory: it must be writable
    assert directives["WorkingDirectory"] == ["/var/lib/store-edge-agent"]
    assert "WatchdogSec" in directives
    # systemctl reload: SIGHUP, which the agent takes as "read the config file again"
    assert directives["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # agent/clock.py reads the kernel's NTP state with adjtimex (ProtectClock= would deny it)
    allowed = {call for v in directives["SystemCallFilter"] if not v.startswith("~")
               for call in v.split()}
    assert {"adjtimex", "clock_adjtime"} <= allowed  # glibc's adjtimex() is clock_adjtime
    assert "ProtectClock" not in directives
    assert directives["CapabilityBoundingSet"] == [""]  # so adjtimex cannot set the clock
