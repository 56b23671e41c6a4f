"""The SQLite buffer on its own: seq assignment, limits, recovery."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.buffer import Buffer, Dropped, Pending
from agent.events import priority_of


def pending(event_type: str = "door.opened", n: int = 0, created: float | None = None) -> Pending:
    env = {"type": event_type, "deviceid": "d1", "n": n, "seq": 0}
    return Pending(env, priority_of(event_type), created if created is not None else time.time())


def dropped_event(report: Dropped) -> Pending:
    return Pending({"type": "agent.events_dropped", "deviceid": "agent", "data": report.data()},
                   3)


def make(path: Path, **kw) -> Buffer:
    buf = Buffer(path / "buffer.db", max_bytes=kw.pop("max_bytes", 10**8),
                 max_age=kw.pop("max_age", 86400), on_dropped=dropped_event, **kw)
    buf.open()
    return buf


def test_seq_is_contiguous_and_persisted_across_reopen(tmp_path):
    buf = make(tmp_path)
    committed, _ = buf.commit([pending(n=i) for i in range(5)])
    assert [e["seq"] for e in committed] == [1, 2, 3, 4, 5]
    buf.commit([], acked=[1, 2, 3, 4, 5])
    buf.close()
    buf = make(tmp_path)
    committed, _ = buf.commit([pending()])
    assert committed[0]["seq"] == 6, "a seq must never be reused, even when the buffer is empty"
    rows = buf.fetch(0, 10)
    assert [r.seq for r in rows] == [6]
    assert json.loads(rows[0].payload)["seq"] == 6


def test_fetch_in_seq_order_and_ack_deletes(tmp_path):
    buf = make(tmp_path)
    buf.commit([pending(n=i) for i in range(10)])
    assert [r.seq for r in buf.fetch(3, 4)] == [4, 5, 6, 7]
    buf.commit([], acked=[1, 2, 3])
    assert buf.stats().depth == 7
    assert buf.fetch(0, 1)[0].seq == 4


def test_full_buffer_drops_lowest_priority_oldest_first(tmp_path):
    buf = make(tmp_path, max_bytes=6000)
    buf.commit([pending("eas.alarm", i) for i in range(10)])
    buf.commit([pending("eas.people_count", i) for i in range(30)])
    committed, drops = buf.commit([pending("eas.people_count", 99) for _ in range(20)])
    assert drops and drops[0].reason == "buffer_full"
    kept = [json.loads(r.payload) for r in buf.fetch(0, 1000)]
    assert sum(1 for e in kept if e["type"] == "eas.alarm") == 10
    assert committed[-1]["type"] == "agent.events_dropped"
    assert drops[0].first_seq == 11  # the oldest people count
    assert buf.stats().bytes <= 6000


def test_expire_drops_old_events_and_reports(tmp_path):
    buf = make(tmp_path, max_age=60)
    buf.commit([pending(n=1, created=time.time() - 3600), pending(n=2)])
    _, drops = buf.expire()
    assert drops[0].reason == "max_age" and drops[0].count == 1
    assert [json.loads(r.payload)["type"] for r in buf.fetch(0, 10)] == [
        "door.opened", "agent.events_dropped"]


def test_corrupt_file_is_moved_aside_and_seq_jumps_past_the_reservation(tmp_path):
    buf = make(tmp_path)
    buf.commit([pending() for _ in range(3)])
    buf.close()
    (tmp_path / "buffer.db").write_bytes(b"junk" * 4096)
    buf = make(tmp_path)
    assert buf.moved_to is not None and buf.moved_to.exists()
    assert buf.reset_report is not None and buf.reset_report.reason.startswith("buffer_corrupt")
    committed, _ = buf.commit([pending()])
    assert committed[0]["seq"] > 3


def test_damaged_pages_are_detected(tmp_path):
    buf = make(tmp_path)
    buf.commit([pending(n=i) for i in range(2000)])
    buf.close()
    path = tmp_path / "buffer.db"
    data = bytearray(path.read_bytes())
    data[8192:16384] = b"\xde\xad" * 4096  # overwrite interior pages, keep the header
    path.write_bytes(bytes(data))
    buf = make(tmp_path)
    assert buf.moved_to is not None


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_synchronous_setting_applies(tmp_path, sync):
    buf = make(tmp_path, synchronous=sync)
    assert buf._db is not None
    level = buf._db.execute("PRAGMA synchronous").fetchone()[0]
    assert level == {"full": 2, "normal": 1}[sync]


def test_normal_sync_after_power_loss_skips_seqs_that_may_have_been_published(tmp_path):
    buf = make(tmp_path, synchronous="normal")
    buf.commit([pending() for _ in range(3)])
    assert buf._db is not None
    # What a power cut leaves: no clean close, and another boot of the machine.
    buf._db.close()
    buf._db = None
    mark = tmp_path / "buffer.db.mark"
    seq, state, _ = mark.read_text().split()
    assert state == "run"
    mark.write_text(f"{seq} run another-boot\n")
    buf = make(tmp_path, synchronous="normal")
    assert buf.reset_report is not None and buf.reset_report.reason == "power_loss"
    committed, _ = buf.commit([pending()])
    assert committed[0]["seq"] > 3 + 1000


def test_clean_close_or_full_sync_continues_without_gap(tmp_path):
    buf = make(tmp_path, synchronous="normal")
    buf.commit([pending() for _ in range(3)])
    buf.close()
    buf = make(tmp_path, synchronous="normal")
    assert buf.reset_report is None
    assert buf.commit([pending()])[0][0]["seq"] == 4


def test_a_full_buffer_never_drops_its_own_drop_reports(tmp_path):
    # Alarms only: when the buffer is full of them, they go oldest first, but the reports that
    # name earlier drops stay, or those seqs would become losses nobody announced.
    buf = make(tmp_path, max_bytes=4000)
    reports = []
    for i in range(40):
        committed, _ = buf.commit([pending("eas.alarm", i) for _ in range(5)])
        reports += [e["seq"] for e in committed if e["type"] == "agent.events_dropped"]
    assert len(reports) > 3
    kept = {r.seq for r in buf.fetch(0, 10_000)}
    assert set(reports) <= kept
