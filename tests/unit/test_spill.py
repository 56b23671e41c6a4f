"""The hold between emit() and the commit: bounded, arrival order kept, lowest priority dropped first."""

from __future__ import annotations

from agent.buffer import Pending
from agent.events import PRIORITY_ALARM, PRIORITY_FAULT, PRIORITY_NORMAL, PRIORITY_TELEMETRY
from agent.spill import Spill


def ev(n: int, priority: int = PRIORITY_NORMAL) -> Pending:
    return Pending({"type": "x", "deviceid": "d", "n": n}, priority)


def take(spill: Spill, limit: int) -> list[Pending]:
    batch, kept = spill.take_with_kept(limit)
    assert not kept
    return batch


def ns(events: list[Pending]) -> list[int]:
    return [e.envelope["n"] for e in events]


def test_take_returns_arrival_order_across_priorities():
    spill = Spill(100)
    for n, p in enumerate([PRIORITY_TELEMETRY, PRIORITY_ALARM, PRIORITY_NORMAL, PRIORITY_ALARM,
                           PRIORITY_FAULT]):
        assert spill.put(ev(n, p)) is None
    assert ns(take(spill, 3)) == [0, 1, 2]
    assert ns(take(spill, 10)) == [3, 4]
    assert len(spill) == 0


def test_past_the_limit_the_oldest_of_the_lowest_priority_goes():
    spill = Spill(3)
    spill.put(ev(0, PRIORITY_ALARM))
    spill.put(ev(1, PRIORITY_TELEMETRY))
    spill.put(ev(2, PRIORITY_TELEMETRY))
    dropped = spill.put(ev(3, PRIORITY_FAULT))
    assert dropped is not None and ns([dropped]) == [1]
    assert ns(take(spill, 10)) == [0, 2, 3]


def test_an_alarm_is_never_dropped_for_telemetry():
    spill = Spill(2)
    spill.put(ev(0, PRIORITY_ALARM))
    spill.put(ev(1, PRIORITY_ALARM))
    dropped = spill.put(ev(2, PRIORITY_TELEMETRY))
    assert dropped is not None and ns([dropped]) == [2], "the incoming telemetry goes"
    assert ns(take(spill, 10)) == [0, 1]


def test_a_batch_put_back_goes_first_in_its_order_and_the_limit_holds():
    spill = Spill(4)
    for n in range(3):
        spill.put(ev(n, PRIORITY_ALARM if n == 1 else PRIORITY_TELEMETRY))
    batch = take(spill, 2)  # 0 (telemetry), 1 (alarm): the commit failed
    spill.put(ev(3, PRIORITY_NORMAL))
    spill.put(ev(4, PRIORITY_NORMAL))
    dropped = spill.put_back(batch)
    assert ns(dropped) == [0], "over the limit: the oldest telemetry"
    assert ns(take(spill, 10)) == [1, 2, 3, 4]
    # put back twice: the second batch goes ahead of what is left of the first
    for n in range(5, 9):
        spill.put(ev(n))
    first = take(spill, 2)
    second = take(spill, 1)
    spill.put_back(second)
    spill.put_back(first)
    assert ns(take(spill, 10)) == [5, 6, 7, 8]


def test_kept_state_goes_only_with_the_batch_that_empties_the_hold():
    spill = Spill(100)
    for n in range(3):
        spill.put(ev(n))
    spill.keep("d/counters", "v3")          # counted from events 0..2
    batch, kept = spill.take_with_kept(2)
    assert ns(batch) == [0, 1] and kept == {}  # event 2 is still held: the state waits for it
    spill.put(ev(3))
    spill.keep("d/counters", "v4")          # only the latest value is committed
    batch, kept = spill.take_with_kept(10)
    assert ns(batch) == [2, 3] and kept == {"d/counters": "v4"}
    assert spill.take_with_kept(10) == ([], {})


def test_a_kept_state_put_back_does_not_replace_a_newer_one():
    spill = Spill(100)
    spill.keep("d/counters", "old")
    batch, kept = spill.take_with_kept(10)   # the commit will fail
    spill.keep("d/counters", "new")
    spill.put_back(batch, kept)
    assert spill.kept("d/counters") == "new"


def test_outside_a_group_a_kept_state_goes_with_the_last_event_before_it():
    """Never before an event that arrived before it, never after one that arrived after."""
    spill = Spill(100)
    for n in range(3):
        spill.put(ev(n))
    spill.keep("d/counters", "after 2")
    spill.put(ev(3))
    batch, kept = spill.take_with_kept(2)
    assert ns(batch) == [0, 1] and kept == {}
    batch, kept = spill.take_with_kept(1)
    assert ns(batch) == [2] and kept == {"d/counters": "after 2"}
    batch, kept = spill.take_with_kept(10)
    assert ns(batch) == [3] and kept == {}


def test_an_open_group_is_not_taken_and_goes_whole_with_its_state_when_it_ends():
    spill = Spill(100)
    spill.put(ev(0))                        # before the poll: free to go
    group = spill.begin()
    spill.put(ev(1))
    spill.put(ev(2))
    batch, kept = spill.take_with_kept(10)
    assert ns(batch) == [0] and kept == {}, "nothing of the open group goes"
    spill.keep("d/counters", "2")
    assert spill.take_with_kept(10) == ([], {}), "not even its state"
    spill.end(group)
    batch, kept = spill.take_with_kept(10)
    assert ns(batch) == [1, 2] and kept == {"d/counters": "2"}


def test_a_batch_goes_past_its_limit_to_the_end_of_the_group_it_would_cut():
    spill = Spill(100)
    group = spill.begin()
    for n in range(5):
        spill.put(ev(n))
    spill.keep("d/counters", "5")
    spill.end(group)
    spill.put(ev(5))
    batch, kept = spill.take_with_kept(2)
    assert ns(batch) == [0, 1, 2, 3, 4] and kept == {"d/counters": "5"}
    assert ns(spill.take_with_kept(2)[0]) == [5]


def test_a_group_overlapping_an_open_one_waits_for_it_rather_than_split():
    """Two threads: group a is closed but began after group b, which is still open; a batch
    that reached into a would have to take b's events to finish it, so it stops before a."""
    spill = Spill(100)
    spill.put(ev(0))
    a = spill.begin()
    spill.put(ev(1, PRIORITY_ALARM))        # a's
    b = spill.begin()
    spill.put(ev(2))                        # b's
    spill.keep("a/counters", "1")
    spill.end(a)
    batch, kept = spill.take_with_kept(10)
    assert ns(batch) == [0] and kept == {}
    assert len(spill) == 2
    spill.keep("b/counters", "2")
    spill.end(b)
    batch, kept = spill.take_with_kept(10)
    assert ns(batch) == [1, 2] and kept == {"a/counters": "1", "b/counters": "2"}


def test_a_batch_put_back_goes_again_whole_with_its_states():
    spill = Spill(100)
    for n in range(4):
        spill.put(ev(n))
    spill.keep("d/counters", "4")
    batch, kept = spill.take_with_kept(10)  # the commit failed
    spill.put(ev(4))
    spill.put_back(batch, kept)
    batch, kept = spill.take_with_kept(2)
    assert ns(batch) == [0, 1, 2, 3] and kept == {"d/counters": "4"}


def test_the_writer_is_told_only_what_it_can_take():
    spill = Spill(100)
    assert not spill.ready()
    spill.put(ev(0))
    group = spill.begin()
    spill.put(ev(1))
    assert spill.ready(), "event 0 arrived before the group"
    spill.take_with_kept(10)
    assert not spill.ready(), "only the open group is left"
    spill.end(group)
    assert spill.ready()
