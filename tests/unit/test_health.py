"""The host's health from a fake procfs/sysfs root holding files as real Pis have them."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from agent.health import HostHealth, Thresholds, render_health
from agent.metrics import HealthCollector

HOSTS = Path(__file__).resolve().parents[1] / "fixtures" / "host"


def read(name: str, tmp_path: Path, **thresholds) -> dict:
    return HostHealth(tmp_path, root=HOSTS / name, thresholds=Thresholds(**thresholds)).read()


def test_a_pi4_with_a_weak_power_supply_running_hot(tmp_path):
    h = read("pi4", tmp_path)
    assert h["board"] == "Raspberry Pi 4 Model B Rev 1.4"  # without the device tree's NUL
    assert h["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert h["hostname"] == "store0042-pi"
    assert h["uptime_s"] == 273612.5
    assert h["cpu_temp_c"] == 82.3
    assert h["throttled"] == {"raw": "0x50000", "now": [],
                              "since_boot": ["under_voltage", "throttled"]}
    assert h["memory"] == {"total_bytes": 3885316 * 1024, "available_bytes": 291652 * 1024}
    assert h["warnings"] == [
        "CPU at 82 °C (threshold 80 °C): the Pi slows down when hot; give it air or a "
        "heatsink/fan",
        "under-voltage since boot: check the power supply (the official 5.1 V supply: 3 A for a "
        "Pi 4, 5 A for a Pi 5) and its cable; it risks the SD card",
        "CPU throttled since boot: too hot or under-voltage; events may be late",
        "memory low: 284.8MiB of 3.7GiB available",
    ]


def test_flags_now_say_now(tmp_path):
    h = read("pi4-now", tmp_path)
    assert h["throttled"]["now"] == ["under_voltage", "throttled"]
    assert h["warnings"][0].startswith("under-voltage now: check the power supply")
    assert "CPU throttled now" in h["warnings"][1]


def test_a_pi5_under_voltage_now_from_its_hwmon_device(tmp_path):
    h = read("pi5-undervoltage", tmp_path)
    assert h["throttled"] == {"raw": None, "now": ["under_voltage"], "since_boot": None}
    assert h["warnings"][0].startswith("under-voltage now: check the power supply")
    assert "UNDER-VOLTAGE" in render_health(h)[1]
    registry = CollectorRegistry()
    registry.register(HealthCollector(HostHealth(tmp_path, root=HOSTS / "pi5-undervoltage"), "sea"))
    text = generate_latest(registry).decode()
    assert 'sea_host_throttled{condition="under_voltage",when="now"} 1.0' in text
    assert "since_boot" not in text  # unknown, not "no"
    assert 'condition="throttled"' not in text


def test_a_healthy_pi5_has_no_warnings(tmp_path):
    h = read("pi5", tmp_path)
    assert h["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    # the Pi 5's kernel has no get_throttled file: under-voltage now, from the hwmon device
    assert h["throttled"] == {"raw": None, "now": [], "since_boot": None}
    assert h["cpu_temp_c"] == 52.0
    assert h["warnings"] == []
    lines = render_health(h)
    assert lines[0] == ("host       store0043-pi  Raspberry Pi 5 Model B Rev 1.0  "
                        "Debian GNU/Linux 12 (bookworm)  up 15.2m")
    assert lines[1].startswith("           CPU 52.0 °C  power ok  memory 7.3GiB of "
                               "7.9GiB available  data ")


def test_missing_files_are_null_fields_not_errors(tmp_path):
    h = read("nothing-here", tmp_path)
    for key in ("board", "os", "hostname", "uptime_s", "cpu_temp_c", "throttled", "memory"):
        assert h[key] is None, key
    assert h["warnings"] == []
    assert render_health(h)[0] == "host       ?"


def test_data_dir_free_space_and_inodes_come_from_its_real_filesystem(tmp_path):
    data_dir = tmp_path / "not-created-yet" / "data"  # the nearest existing parent's filesystem
    h = HostHealth(data_dir, root=HOSTS / "pi5").read()
    st = os.statvfs(tmp_path)
    assert h["disk"]["path"] == str(data_dir)
    assert h["disk"]["total_bytes"] == st.f_blocks * st.f_frsize
    assert abs(h["disk"]["free_bytes"] - st.f_bavail * st.f_frsize) < 64 * 1024**2
    # past the threshold: a plain warning naming the directory
    full = HostHealth(data_dir, root=HOSTS / "pi5",
                      thresholds=Thresholds(disk_free_bytes=h["disk"]["total_bytes"] + 1)).read()
    share = full["disk"]["free_bytes"] / full["disk"]["total_bytes"]
    assert any(w.startswith("only ") and f"free ({share:.0%}) on the filesystem of {data_dir}: "
               "the buffer may not be able to store events" in w
               for w in full["warnings"]), full["warnings"]


def test_metrics_have_the_readings_and_leave_out_null_ones(tmp_path):
    registry = CollectorRegistry()
    registry.register(HealthCollector(HostHealth(tmp_path, root=HOSTS / "pi4"), "sea"))
    text = generate_latest(registry).decode()
    assert 'sea_host_info{board="Raspberry Pi 4 Model B Rev 1.4",hostname="store0042-pi",' \
           'os="Debian GNU/Linux 12 (bookworm)"} 1.0' in text
    assert "sea_host_cpu_temperature_celsius 82.3" in text
    assert 'sea_host_throttled{condition="under_voltage",when="since_boot"} 1.0' in text
    assert 'sea_host_throttled{condition="under_voltage",when="now"} 0.0' in text
    assert "sea_host_warnings 4.0" in text
    registry = CollectorRegistry()
    registry.register(HealthCollector(HostHealth(tmp_path, root=HOSTS / "nothing-here"), "sea"))
    text = generate_latest(registry).decode()
    assert "sea_host_cpu_temperature_celsius" not in text
    assert "sea_host_throttled" not in text
    assert "sea_host_data_dir_free_bytes" in text
