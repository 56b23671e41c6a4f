"""The consumer's bookkeeping, message by message: dedupe, gaps, drop reports, restarts."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fleet_consumer import Fleet, ranges, render

BOOT1, BOOT2 = str(uuid.uuid4()), str(uuid.uuid4())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(seq: int, event_type: str = "door.opened", *, bootid: str = BOOT1, store: str = "0042",
          event_id: str | None = None, data: dict[str, Any] | None = None,
          test: bool = False) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id or str(uuid.uuid4()), "seq": seq,
            "source": f"urn:store-edge-agent:{store}:d1", "type": event_type,
            "storeid": store, "deviceid": "d1", "bootid": bootid, "test": test,
            "time": "2026-12-01T06:00:00.000Z", "data": data or {}}


def feed(fleet: Fleet, *events: dict[str, Any]) -> None:
    for e in events:
        fleet.on_message(f"retail/{e['storeid']}/events/d1/{e['type']}", json.dumps(e).encode())


def only_row(fleet: Fleet, grace: float = 0.0) -> dict[str, Any]:
    (row,) = fleet.rows(grace)
    return row


def test_ranges():
    assert ranges([7, 1, 3, 2]) == [(1, 3), (7, 7)]


def test_a_duplicate_id_is_counted_once():
    fleet = Fleet()
    e = event(1)
    feed(fleet, e, e, event(2))
    row = only_row(fleet)
    assert (row["events"], row["duplicates"], row["gaps"]) == (2, 1, 0)


def test_a_missing_seq_is_a_gap_after_the_grace_and_a_late_arrival_closes_it():
    clock = Clock()
    fleet = Fleet(clock=clock)
    late = event(3)
    feed(fleet, event(1), event(2), event(4), event(5))
    assert only_row(fleet, grace=30)["gaps"] == 0      # may still come
    clock.now += 31
    assert only_row(fleet, grace=30)["gap_ranges"] == [(3, 3)]
    feed(fleet, late)                                   # a re-send after a crash
    assert only_row(fleet, grace=30)["gaps"] == 0


def test_a_drop_report_covers_its_ranges_before_or_after_the_gap_is_seen():
    fleet = Fleet()
    feed(fleet, event(1), event(5), event(9))           # 2-4 and 6-8 missing
    report = event(10, "agent.events_dropped", data={
        "count": 5, "first_seq": 2, "last_seq": 7, "reason": "buffer_full",
        "ranges": [[2, 4], [6, 7]]})
    feed(fleet, report)
    row = only_row(fleet)
    assert row["gap_ranges"] == [(8, 8)] and row["dropped"] == 5
    # a report that arrives first: the later gap it names is not a gap
    feed(fleet, event(11, "agent.events_dropped", data={
        "count": 2, "first_seq": 12, "last_seq": 13, "reason": "max_age"}), event(14))
    row = only_row(fleet)
    assert row["gap_ranges"] == [(8, 8)] and row["dropped"] == 7


def test_a_drop_of_unknown_range_covers_nothing():
    fleet = Fleet()
    feed(fleet, event(1), event(3), event(4, "agent.events_dropped", data={
        "count": None, "first_seq": None, "last_seq": None, "reason": "buffer_corrupt: x"}))
    assert only_row(fleet)["gap_ranges"] == [(2, 2)]


def test_seq_continues_across_bootids_and_a_resent_tail_keeps_its_old_bootid():
    fleet = Fleet()
    tail = event(3)
    feed(fleet, event(1), event(2), tail, tail, event(4, bootid=BOOT2), event(5, bootid=BOOT2))
    row = only_row(fleet)
    assert (row["gaps"], row["duplicates"], row["last_seq"]) == (0, 1, 5)


def test_an_agent_that_starts_again_from_1_is_a_restart_not_a_gap():
    fleet = Fleet()
    feed(fleet, event(1), event(2), event(3), event(1, bootid=BOOT2), event(2, bootid=BOOT2))
    row = only_row(fleet)
    assert (row["gaps"], row["last_seq"]) == (0, 2)
    assert fleet.stores["0042"].seq.restarts == 1


def test_stores_are_tracked_apart_and_test_alarms_do_not_open_alarms():
    fleet = Fleet()
    feed(fleet, event(1, store="a"), event(3, store="a"), event(1, store="b"),
         event(2, "eas.alarm", store="b", data={"direction": "out"}),
         event(3, "eas.alarm", store="b", test=True, data={"direction": "out"}))
    a, b = fleet.rows(0)
    assert (a["store"], a["gaps"], a["open_alarms"]) == ("a", 1, 0)
    assert (b["store"], b["gaps"], b["open_alarms"]) == ("b", 0, 1)


def test_junk_is_counted_not_fatal():
    fleet = Fleet()
    fleet.on_message("retail/0042/events/d1/eas.alarm", b"{not json")
    fleet.on_message("retail/0042/events/d1/eas.alarm", b'{"type": "eas.alarm"}')
    fleet.on_message("elsewhere/x", b"whatever")
    assert fleet.invalid == 2 and fleet.rows() == []


def test_the_table_shows_exit_health_from_retained_reports():
    fleet = Fleet()
    feed(fleet, event(1))
    fleet.on_message("retail/0042/agent/availability", b"online")
    fleet.on_message("retail/0042/agent/selftest/exit1", json.dumps(
        {"exit": "exit1", "result": "fail", "finished": "2026-12-01T06:00:01.000Z",
         "summary": "1 failed"}).encode())
    fleet.on_message("retail/0042/agent/selftest/exit2", json.dumps(
        {"exit": "exit2", "result": "pass", "finished": "2026-12-01T06:00:02.000Z"}).encode())
    lines = render(fleet.rows()).splitlines()
    assert lines[0].split() == ["STORE", "AGENT", "EVENTS", "DUPS", "GAPS", "DROPPED", "ALARMS",
                                "EXIT", "LAST", "SELF-TEST"]
    assert lines[1].split() == ["0042", "online", "1", "0", "0", "0", "0", "exit1", "FAIL",
                                "2026-12-01T06:00:01.000Z"]
    assert lines[2].split() == ["exit2", "PASS", "2026-12-01T06:00:02.000Z"]


def test_a_report_with_more_drops_than_its_listed_ranges_covers_the_rest_up_to_last_seq():
    """The agent lists at most 50 ranges; count and last_seq still account for the rest."""
    fleet = Fleet()
    kept = [1, 5, 9, 12]                      # delivered; 2-4, 6-8, 10-11 dropped, 13 lost
    feed(fleet, *(event(n) for n in kept), event(14), event(15, "agent.events_dropped", data={
        "count": 8, "first_seq": 2, "last_seq": 11, "reason": "buffer_full",
        "ranges": [[2, 4], [6, 8]]}))          # 10-11 not listed
    row = only_row(fleet)
    assert row["dropped"] == 8 and row["gap_ranges"] == [(13, 13)]


def test_a_later_report_naming_seqs_in_an_earlier_reports_counted_span_takes_them():
    """Buffer-full rounds overlap: round 1 lists some ranges and counts the rest up to its
    last_seq; round 2 drops older survivors inside that span and names them."""
    fleet = Fleet()
    feed(fleet, event(1), event(6), event(10))          # 2-5 and 7-9 missing
    feed(fleet, event(11, "agent.events_dropped", data={   # names 2, counts 3 more in 3..9
        "count": 4, "first_seq": 2, "last_seq": 9, "reason": "buffer_full",
        "ranges": [[2, 2], [4, 4]]}))
    feed(fleet, event(12, "agent.events_dropped", data={   # round 2 names 3 and 5
        "count": 2, "first_seq": 3, "last_seq": 5, "reason": "buffer_full",
        "ranges": [[3, 3], [5, 5]]}))
    row = only_row(fleet)
    assert row["gap_ranges"] == [(9, 9)]                # 7, 8 by round 1's count; 9 by nobody
    assert row["dropped"] == 6
