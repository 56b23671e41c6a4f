"""The hold between emit() and the commit: bounded, arrival order kept, lowest priority dropped first."""

from __future__ import annotations

from agent.buffer import Pending
from agent.events import PRIORITY_ALARM, PRIORITY_FAULT, PRIORITY_NORMAL, PRIORITY_TELEMETRY
from agent.spill import Spill


def ev(n: int, priority: int = PRIORITY_NORMAL) -> Pending:
    return Pending({"type": "x", "deviceid": "d", "n": n}, priority)


def ns(events: list[Pending]) -> list[int]:
    return [e.envelope["n"] for e in events]


def test_take_returns_arrival_order_across_priorities():
    spill = Spill(100)
    for n, p in enumerate([PRIORITY_TELEMETRY, PRIORITY_ALARM, PRIORITY_NORMAL, PRIORITY_ALARM,
                           PRIORITY_FAULT]):
        assert spill.put(ev(n, p)) is None
    assert ns(spill.take(3)) == [0, 1, 2]
    assert ns(spill.take(10)) == [3, 4]
    assert len(spill) == 0


def test_past_the_limit_the_oldest_of_the_lowest_priority_goes():
    spill = Spill(3)
    spill.put(ev(0, PRIORITY_ALARM))
    spill.put(ev(1, PRIORITY_TELEMETRY))
    spill.put(ev(2, PRIORITY_TELEMETRY))
    dropped = spill.put(ev(3, PRIORITY_FAULT))
    assert dropped is not None and ns([dropped]) == [1]
    assert ns(spill.take(10)) == [0, 2, 3]


def test_an_alarm_is_never_dropped_for_telemetry():
    spill = Spill(2)
    spill.put(ev(0, PRIORITY_ALARM))
    spill.put(ev(1, PRIORITY_ALARM))
    dropped = spill.put(ev(2, PRIORITY_TELEMETRY))
    assert dropped is not None and ns([dropped]) == [2], "the incoming telemetry goes"
    assert ns(spill.take(10)) == [0, 1]


def test_a_batch_put_back_goes_first_in_its_order_and_the_limit_holds():
    spill = Spill(4)
    for n in range(3):
        spill.put(ev(n, PRIORITY_ALARM if n == 1 else PRIORITY_TELEMETRY))
    batch = spill.take(2)  # 0 (telemetry), 1 (alarm): the commit failed
    spill.put(ev(3, PRIORITY_NORMAL))
    spill.put(ev(4, PRIORITY_NORMAL))
    dropped = spill.put_back(batch)
    assert ns(dropped) == [0], "over the limit: the oldest telemetry"
    assert ns(spill.take(10)) == [1, 2, 3, 4]
    # put back twice: the second batch goes ahead of what is left of the first
    for n in range(5, 9):
        spill.put(ev(n))
    first = spill.take(2)
    second = spill.take(1)
    spill.put_back(second)
    spill.put_back(first)
    assert ns(spill.take(10)) == [5, 6, 7, 8]
