"""The buffer's limits and recovery, and a broker with TLS and passwords, seen from the broker side."""

from __future__ import annotations

import json

from support import (
    AgentProcess,
    Broker,
    Subscriber,
    agent_config,
    make_tls,
    wait_until,
    write_jsonl,
)


def test_full_buffer_drops_lowest_priority_first_and_says_so(tmp_path, agents):
    # 1500 people counts (telemetry) and 50 alarms, into a 60 kB buffer while the broker is down.
    lines = [{"type": "eas.people_count", "data": {"in": i, "out": 0}} for i in range(1500)]
    lines[::30] = [{"type": "eas.alarm", "data": {"direction": "out", "level": i}}
                   for i in range(50)]
    rec = write_jsonl(tmp_path / "rec.jsonl", lines)
    broker = Broker(tmp_path / "broker", persistence=True).start()
    cfg = agent_config(tmp_path, broker, {"r1": {"driver": "replay", "file": str(rec), "rate": 0}},
                       buffer={"max_bytes": "60kB"})
    # Subscribed before the outage, in a session the broker keeps: the agent reconnects within
    # 100 ms of the broker's return and may publish before the subscriber is back.
    sub = Subscriber(broker, "retail/#", persistent=True)
    broker.stop()
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    try:
        agent.start()
        wait_until(lambda: "driver finished" in agent.output(), 20, "replay to finish")
        broker.start()
        wait_until(lambda: sub.events("agent.events_dropped"), 20, "agent.events_dropped")
        wait_until(lambda: len(sub.events("eas.alarm")) >= 50, 20, "every alarm")
        agent.stop()
        sub.sync()  # the people counts after the last alarm, and the last drop reports
        alarms = list({e["id"]: e for e in sub.events("eas.alarm")}.values())
        assert sorted(a["data"]["level"] for a in alarms) == list(range(50)), "an alarm was lost"
        # at least once: a duplicate (same id) after a reconnect is not a second event
        counts = list({e["id"]: e for e in sub.events("eas.people_count")}.values())
        assert 0 < len(counts) < 1450, "people counts should have been dropped, not alarms"
        reports = list({e["id"]: e for e in sub.events("agent.events_dropped")}.values())
        dropped = sum(r["data"]["count"] for r in reports)
        assert all(r["data"]["reason"] == "buffer_full" for r in reports)
        assert dropped == 1450 - len(counts)
        received = {e["seq"] for e in sub.events()}
        for r in reports:  # what the reports name as dropped never arrives
            ranges = r["data"].get("ranges", [[r["data"]["first_seq"], r["data"]["last_seq"]]])
            for first, last in ranges:
                assert not received & set(range(first, last + 1))
        # the oldest telemetry went first: what survived is the newest
        levels = [c["data"]["in"] for c in counts]
        assert min(levels) > 1500 - len(counts) - 100
    finally:
        sub.close()
        broker.stop()


def test_garbage_over_the_buffer_file_is_moved_aside_and_reported(tmp_path, broker, subscriber,
                                                                   agents):
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "door.opened", "data": {}}])
    cfg = agent_config(tmp_path, broker, {"r1": {"driver": "replay", "file": str(rec)}})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    agent.start()
    wait_until(lambda: subscriber.events("door.opened"), 10, "first run's event")
    agent.stop()
    last_seq = max(e["seq"] for e in subscriber.events())

    db = tmp_path / "data" / "buffer.db"
    db.write_bytes(b"\x00garbage, not SQLite\xff" * 500)
    agent.start()
    report = subscriber.wait_events(1, "agent.events_dropped")[0]
    wait_until(lambda: len(subscriber.events("door.opened")) >= 2, 10, "second run's event")
    agent.stop()

    assert report["data"]["reason"].startswith("buffer_corrupt")
    moved = list(db.parent.glob("buffer.db.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"\x00garbage")
    assert moved[0].name in report["data"]["reason"]
    assert "is corrupt" in agent.output() and "moved aside" in agent.output()
    # seqs continue above everything the lost file may have handed out: never reused
    second_run = [e for e in subscriber.events() if e["bootid"] == report["bootid"]]
    assert min(e["seq"] for e in second_run) > last_seq


def test_tls_and_password_wrong_then_corrected_loses_nothing(tmp_path, agents):
    tls = make_tls(tmp_path / "tls")
    broker = Broker(tmp_path / "broker", password={"store": "s3cret"}, tls=tls).start()
    secret = tmp_path / "mqtt.pass"
    secret.write_text("wrong-password\n")
    rec = write_jsonl(tmp_path / "rec.jsonl",
                      [{"type": "eas.alarm", "data": {"direction": "out"}}] * 20)
    cfg = agent_config(
        tmp_path, broker, {"r1": {"driver": "replay", "file": str(rec), "rate": 0}},
        mqtt={"tls": True, "ca_file": str(tls["ca"]), "username": "store",
              "password_file": str(secret), "auth_retry": "1s"},
    )
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    try:
        agent.start()
        wait_until(lambda: agent.output().count("refused the credentials") >= 2, 15,
                   "two refused attempts")
        log = agent.output()
        assert "user 'store'" in log and "mqtt.password_file" in log
        assert "wrong-password" not in log, "a secret reached the log"
        assert "unreachable" not in log, "an auth failure must not look like a network failure"

        # Subscribed first: the agent's next attempt (auth_retry 1 s) may come at once.
        sub = Subscriber(broker, "retail/#", username="store", password="s3cret",
                         tls_ca=tls["ca"])
        secret.write_text("s3cret\n")  # corrected: picked up on the next attempt, no restart
        try:
            wait_until(lambda: len(sub.events("eas.alarm")) >= 20, 15, "buffered alarms")
            agent.stop()
            seqs = sorted(e["seq"] for e in sub.events())
            assert seqs == list(range(1, max(seqs) + 1))
        finally:
            sub.close()
    finally:
        broker.stop()


def test_status_is_retained_and_availability_is_a_last_will(tmp_path, broker, subscriber, agents):
    agent = AgentProcess(tmp_path / "a", agent_config(tmp_path, broker))
    agents.append(agent)
    agent.start(wait_connected=True)
    wait_until(lambda: subscriber.payloads("retail/t1/agent/availability"), 10, "availability")
    assert subscriber.payloads("retail/t1/agent/availability")[-1] == b"online"
    status = json.loads(wait_until(lambda: subscriber.payloads("retail/t1/agent/status"), 10,
                                   "status")[-1])
    assert status["storeid"] == "t1" and "buffer" in status
    # the host's health too (this machine is no Pi: no board, no firmware flags)
    assert status["host"]["disk"]["path"] == str(tmp_path / "data")
    assert status["host"]["memory"]["total_bytes"] > 0
    assert status["host"]["throttled"] is None
    agent.kill()  # no clean goodbye: the broker publishes the last will
    wait_until(lambda: subscriber.payloads("retail/t1/agent/availability")[-1] == b"offline",
               90, "last will")
