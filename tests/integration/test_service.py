"""The real `agent run` as systemd sees it: sd_notify, the watchdog, `agent status`, metrics."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import (
    AgentProcess,
    Broker,
    NotifySocket,
    Subscriber,
    agent_config,
    metrics_port,
    wait_until,
    write_jsonl,
)

from agent.clock import ClockWatch
from agent.config import load_config
from agent.runtime import Agent
from agent.testing import write_config

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


@pytest.fixture
def notify_socket():
    ns = NotifySocket()
    yield ns
    ns.close()


def replay(tmp: Path, *, count: int, types: tuple[str, ...] = ("eas.alarm",), rate: float = 0,
           ) -> dict:
    data = {"eas.alarm": {"direction": "out"}, "door.opened": {},
            "eas.people_count": {"in": 2, "out": 1}}
    rec = write_jsonl(tmp / "rec.jsonl", [{"type": t, "data": data[t]} for t in types])
    return {"replay1": {"driver": "replay", "file": str(rec), "rate": rate, "loop": True,
                        "count": count}}


def pings(messages: list[dict[str, str]]) -> int:
    return sum(1 for m in messages if m.get("WATCHDOG") == "1")


def test_ready_then_watchdog_pings_at_half_the_timeout_then_stopping(
        tmp_path, broker, agents, notify_socket):
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, replay(tmp_path, count=5)),
                         env={"NOTIFY_SOCKET": notify_socket.env,
                              "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    agents.append(agent)
    agent.start(wait_connected=True)

    ready = notify_socket.wait_for("READY")[-1]
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("store t1: ")
    wait_until(lambda: "pinging every 0.5 s" in agent.output(), 5, "the watchdog to be announced")

    window = notify_socket.collect(4.0)
    assert 3 <= pings(window) <= 12, window  # about 8; loose, the machine may be busy
    statuses = [ready["STATUS"]] + [m["STATUS"] for m in window if "STATUS" in m]

    def latest_status() -> str:
        statuses.extend(m["STATUS"] for m in notify_socket.collect(0.6) if "STATUS" in m)
        return statuses[-1]

    wait_until(lambda: "broker connected" in latest_status(), 10,
               "STATUS to show the broker connected")
    assert "1/1 devices up" in statuses[-1]

    assert agent.stop() == 0
    stopping = [m for m in notify_socket.pending() if "STOPPING" in m]
    assert stopping
    assert stopping[0]["STOPPING"] == "1"


def test_no_watchdog_ping_while_the_event_loop_is_stalled(tmp_path, broker, agents,
                                                          notify_socket):
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker),
                         env={"NOTIFY_SOCKET": notify_socket.env,
                              "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    agents.append(agent)
    agent.start()
    notify_socket.wait_for("READY")
    notify_socket.wait_for("WATCHDOG")  # it pings while healthy

    agent.proc.send_signal(signal.SIGUSR2)
    wait_until(lambda: "blocking the event loop" in agent.output(), 10, "the stall to begin")
    notify_socket.pending()  # whatever was sent before the stall began
    stalled = notify_socket.collect(3 * WATCHDOG_USEC / 1e6)
    assert pings(stalled) == 0, stalled
    assert agent.proc.poll() is None  # stalled, not dead: systemd's watchdog would kill it

    agent.proc.send_signal(signal.SIGABRT)  # what systemd sends when the watchdog expires
    assert agent.proc.wait(10) == -signal.SIGABRT
    # the journal then shows where the agent was stuck
    assert "Fatal Python error: Aborted" in agent.output()
    assert 'in _stall' in agent.output()


def test_agent_status_against_a_running_agent(tmp_path, broker, agents, subscriber):
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, replay(tmp_path, count=50)))
    agents.append(agent)
    agent.start(wait_connected=True)
    subscriber.wait_events(50, "eas.alarm")
    # agent.started, device.online and 50 alarms, each counted once its PUBACK is handled
    wait_until(lambda: json.loads(agent.run_cli("status", "--json").stdout)["broker"]
               ["published"] >= 52, 10, "every PUBACK to be counted")

    result = agent.run_cli("status")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "store t1  agent " in out
    assert "broker     127.0.0.1:" in out
    assert "connected" in out
    assert "buffer     " in out
    assert "replay1" in out
    assert "replay" in out
    published = int(out.split("published ")[1].split()[0])
    assert published >= 52
    rate = float(out.split("published ")[1].split("(")[1].split("/s)")[0])
    assert rate > 0

    status = json.loads(agent.run_cli("status", "--json").stdout)
    assert status["broker"]["rate_per_s"] > 0
    assert status["devices"]["replay1"]["online"] is True
    assert {"depth", "bytes", "oldest_age_s"} <= set(status["buffer"])
    assert status["uptime_s"] > 0
    assert status["version"]
    host = status["host"]
    assert host["hostname"] == socket.gethostname()
    assert host["disk"]["path"] == str(tmp_path / "data")
    assert f"host       {host['hostname']}" in out
    assert "data " in out.split("host       ")[1]  # free space on data_dir's filesystem

    broker.stop()
    wait_until(lambda: "DISCONNECTED" in agent.run_cli("status").stdout, 15,
               "status to show the broker down")
    assert agent.run_cli("status").returncode == 1  # running, but not healthy


def test_agent_status_exits_3_when_no_agent_runs(tmp_path):
    result = AgentProcess(tmp_path, agent_config(tmp_path, None)).run_cli("status")
    assert result.returncode == 3
    assert "not running" in result.stderr


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((f"store_edge_agent_{name}", tuple(sorted(labels.items()))))


def test_metrics_scrape_of_a_running_agent(tmp_path, broker, agents, subscriber):
    types = ("eas.alarm", "door.opened", "eas.people_count")
    agent = AgentProcess(tmp_path / "a", agent_config(
        tmp_path, broker, replay(tmp_path, count=30, types=types),
        metrics={"listen": "127.0.0.1:0"}))
    agents.append(agent)
    agent.start(wait_connected=True)
    port = wait_until(lambda: metrics_port(agent.output()), 10, "the metrics port in the log")
    subscriber.wait_events(10, "eas.people_count")
    wait_until(lambda: metric(_scrape(port), "events_published_total", device="replay1",
                              type="eas.people_count") == 10, 10, "published counts")

    # acknowledged events are deleted from the buffer in batches, every half second
    wait_until(lambda: metric(_scrape(port), "buffer_events") == 0, 10, "an empty buffer")
    samples = _scrape(port)
    for event_type in types:
        assert metric(samples, "events_emitted_total", device="replay1", type=event_type) == 10
        assert metric(samples, "events_published_total", device="replay1", type=event_type) == 10
    assert metric(samples, "events_emitted_total", device="agent", type="agent.started") == 1
    assert metric(samples, "device_up", device="replay1", driver="replay") == 1
    assert metric(samples, "broker_connected") == 1
    assert metric(samples, "broker_reconnects_total") == 0
    assert metric(samples, "buffer_oldest_age_seconds") == 0
    assert metric(samples, "publish_latency_seconds_count") >= 30
    assert metric(samples, "uptime_seconds") > 0
    assert metric(samples, "host_data_dir_free_bytes") > 0
    assert metric(samples, "host_memory_available_bytes") > 0
    assert metric(samples, "host_warnings") is not None

    broker.restart()
    wait_until(lambda: metric(_scrape(port), "broker_reconnects_total") == 1, 15,
               "the reconnect to be counted")
    assert agent.stop() == 0


def test_a_metrics_port_in_use_does_not_stop_the_agent(tmp_path, broker, agents):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = AgentProcess(tmp_path / "a", agent_config(
            tmp_path, broker, metrics={"listen": f"127.0.0.1:{port}"}))
        agents.append(agent)
        agent.start(wait_connected=True)
        assert f"metrics endpoint 127.0.0.1:{port} unavailable, running without it" in \
            agent.output()
        assert agent.run_cli("status").returncode == 0
        assert agent.stop() == 0


def dropped(samples: dict) -> float:
    return sum(v for (name, _), v in samples.items()
               if name == "store_edge_agent_events_dropped_total")


def test_dropped_events_are_counted_by_device_and_type(tmp_path, broker, agents):
    broker.stop()  # everything stays in a buffer far too small for it
    agent = AgentProcess(tmp_path / "a", agent_config(
        tmp_path, broker, replay(tmp_path, count=400, types=("eas.people_count", "eas.alarm")),
        buffer={"max_bytes": "40kB"}, metrics={"listen": "127.0.0.1:0"}))
    agents.append(agent)
    agent.start()
    port = wait_until(lambda: metrics_port(agent.output()), 10, "the metrics port in the log")
    wait_until(lambda: "driver finished" in agent.output(), 20, "the replay to finish")

    def dropped_agree() -> bool:  # the status and the metrics count the same drops
        status = json.loads(agent.run_cli("status", "--json").stdout)
        return dropped(_scrape(port)) == status["buffer"]["dropped"]["buffer_full"] > 0

    wait_until(dropped_agree, 10, "metrics and status to agree on drops")
    samples = _scrape(port)
    people = metric(samples, "events_dropped_total", device="replay1", type="eas.people_count",
                    reason="buffer_full")
    alarms = metric(samples, "events_dropped_total", device="replay1", type="eas.alarm",
                    reason="buffer_full") or 0
    assert people
    assert people > alarms
    assert metric(samples, "broker_connected") == 0
    assert 0 < metric(samples, "buffer_bytes") <= 40_000
    assert metric(samples, "buffer_oldest_age_seconds") > 0


async def test_clock_synced_is_emitted_once_the_clock_becomes_synchronised(
        tmp_path: Path, broker: Broker, subscriber: Subscriber):
    flag = tmp_path / "synchronized"  # stands in for /run/systemd/timesync/synchronized
    config = load_config(write_config(tmp_path / "agent.toml", agent_config(tmp_path, broker)))
    agent = Agent(config)
    agent.pipeline.clock = ClockWatch(refresh=0, probe=flag.exists)
    task = asyncio.create_task(agent.run())
    await asyncio.to_thread(subscriber.wait_events, 1, "agent.started")
    flag.touch()
    synced = await asyncio.to_thread(subscriber.wait_events, 1, "agent.clock_synced")
    agent.request_stop()
    assert await asyncio.wait_for(task, 20) == 0
    assert subscriber.events("agent.started")[0]["clocksynced"] is False
    assert synced[0]["clocksynced"] is True
    stopping = await asyncio.to_thread(subscriber.wait_events, 1, "agent.stopping")
    assert stopping[0]["clocksynced"] is True
    assert len(subscriber.events("agent.clock_synced")) == 1
