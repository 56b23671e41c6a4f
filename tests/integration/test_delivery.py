"""Replay to broker: every accepted event arrives, in seq order, through outages and crashes."""

from __future__ import annotations

from pathlib import Path

from support import AgentProcess, Subscriber, agent_config, wait_until, write_jsonl

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
