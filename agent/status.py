"""The agent's status for people: ``agent status``, systemd's one-line STATUS, the publish rate."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.credentials import EXPIRY_WARNING_DAYS
from agent.health import render_health
from agent.units import format_duration, format_size

RATE_WINDOW = 60.0


class RateMeter:
    """Events per second over about the last minute, from a growing total read now and then."""

    def __init__(self, *, window: float = RATE_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])

    def rate(self, total: int) -> float:
        """Record ``total`` now; return the rate since the oldest sample still in the window."""
        now = self._clock()
        if now - self._samples[-1][0] >= 1.0:
            self._samples.append((now, total))
        # Keep one sample at least a window old as the base, so the rate spans the window.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()
        start, base = self._samples[0]
        return (total - base) / (now - start) if now > start else 0.0


def summary_line(status: dict[str, Any]) -> str:
    """One line for ``systemctl status`` (systemd's STATUS=): broker, devices, buffer, rate."""
    broker = status["broker"]
    devices = status["devices"].values()
    up = sum(1 for d in devices if d["online"] or d["finished"])
    buffer = status["buffer"]
    return (
        f"store {status['storeid']}: broker "
        + ("connected" if broker["connected"] else "DISCONNECTED")
        + f", {up}/{len(devices)} devices up, {buffer['depth']} events buffered"
        + (f" (oldest {format_duration(buffer['oldest_age_s'])})" if buffer["oldest_age_s"] else "")
        + f", {broker.get('rate_per_s', 0.0):.1f} events/s published"
        + _host_warnings(status)
    )


def _host_warnings(status: dict[str, Any]) -> str:
    """``; HOST: <first warning> (+N more)`` when the host's health has warnings."""
    warnings = (status.get("host") or {}).get("warnings") or []
    if not warnings:
        return ""
    more = f" (+{len(warnings) - 1} more: agent status)" if len(warnings) > 1 else ""
    return f"; HOST: {warnings[0].split(':')[0]}{more}"


def problems(status: dict[str, Any]) -> list[str]:
    """What needs a technician's attention; ``agent status`` exits 1 when there is any."""
    out = [] if status["broker"]["connected"] else ["broker disconnected"]
    out += [f"device {dev_id} offline" for dev_id, dev in sorted(status["devices"].items())
            if not (dev["online"] or dev.get("finished"))]
    out += [f"exit {name}: last self-test {run['result'].upper()}"
            for name, run in sorted((status.get("last_selftest") or {}).items())
            if run.get("result") not in (None, "pass")]
    out += [f"output {name} failing" for name, o in sorted((status.get("outputs") or {}).items())
            if o.get("last_error")]
    out += [f"output {name}: {o['dropped']} events dropped before delivery"
            for name, o in sorted((status.get("outputs") or {}).items()) if o.get("dropped")]
    return out


def format_moment(value: Any) -> str:
    """A moment of the status (epoch seconds or RFC 3339) as local time, one format for all:
    ``2026-12-03 06:15:00``; anything else as it came."""
    try:
        if isinstance(value, int | float):
            moment = datetime.fromtimestamp(value).astimezone()
        else:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone()
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def render_status(status: dict[str, Any]) -> str:
    """A few lines a technician can read at a glance: broker, buffer, each device."""
    broker = status["broker"]
    buffer = status["buffer"]
    lines = [
        f"store {status['storeid']}  agent {status['version']}  up "
        f"{format_duration(status['uptime_s'])}  config {status['config_hash']}",
        f"clock      {format_moment(time.time())} {time.strftime('%Z')} (times below are local); "
        + ("NTP-synchronised" if status["clocksynced"] else "NOT NTP-synchronised: events carry "
           "clocksynced=false (`agent tail` marks them clock?) and their time may be wrong"),
        f"broker     {broker['host']}  "
        + ("connected" if broker["connected"] else f"DISCONNECTED ({broker['last_error']})")
        + f"  published {broker['published']} ({broker.get('rate_per_s', 0.0):.1f}/s)"
        + f"  reconnects {broker['reconnects']}",
        *_render_broker_extras(broker),
        f"buffer     {buffer['depth']} events, {format_size(buffer['bytes'])}"
        + (f", oldest {format_duration(buffer['oldest_age_s'])}" if buffer["oldest_age_s"] else "")
        + (f", dropped {buffer['dropped']}" if buffer["dropped"] else ""),
    ]
    if buffer.get("storage", "ok") != "ok":
        lines.append(f"           CANNOT WRITE: {buffer['storage']}; {buffer.get('held', 0)} "
                     "events held in memory until it can")
    elif buffer.get("last_error"):
        lines.append(f"           buffer error: {buffer['last_error']}")
    if web := status.get("web"):
        lines.append(f"web        {web['url']}  certificate SHA-256 {web['fingerprint_sha256']}"
                     + (" (self-signed)" if web.get("self_signed") else "")
                     + f"  {web.get('sessions', 0)} paired, {web.get('pages', 0)} pages open")
    factories = sorted({str(f) for d in status["devices"].values()
                        if (f := d.get("state", {}).get("pin_factory"))})
    if factories:
        lines.append(f"gpio       pin factory {', '.join(factories)}")
    if status.get("host"):
        lines += render_health(status["host"])
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
    lines += _render_outputs(status.get("outputs") or {})
    lines += _render_selftests(status.get("last_selftest") or {},
                               status.get("selftest_schedule") or {})
    attention = problems(status)
    lines.append(f"attention: {'; '.join(attention)}" if attention else "all well")
    if host_warnings := len((status.get("host") or {}).get("warnings") or []):
        # not a reason for exit 1: a hot Pi still delivers; the WARNING lines above say what
        lines[-1] += f"; host: {host_warnings} warning{'s' if host_warnings > 1 else ''} above"
    return "\n".join(lines)


def _render_broker_extras(broker: dict[str, Any]) -> list[str]:
    """What the broker's access control refused, failover (a broker other than the preferred
    one) and the client certificate's expiry."""
    lines = []
    if broker.get("refusal"):
        lines.append(f"           REFUSED: {broker['refusal']}")
    brokers = broker.get("brokers") or []
    if len(brokers) > 1 and broker["host"] != brokers[0]:
        lines.append(f"           failed over: on {broker['host']}, preferred {brokers[0]} "
                     "(back to it when this connection drops)")
    days = broker.get("cert_days_left")
    if days is not None:
        warn = "EXPIRED" if days < 0 else "EXPIRES SOON" if days < EXPIRY_WARNING_DAYS else ""
        lines.append(f"           client certificate: {days:.0f} days left" +
                     (f" ({warn}: replace mqtt.cert_file)" if warn else ""))
    return lines


def _render_outputs(outputs: dict[str, Any]) -> list[str]:
    """One line per VMS/HTTP output: reachable or its last error, lag, counts, a drop."""
    if not outputs:
        return []
    lines = ["outputs:"]
    for name, out in sorted(outputs.items()):
        health = "connected" if out["connected"] else (
            f"FAILING ({out['last_error']})" if out.get("last_error") else "not connected yet")
        lag = f"  lag {out['lag_events']} events"
        if out.get("lag_s"):
            lag += f" ({format_duration(out['lag_s'])})"
        text = (f"  {name:<20} {out['kind']:<20} {out['target']}  {health}{lag}  "
                f"delivered {out['delivered']}")
        if out.get("dropped"):
            drop = out.get("last_drop") or {}
            text += (f"  DROPPED {out['dropped']} (last: seq {drop.get('first_seq')}.."
                     f"{drop.get('last_seq')}, {drop.get('reason')})")
        lines.append(text)
    return lines


def _render_selftests(last: dict[str, Any], schedule: dict[str, Any]) -> list[str]:
    """One line per exit: its last self-test, a test running now, the next scheduled run."""
    names = sorted(set(last) | set(schedule))
    if not names:
        return []
    lines = ["self-tests:"]
    for name in names:
        run, plan = last.get(name, {}), schedule.get(name, {})
        if run.get("result"):
            text = (f"{run['result'].upper()} {format_moment(run.get('finished', ''))} "
                    f"({run.get('trigger')}): "
                    f"{run.get('summary', '')}")
        else:
            text = "never run"
        if run.get("running"):
            text += f"; running now ({run['running']})"
        if plan.get("postponed"):
            text += f"; postponed: {plan['postponed']['reason']}"
        if plan.get("next"):
            text += f"; next {format_moment(plan['next'])} ({plan['schedule']})"
        lines.append(f"  {name:<20} {text}")
    return lines
