"""The readable form of the agent's status, for ``agent status``."""

from __future__ import annotations

from typing import Any

from agent.units import format_duration, format_size


def render_status(status: dict[str, Any]) -> str:
    """A few lines a technician can read at a glance: broker, buffer, each device."""
    broker = status["broker"]
    buffer = status["buffer"]
    lines = [
        f"store {status['storeid']}  agent {status['version']}  up "
        f"{format_duration(status['uptime_s'])}  config {status['config_hash']}",
        f"clock      {'NTP-synchronised' if status['clocksynced'] else 'NOT synchronised'}",
        f"broker     {broker['host']}  "
        + ("connected" if broker["connected"] else f"DISCONNECTED ({broker['last_error']})")
        + f"  published {broker['published']}  reconnects {broker['reconnects']}",
        f"buffer     {buffer['depth']} events, {format_size(buffer['bytes'])}"
        + (f", oldest {format_duration(buffer['oldest_age_s'])}" if buffer["oldest_age_s"] else "")
        + (f", dropped {buffer['dropped']}" if buffer["dropped"] else ""),
    ]
    if buffer.get("last_error"):
        lines.append(f"           buffer error: {buffer['last_error']}")
    lines.append("devices:")
    for dev_id, dev in sorted(status["devices"].items()):
        state = dev.get("state", {})
        if dev["online"]:
            health = "online"
        elif dev.get("finished"):
            health = "finished"
        else:
            health = f"OFFLINE ({state.get('reason', 'not connected yet')})"
        restarts = f"  restarts {dev['restarts']}" if dev.get("restarts") else ""
        lines.append(f"  {dev_id:<20} {dev['driver']:<12} {health}{restarts}")
    selftest = status.get("last_selftest")
    if selftest:
        lines.append(f"last self-test: {selftest}")
    return "\n".join(lines)
