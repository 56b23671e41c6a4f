"""Replay to broker: every accepted event arrives, in seq order, through outages and crashes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from support import AgentProcess, Broker, Subscriber, agent_config, wait_until, write_jsonl

from agent.events import parse_envelope


def replay_device(tmp: Path, count: int, *, rate: float = 0, loop: bool = True) -> dict:
    rec = write_jsonl(tmp / "rec.jsonl", [
        {"type": "eas.alarm", "data": {"direction": "out", "level": 2}},
        {"type": "door.opened", "data": {}},
        {"type": "eas.people_count", "data": {"in": 3, "out": 1}},
    ])
    return {"replay1": {"driver": "replay", "file": str(rec), "rate": rate, "loop": loop,
                        "count": count}}


def replayed(sub: Subscriber) -> list[dict]:
    return [e for e in sub.events()
            if e["deviceid"] == "replay1" and not e["type"].startswith("device.")]


def test_replay_delivers_n_valid_envelopes_in_seq_order(tmp_path, broker, subscriber, agents):
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, replay_device(tmp_path, 300)))
    agents.append(agent)
    agent.start()
    wait_until(lambda: len(replayed(subscriber)) >= 300, 20, "300 replayed events")
    assert agent.stop() == 0
    subscriber.sync()  # agent.stopping and the offline availability, published while stopping

    events = subscriber.events()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "seq must be 1..N in publish order"
    for msg in subscriber.messages:
        if "/events/" in msg.topic:
            env = parse_envelope(msg.payload)  # raises on an invalid envelope
            assert msg.topic == f"retail/t1/events/{env.deviceid}/{env.type}"
    types = [e["type"] for e in events]
    assert types[0] == "agent.started"
    assert types[-1] == "agent.stopping"
    assert len(replayed(subscriber)) == 300
    assert subscriber.payloads("retail/t1/agent/availability")[-1] == b"offline"


def test_buffered_events_survive_broker_outage_and_sigkill(tmp_path, broker, agents):
    broker.stop()
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker, replay_device(tmp_path, 500)))
    agents.append(agent)
    agent.start()
    wait_until(lambda: "driver finished" in agent.output(), 20, "replay to finish")
    agent.kill()  # holding 500 events, broker down

    broker.start()
    sub = Subscriber(broker, "retail/#")
    try:
        agent.start()
        wait_until(lambda: len(replayed(sub)) >= 500, 20, "buffered events after restart")
        agent.stop()
        seqs = [e["seq"] for e in sub.events()]
        assert seqs == list(range(1, max(seqs) + 1))
    finally:
        sub.close()


def test_sigkill_under_load_repeatedly_loses_and_reuses_no_seq(tmp_path, broker, subscriber, agents):
    cfg = agent_config(tmp_path, broker, replay_device(tmp_path, 3000))
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    for _ in range(3):
        agent.start()
        before = len(subscriber.events())
        wait_until(lambda b=before: len(subscriber.events()) > b + 200, 20, "publishing under load")
        agent.kill()
    agent.start()
    wait_until(lambda: "driver finished" in agent.output(), 30, "last replay to finish")
    assert agent.stop() == 0

    events = subscriber.events()
    by_seq: dict[int, set[str]] = {}
    for e in events:
        by_seq.setdefault(e["seq"], set()).add(e["id"])
    assert sorted(by_seq) == list(range(1, max(by_seq) + 1)), "a seq is missing"
    assert all(len(ids) == 1 for ids in by_seq.values()), "a seq was reused with another id"
    assert len(events) >= len(by_seq)  # duplicates after a crash are allowed, with the same id
    # Delivery is in seq order: each seq is first seen after every lower one. (A restarted
    # agent re-sends what it had not yet deleted, so duplicates step back; they are allowed.)
    seen: set[int] = set()
    first_seen = [e["seq"] for e in events if e["seq"] not in seen and not seen.add(e["seq"])]
    assert first_seen == sorted(first_seen)


def test_delivery_resumes_by_itself_after_broker_restart(tmp_path, agents):
    broker = Broker(tmp_path / "broker", persistence=True).start()
    sub = Subscriber(broker, "retail/#", persistent=True)
    agent = AgentProcess(tmp_path / "a", agent_config(
        tmp_path, broker, replay_device(tmp_path, 1200, rate=300)))
    agents.append(agent)
    try:
        agent.start(wait_connected=True)
        wait_until(lambda: len(replayed(sub)) > 200, 20, "first events")
        broker.restart()  # the persistent session keeps what the subscriber has not yet got
        wait_until(lambda: len(replayed(sub)) >= 1200, 30, "every event after the restart")
        agent.stop()
        assert "connection to broker 127.0.0.1" in agent.output()
        seqs = sorted({e["seq"] for e in sub.events()})
        assert seqs == list(range(1, max(seqs) + 1))
    finally:
        sub.close()
        broker.stop()


def test_concurrent_publishes_from_every_thread_keep_the_connection_and_the_order(
        tmp_path, broker, subscriber, agents):
    # Events go out from the publisher while remote requests are answered from the event loop
    # and states are retained from the drivers: with a small window, paho would queue events
    # behind our back and write to the socket from several threads at once.
    cfg = agent_config(tmp_path, broker, replay_device(tmp_path, 4000, rate=2000),
                       mqtt={"max_inflight": 4})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start(wait_connected=True)
    requester = Subscriber(broker, "retail/t1/agent/response/#")
    try:
        for i in range(400):
            requester.client.publish("retail/t1/agent/request/status",
                                     json.dumps({"id": f"r{i}-" + "x" * (i % 7) * 20}), qos=1)
        wait_until(lambda: len(replayed(subscriber)) >= 4000, 60, "4000 replayed events")
        assert agent.stop() == 0
    finally:
        requester.close()
    subscriber.sync()
    seqs = [e["seq"] for e in subscriber.events()]
    assert seqs == list(range(1, len(seqs) + 1)), \
        f"out of order: {next((a, b) for a, b in itertools.pairwise(seqs) if b != a + 1)}"
    out = agent.output()
    assert "disconnected from broker" not in out and "connection to broker" not in out, out[-2000:]
