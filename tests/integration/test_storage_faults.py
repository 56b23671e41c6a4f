"""The buffer under a Pi's real storage faults: a full disk, a damaged WAL, a power cut, a crash storm."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import AgentProcess, Broker, Subscriber, agent_config, wait_until, write_jsonl

WAL_HEADER, FRAME_HEADER = 32, 24


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs: a filesystem that really fills up (needs root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Write a filler file that leaves ``leave`` bytes free on ``disk``."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with filler.open("wb") as fh:
        fh.truncate(0)
        os.posix_fallocate(fh.fileno(), 0, max(free - leave, 0))
    return filler


def mixed_recording(tmp: Path) -> Path:
    lines = [{"type": "eas.people_count", "data": {"in": 1, "out": 0, "interval_s": 60}}] * 19
    lines.append({"type": "eas.alarm", "data": {"direction": "out", "level": 2}})
    return write_jsonl(tmp / "rec.jsonl", lines)


def agent_events(sub: Subscriber, device: str = "replay1") -> list[dict]:
    return [e for e in sub.events() if e["deviceid"] == device and not e["type"].startswith("device.")]


def assert_no_unannounced_gap(events: list[dict]) -> None:
    """Every seq up to the highest arrived, or is named by an agent.events_dropped."""
    seen = {e["seq"] for e in events}
    covered: set[int] = set()
    for e in events:
        if e["type"] == "agent.events_dropped" and e["data"]["last_seq"] is not None:
            d = e["data"]
            first = d["first_seq"] if d["first_seq"] is not None else 1
            for lo, hi in d.get("ranges") or [[first, d["last_seq"]]]:
                covered |= set(range(lo, hi + 1))
    missing = set(range(1, max(seen) + 1)) - seen - covered
    assert not missing, f"unannounced gap: {sorted(missing)[:20]}"


@pytest.mark.slow
def test_a_full_disk_holds_events_and_delivers_them_all_once_the_broker_frees_space(
        tmp_path, small_disk, agents):
    broker = Broker(tmp_path / "broker", persistence=True).start()
    sub = Subscriber(broker, "retail/#", persistent=True)
    broker.stop()
    total = 12_000
    cfg = agent_config(tmp_path, broker, {"replay1": {
        "driver": "replay", "file": str(mixed_recording(tmp_path)), "rate": 1500, "loop": True,
        "count": total}}, buffer={"reserve": "1MiB", "hold_max": 3000})
    cfg["agent"]["data_dir"] = str(small_disk / "data")
    fill(small_disk, 4 * 1024**2)  # 4 MiB left for the buffer, its WAL and the reserve
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    try:
        agent.start()
        wait_until(lambda: "cannot be written: the disk is full" in agent.output(), 30,
                   "the disk to fill up")
        status = agent.run_cli("status", "--json")  # exit 1: the broker is down
        assert '"storage": "the disk is full' in status.stdout, status.stdout + status.stderr
        wait_until(lambda: "driver finished" in agent.output(), 30, "the replay to finish")
        # The broker returns while the disk is still full: publishing and deleting frees
        # pages, and the held events are committed into them.
        broker.start()
        wait_until(lambda: "can be written again" in agent.output(), 60, "commits to resume")

        def accounted() -> int:
            events = sub.events()
            dropped = sum(e["data"]["count"] or 0 for e in events
                          if e["type"] == "agent.events_dropped")
            return len({e["id"] for e in agent_events(sub)}) + dropped

        wait_until(lambda: accounted() >= total, 90, f"{total} events delivered or reported")
        assert agent.stop() == 0
        sub.sync()
    finally:
        sub.close()
        broker.stop()
    out = agent.output()
    assert "Traceback" not in out, out[-3000:]
    assert "corrupt" not in out
    events = sub.events()
    assert_no_unannounced_gap(events)
    alarms = [e for e in agent_events(sub) if e["type"] == "eas.alarm"]
    assert len({a["id"] for a in alarms}) == total // 20, "an alarm was dropped for telemetry"
    reports = [e["data"] for e in events if e["type"] == "agent.events_dropped"]
    for r in reports:
        assert r["reason"].startswith("hold_full: the disk is full"), r
        assert r["first_seq"] is None and r["last_seq"] is None and r["count"] > 0
    first_seen: list[int] = []
    seen: set[int] = set()
    for e in events:
        if e["seq"] not in seen:
            seen.add(e["seq"])
            first_seen.append(e["seq"])
    assert first_seen == sorted(first_seen)


def _buffer_with_backlog(tmp_path: Path, broker: Broker, agents: list, count: int,
                         **buffer: str) -> tuple[AgentProcess, int]:
    """An agent that committed ``count`` replayed events while the broker is down, then was
    killed with -9; returns it and the highest seq it committed."""
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "door.opened", "data": {}}])
    # A burst, then a trickle of one-event commits: the last commits are still in the WAL,
    # not yet checkpointed into the database, as in a store between two checkpoints.
    cfg = agent_config(tmp_path, broker, {
        "replay1": {"driver": "replay", "file": str(rec), "rate": 0, "loop": True,
                    "count": count},
        "trickle": {"driver": "replay", "file": str(rec), "rate": 50, "loop": True,
                    "count": 30, "start_delay": "3s"}},
        buffer=buffer)
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    broker.stop()
    agent.start()
    wait_until(lambda: agent.output().count("driver finished") == 2, 30, "the replays to finish")
    status = json.loads(agent.run_cli("status", "--json").stdout)
    high = status["buffer"]["next_seq"] - 1
    assert high >= count + 31  # agent.started, the replays, device.online
    agent.kill()
    return agent, high


def page_size(wal: bytes) -> int:
    return int.from_bytes(wal[8:12], "big")


def _frames(wal: bytes) -> list[int]:
    """Offsets of the WAL's live frames (those with the header's salts)."""
    salts, page = wal[16:24], page_size(wal)
    out = []
    for off in range(WAL_HEADER, len(wal) - FRAME_HEADER - page + 1, FRAME_HEADER + page):
        if wal[off + 8:off + 16] != salts:
            break
        out.append(off)
    return out


def _readable_after(data: Path, wal: bytes, scratch: Path) -> int:
    """The highest seq SQLite itself still reads from ``data``'s database with ``wal``."""
    scratch.mkdir(exist_ok=True)
    shutil.copy(data / "buffer.db", scratch / "buffer.db")
    (scratch / "buffer.db-wal").write_bytes(wal)
    (scratch / "buffer.db-shm").unlink(missing_ok=True)
    db = sqlite3.connect(scratch / "buffer.db")
    try:
        return db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    finally:
        db.close()


def garble_live_wal(data: Path, high: int, scratch: Path) -> int:
    """Overwrite one page of a live WAL frame so that SQLite drops committed events
    (frames from the damage on are discarded, and not all of them were checkpointed yet);
    returns the highest seq still readable. SQLite, on a copy, says which frame does that."""
    path = data / "buffer.db-wal"
    wal = path.read_bytes()
    frames, page = _frames(wal), page_size(wal)
    assert len(frames) > 8, "the events should still be in the write-ahead log"
    for off in frames:
        damaged = bytearray(wal)
        damaged[off + FRAME_HEADER:off + FRAME_HEADER + page] = os.urandom(page)
        readable = _readable_after(data, bytes(damaged), scratch)
        if readable < high:
            path.write_bytes(bytes(damaged))
            return readable
    raise AssertionError("no frame of the WAL holds uncheckpointed events")


def _restart_and_collect(agent: AgentProcess, broker: Broker) -> tuple[list[dict], str]:
    broker.start()
    sub = Subscriber(broker, "retail/#")
    try:
        agent.start()
        wait_until(lambda: any(e["type"] == "agent.started" and e["seq"] > 1
                               for e in sub.events()), 20, "the restarted agent")
        wait_until(lambda: agent.output().count("driver finished") == 2, 30,
                   "the replays to finish")
        assert agent.stop() == 0
        sub.sync()
        return sub.events(), agent.output()
    finally:
        sub.close()


def test_a_damaged_wal_after_kill_9_is_announced_and_no_seq_is_reused(tmp_path, agents):
    broker = Broker(tmp_path / "broker").start()
    agent, high = _buffer_with_backlog(tmp_path, broker, agents, 3000)
    readable = garble_live_wal(tmp_path / "data", high, tmp_path / "scratch")
    try:
        events, out = _restart_and_collect(agent, broker)
    finally:
        broker.stop()
    reports = [e["data"] for e in events if e["type"] == "agent.events_dropped"]
    assert len(reports) == 1, reports
    report = reports[0]
    assert report["reason"].startswith("buffer_corrupt: the write-ahead log was damaged")
    assert (report["first_seq"], report["last_seq"]) == (readable + 1, high)
    assert report["count"] == high - readable
    readable = {e["seq"] for e in events if e["seq"] < report["first_seq"]}
    assert readable == set(range(1, report["first_seq"])), "readable events were not delivered"
    restarted = [e for e in events if e["type"] == "agent.started" and e["seq"] > 1]
    assert restarted and restarted[0]["seq"] > high, "a seq was handed out again"
    assert_no_unannounced_gap(events)
    assert "write-ahead log was damaged" in out


def test_a_power_cut_that_loses_the_wal_tail_is_announced(tmp_path, agents):
    # The honest model of a power cut with synchronous = "normal": the process dies, the last
    # WAL frames (not yet synced) are gone, and so is the unsynced mark (it says less than was
    # committed), in another boot of the machine.
    broker = Broker(tmp_path / "broker").start()
    agent, high = _buffer_with_backlog(tmp_path, broker, agents, 3000, synchronous="normal")
    wal = tmp_path / "data" / "buffer.db-wal"
    frames = _frames(wal.read_bytes())
    assert len(frames) > 8, "the events should still be in the write-ahead log"
    with wal.open("r+b") as fh:
        fh.truncate(frames[len(frames) // 3])
    mark = tmp_path / "data" / "buffer.db.mark"
    _, state, _ = mark.read_text().split()
    assert state == "run"
    mark.write_text(f"{1500:020d} run another-boot-of-this-machine\n")
    try:
        events, _ = _restart_and_collect(agent, broker)
    finally:
        broker.stop()
    reports = [e["data"] for e in events if e["type"] == "agent.events_dropped"]
    assert len(reports) == 1 and reports[0]["reason"] == "power_loss", reports
    report = reports[0]
    assert report["count"] is None and report["last_seq"] >= high
    restarted = [e for e in events if e["type"] == "agent.started" and e["seq"] > 1]
    assert restarted[0]["seq"] > report["last_seq"]
    assert_no_unannounced_gap(events)


@pytest.mark.slow
def test_first_deliveries_stay_in_order_through_a_kill_9_storm(tmp_path, agents):
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker, "retail/#")
    rec = write_jsonl(tmp_path / "rec.jsonl", [{"type": "door.opened", "data": {}}])
    cfg = agent_config(tmp_path, broker, {"replay1": {
        "driver": "replay", "file": str(rec), "rate": 3000, "loop": True}},
        mqtt={"max_inflight": 8})
    agent = AgentProcess(tmp_path / "a", cfg)
    agents.append(agent)
    try:
        for _ in range(12):
            before = len(sub.events())
            agent.start()
            wait_until(lambda b=before: len(sub.events()) > b + 500, 20, "publishing")
            agent.kill()
        sub.sync()
        events = sub.events()
    finally:
        sub.close()
        broker.stop()
    # A restarted agent re-sends its unacknowledged tail first (duplicates step back: allowed),
    # so each seq's first delivery comes after every lower one's.
    seen: set[int] = set()
    first_seen = [e["seq"] for e in events if e["seq"] not in seen and not seen.add(e["seq"])]
    assert first_seen == sorted(first_seen), \
        f"out of order: {next((a, b) for a, b in itertools.pairwise(first_seen) if b < a)}"
    assert sorted(seen) == list(range(1, max(seen) + 1))
