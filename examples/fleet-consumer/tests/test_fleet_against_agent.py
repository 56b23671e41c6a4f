"""The consumer against the real agent and a real mosquitto: crashes, drops, exit health."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from fleet_consumer import Fleet, FleetClient
from support import AgentProcess, Subscriber, agent_config, wait_until, write_jsonl
from test_selftest import exit1

FLEET_BIN = str(Path(sys.executable).with_name("fleet-consumer"))


def feed(tmp: Path, count: int, **replay: object) -> dict:
    """People counts with an alarm every 30th line: in a 60 kB buffer the alarms (and the drop
    reports, as important) fit, and only people counts are dropped."""
    lines = [{"type": "eas.people_count", "data": {"in": i, "out": 0}} for i in range(count)]
    lines[::30] = [{"type": "eas.alarm", "data": {"direction": "out", "level": i}}
                   for i in range(len(lines[::30]))]
    rec = write_jsonl(tmp / "rec.jsonl", lines)
    return {"r1": {"driver": "replay", "file": str(rec), "rate": 0, **replay}}


def last_seq(client: FleetClient) -> int:
    return int(client.read(lambda f: f.stores["t1"].seq.high if "t1" in f.stores else 0))


def delivered_in_full(client: FleetClient, sub: Subscriber) -> int:
    """Wait until the consumer has what an independent subscriber has; the last seq."""
    sub.sync()
    high = max(e["seq"] for e in sub.events())
    wait_until(lambda: last_seq(client) == high, 15, f"the consumer to reach seq {high}")
    return high


def test_a_kill_9_storm_gives_zero_false_gaps(tmp_path, persistent_broker, agent_processes):
    broker = persistent_broker
    client = FleetClient(Fleet(), broker.host, broker.port, client_id="fleet-storm",
                         group="fleet").start()
    assert client.shared  # mosquitto offers shared subscriptions: the events come through one
    sub = Subscriber(broker, "retail/#")
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, feed(tmp_path, 3000)))
    agent_processes.append(agent)
    rng = random.Random(13)
    lived = 1                                     # the last run, which finishes the replay
    for kill in range(8):
        agent.start()
        before, more = last_seq(client), rng.choice([0, 20, 150, 400])
        lived += bool(more)
        if more:
            wait_until(lambda b=before, m=more: last_seq(client) >= b + m, 20,
                       f"{more} more events before kill {kill + 1}")
        agent.kill()
    agent.start()
    wait_until(lambda: "driver finished" in agent.output(), 30, "the last replay to finish")
    assert agent.stop() == 0
    high = delivered_in_full(client, sub)

    (row,) = client.rows(grace=0)
    assert row["gap_ranges"] == [] and row["dropped"] == 0
    assert row["events"] == high > 3000           # every seq once, across the runs
    # A run killed right after its start line may die before it commits anything: then no
    # event carries its bootid. The consumer knows every boot the broker saw, and at least
    # every run that lived long enough to publish.
    boots = client.read(lambda f: set(f.stores["t1"].bootids))
    assert boots == {e["bootid"] for e in sub.events()}
    assert len(boots) >= lived
    client.stop()
    sub.close()


def test_a_real_buffer_full_drop_is_reported_as_covered(tmp_path, persistent_broker,
                                                        agent_processes):
    broker = persistent_broker
    client = FleetClient(Fleet(), broker.host, broker.port, client_id="fleet-drop").start()
    sub = Subscriber(broker, "retail/#", persistent=True)
    broker.stop()  # the store is cut off: its buffer fills and drops the people counts
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, feed(tmp_path, 1500),
                                                      buffer={"max_bytes": "60kB"}))
    agent_processes.append(agent)
    agent.start()
    wait_until(lambda: "driver finished" in agent.output(), 20, "the replay to finish")
    broker.start()
    wait_until(lambda: sub.events("agent.events_dropped"), 20, "agent.events_dropped")
    assert agent.stop() == 0
    high = delivered_in_full(client, sub)

    # what never arrived, by an independent subscriber: the consumer must account for all of it
    lost = set(range(1, high + 1)) - {e["seq"] for e in sub.events()}
    (row,) = client.rows(grace=0)
    why = (f"lost {len(lost)} of {high}; reports {[r['seq'] for r in sub.events('agent.events_dropped')]}: "
           f"{[r['data'] for r in sub.events('agent.events_dropped')]}; bootids "
           f"{sorted({e['bootid'] for e in sub.events()})}; consumer {row}")
    assert row["dropped"] == len(lost) > 1000, why
    assert row["gap_ranges"] == [], why
    client.stop()
    sub.close()


def test_the_fleet_table_shows_exit_health_from_the_retained_report(tmp_path, persistent_broker,
                                                                   agent_processes):
    broker = persistent_broker
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, exit1(), exits={
        "exit1": {"eas": "exit1-eas", "door": "exit1-door", "test_tag": "exit1-testtag",
                  "alarm_within": "1s"}}))
    agent_processes.append(agent)
    agent.start(wait_connected=True)
    result = agent.run_cli("selftest", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = json.loads(result.stdout)

    # a consumer that starts later learns the exit's health from the retained report
    table = subprocess.run([FLEET_BIN, "--host", broker.host, "--port", str(broker.port),
                            "--once", "2", "--client-id", "fleet-table"],
                           capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stdout + table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:8] == ["STORE", "AGENT", "EVENTS", "DUPS", "GAPS", "DROPPED",
                                  "ALARMS", "EXIT"]
    assert row.split()[:2] == ["t1", "online"]
    assert row.split()[-3:] == ["exit1", "PASS", report["finished"]]
    assert agent.stop() == 0
