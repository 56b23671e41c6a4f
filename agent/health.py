"""The host's health: board, OS, temperature, the Pi firmware's throttling flags, disk, memory.

Read from procfs and sysfs (``root`` lets the tests use a fake tree of files copied from real
Pis). A file that is missing, as on a machine that is not a Pi, gives a null field, never an
error. Each reading has a threshold and a warning a technician can act on. The Prometheus
gauges of these readings are ``agent.metrics.HealthCollector`` (prometheus_client is loaded only
with ``[metrics]`` on).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.units import format_duration, format_size

__all__ = ["FLAGS", "HostHealth", "Thresholds", "render_health"]

THROTTLED_FILES = (
    "sys/devices/platform/soc/soc:firmware/get_throttled",
    "sys/devices/platform/soc:firmware/get_throttled",
)
"""The firmware's ``get_throttled`` bits (what ``vcgencmd get_throttled`` prints), as hex, where
the kernel has this file (the Pi 4 and older). vcgencmd itself needs /dev/vcio, which the
service unit does not allow."""
HWMON = "sys/class/hwmon/hwmon*"
"""Else the firmware's hwmon device (``name`` ``rpi_volt``, the Pi 5 too): ``in0_lcrit_alarm``
is 1 while the supply is under-voltage; it has no other flag and no "since boot"."""

FLAGS = {
    "under_voltage": (0, 16, "under-voltage {when}: check the power supply (the official 5.1 V "
                      "supply: 3 A for a Pi 4, 5 A for a Pi 5) and its cable; it risks the SD card"),
    "freq_capped": (1, 17, "CPU frequency capped {when} (under-voltage or heat)"),
    "throttled": (2, 18, "CPU throttled {when}: too hot or under-voltage; events may be late"),
    "soft_temp_limit": (3, 19, "soft temperature limit reached {when}: give the Pi air or a "
                        "heatsink/fan"),
}
"""Flag name -> (bit now, bit since boot, warning). The bits are the firmware's own."""


@dataclass(frozen=True)
class Thresholds:
    """Where a reading becomes a warning."""

    cpu_temp_c: float = 80.0
    """The Pi 4 starts throttling at 80 °C, the Pi 5 at 85 °C."""
    disk_free_ratio: float = 0.10
    disk_free_bytes: int = 512 * 1024**2
    inodes_free_ratio: float = 0.05
    memory_available_ratio: float = 0.10


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except (OSError, ValueError):
        return None


def _float(text: str | None, scale: float = 1.0) -> float | None:
    try:
        return round(float(text.split()[0]) / scale, 1) if text else None
    except (ValueError, IndexError):
        return None


class HostHealth:
    """Reads the host's health; ``read()`` is cheap (a dozen small files and one statvfs)."""

    def __init__(self, data_dir: Path, *, root: Path = Path("/"),
                 thresholds: Thresholds = Thresholds()) -> None:
        self.data_dir = data_dir
        self.root = root
        self.thresholds = thresholds

    def _file(self, relative: str) -> str | None:
        return _read(self.root / relative)

    def board(self) -> str | None:
        """``/proc/device-tree/model``: "Raspberry Pi 4 Model B Rev 1.4" (NUL-terminated)."""
        text = self._file("proc/device-tree/model")
        return text.rstrip("\x00\n ") or None if text else None

    def os_name(self) -> str | None:
        """PRETTY_NAME of ``/etc/os-release``."""
        for line in (self._file("etc/os-release") or "").splitlines():
            key, _, value = line.partition("=")
            if key == "PRETTY_NAME":
                return value.strip().strip('"') or None
        return None

    def cpu_temp_c(self) -> float | None:
        """The CPU's thermal zone (type ``cpu-thermal`` on a Pi), else zone 0, in °C."""
        zones = sorted(glob.glob(str(self.root / "sys/class/thermal/thermal_zone*")))
        for zone in zones:
            if (_read(Path(zone) / "type") or "").strip() in ("cpu-thermal", "x86_pkg_temp"):
                return _float(_read(Path(zone) / "temp"), 1000)
        return _float(_read(Path(zones[0]) / "temp"), 1000) if zones else None

    def throttled(self) -> dict[str, Any] | None:
        """The firmware's flags: ``{"raw": "0x50005", "now": [...], "since_boot": [...]}``; from
        the hwmon device only ``under_voltage`` now, with ``raw`` and ``since_boot`` null."""
        for pattern in THROTTLED_FILES:
            for path in sorted(glob.glob(str(self.root / pattern))):
                try:
                    bits = int((_read(Path(path)) or "").strip(), 16)
                except ValueError:
                    continue
                return {"raw": f"0x{bits:x}",
                        "now": [n for n, (now, _, _) in FLAGS.items() if bits >> now & 1],
                        "since_boot": [n for n, (_, ever, _) in FLAGS.items() if bits >> ever & 1]}
        for hwmon in sorted(glob.glob(str(self.root / HWMON))):
            if (_read(Path(hwmon) / "name") or "").strip() != "rpi_volt":
                continue
            alarm = (_read(Path(hwmon) / "in0_lcrit_alarm") or "").strip()
            if alarm in ("0", "1"):
                return {"raw": None, "now": ["under_voltage"] if alarm == "1" else [],
                        "since_boot": None}
        return None

    def memory(self) -> dict[str, int] | None:
        """``MemTotal`` and ``MemAvailable`` of ``/proc/meminfo``, in bytes."""
        found = {}
        for line in (self._file("proc/meminfo") or "").splitlines():
            key, _, value = line.partition(":")
            if key in ("MemTotal", "MemAvailable") and value.split():
                found[key] = int(value.split()[0]) * 1024
        if len(found) < 2:
            return None
        return {"total_bytes": found["MemTotal"], "available_bytes": found["MemAvailable"]}

    def disk(self) -> dict[str, Any] | None:
        """Free space and inodes of the filesystem holding ``data_dir`` (or its nearest
        existing parent)."""
        path = self.data_dir
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            st = os.statvfs(path)
        except OSError:
            return None
        return {"path": str(self.data_dir), "total_bytes": st.f_blocks * st.f_frsize,
                "free_bytes": st.f_bavail * st.f_frsize, "total_inodes": st.f_files,
                "free_inodes": st.f_favail}

    def read(self) -> dict[str, Any]:
        """Every reading (null where this machine does not have it) and the warnings."""
        health: dict[str, Any] = {
            "board": self.board(),
            "os": self.os_name(),
            "hostname": (self._file("proc/sys/kernel/hostname") or "").strip() or None,
            "uptime_s": _float(self._file("proc/uptime")),
            "cpu_temp_c": self.cpu_temp_c(),
            "throttled": self.throttled(),
            "disk": self.disk(),
            "memory": self.memory(),
        }
        health["warnings"] = self.warnings(health)
        return health

    def warnings(self, health: dict[str, Any]) -> list[str]:
        """Plain sentences for what is past its threshold."""
        t = self.thresholds
        out = []
        temp = health["cpu_temp_c"]
        if temp is not None and temp >= t.cpu_temp_c:
            out.append(f"CPU at {temp:.0f} °C (threshold {t.cpu_temp_c:.0f} °C): the Pi slows "
                       "down when hot; give it air or a heatsink/fan")
        flags = health["throttled"]
        if flags:
            for name, (_, _, text) in FLAGS.items():
                if name in flags["now"]:
                    out.append(text.format(when="now"))
                elif name in (flags["since_boot"] or ()):
                    out.append(text.format(when="since boot"))
        disk = health["disk"]
        if disk and disk["total_bytes"]:
            free, total = disk["free_bytes"], disk["total_bytes"]
            if free < t.disk_free_bytes or free / total < t.disk_free_ratio:
                out.append(f"only {format_size(free)} free ({free / total:.0%}) on the filesystem "
                           f"of {disk['path']}: the buffer may not be able to store events; "
                           "free space or use a larger SD card")
            if disk["total_inodes"] and disk["free_inodes"] / disk["total_inodes"] < \
                    t.inodes_free_ratio:
                out.append(f"only {disk['free_inodes']} inodes free on the filesystem of "
                           f"{disk['path']}: too many small files (old snapshots, logs?)")
        mem = health["memory"]
        if mem and mem["available_bytes"] / mem["total_bytes"] < t.memory_available_ratio:
            out.append(f"memory low: {format_size(mem['available_bytes'])} of "
                       f"{format_size(mem['total_bytes'])} available")
        return out


def render_health(host: dict[str, Any]) -> list[str]:
    """The ``host`` lines of ``agent status``."""
    unknown = "?"
    first = "  ".join(str(v) for v in (host.get("hostname"), host.get("board"), host.get("os"))
                      if v)
    if host.get("uptime_s") is not None:
        first += f"  up {format_duration(host['uptime_s'])}"
    parts = []
    if host.get("cpu_temp_c") is not None:
        parts.append(f"CPU {host['cpu_temp_c']:.1f} °C")
    if (flags := host.get("throttled")) is not None:
        parts.append(f"throttled {flags['raw']}" if flags["raw"] is not None else
                     "UNDER-VOLTAGE" if "under_voltage" in flags["now"] else "power ok")
    if mem := host.get("memory"):
        parts.append(f"memory {format_size(mem['available_bytes'])} of "
                     f"{format_size(mem['total_bytes'])} available")
    if disk := host.get("disk"):
        parts.append(f"data {format_size(disk['free_bytes'])} free"
                     + (f", {disk['free_inodes'] / disk['total_inodes']:.0%} of inodes"
                        if disk["total_inodes"] else ""))
    lines = [f"host       {first or unknown}"]
    if parts:
        lines.append(f"           {'  '.join(parts)}")
    lines += [f"           WARNING {w}" for w in host.get("warnings", [])]
    return lines
