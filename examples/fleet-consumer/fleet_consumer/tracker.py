"""What a fleet of stores told us, without I/O: dedupe by id, seq gaps per store, exit health."""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ALARM_TYPES = ("eas.alarm", "door.forced")
"""Events that open an alarm on the dashboard (unless ``test`` is true)."""


def ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """``[1, 2, 3, 7]`` -> ``[(1, 3), (7, 7)]``."""
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


@dataclass
class SeqTracker:
    """The ``seq`` of one store's agent: 1, 2, 3... in commit order, never reused or skipped.

    A number above the highest seen opens a gap below it; a late arrival (a re-send after a
    crash) closes it; an ``agent.events_dropped`` report covers it. What stays open is lost
    without a report: that is what a dashboard must raise.
    """

    high: int = 0
    missing: dict[int, float] = field(default_factory=dict)
    """seq -> when we noticed it was missing (monotonic seconds): not arrived, and no report
    names it exactly."""
    exact: list[tuple[int, int]] = field(default_factory=list)
    """Ranges that drop reports named."""
    by_count: list[tuple[int, int, int]] = field(default_factory=list)
    """``(first, last, count)``: a report that says only how many of first..last it dropped."""
    named: int = 0
    """seqs that a drop report named, and that never arrived."""
    restarts: int = 0
    """times the seq started again from below (a reinstalled agent with a new data_dir)."""

    def _named(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.exact)

    def see(self, seq: int, now: float) -> None:
        if seq > self.high:
            for n in range(self.high + 1, seq):
                if self._named(n):
                    self.named += 1
                else:
                    self.missing[n] = now
            self.high = seq
        else:
            self.missing.pop(seq, None)

    def cover(self, first: int, last: int) -> None:
        """A drop report: ``first..last`` (inclusive) will never arrive."""
        self.exact.append((first, last))
        for n in [n for n in self.missing if first <= n <= last]:
            del self.missing[n]
            self.named += 1

    def cover_some(self, first: int, last: int, count: int) -> None:
        """A drop report: ``count`` of ``first..last`` will never arrive, which ones unsaid."""
        self.by_count.append((first, last, count))

    def _counted(self) -> set[int]:
        """Missing seqs that reports account for by count only. Settled when asked, after every
        exact range is applied: a later report may name a seq in an earlier one's span."""
        taken: set[int] = set()
        for first, last, count in self.by_count:
            inside = sorted(n for n in self.missing if first <= n <= last and n not in taken)
            taken.update(inside[:count])
        return taken

    def dropped(self) -> int:
        """seqs that drop reports account for."""
        return self.named + len(self._counted())

    def restart(self, seq: int, now: float) -> None:
        self.restarts += 1
        self.high, self.missing, self.exact, self.by_count = 0, {}, [], []
        self.see(seq, now)

    def gaps(self, now: float, grace: float) -> list[tuple[int, int]]:
        """Missing seqs no report accounts for, noticed more than ``grace`` seconds ago (a
        re-send after a crash may still bring them)."""
        counted = self._counted()
        return ranges(n for n, since in self.missing.items()
                      if n not in counted and now - since >= grace)


@dataclass
class Store:
    """One store as the fleet sees it."""

    store_id: str
    seq: SeqTracker = field(default_factory=SeqTracker)
    bootids: set[str] = field(default_factory=set)
    events: int = 0
    duplicates: int = 0
    availability: str = "unknown"
    status: dict[str, Any] = field(default_factory=dict)
    exits: dict[str, dict[str, Any]] = field(default_factory=dict)
    """exit -> its last self-test report (the retained ``agent/selftest/<exit>``)."""
    alarms: deque[tuple[float, dict[str, Any]]] = field(default_factory=deque)


class Fleet:
    """Feed it every message (``on_message``); read ``stores`` and ``rows()``.

    Not thread-safe: the MQTT client calls it from one thread (``FleetClient`` holds a lock
    around reads from others).
    """

    def __init__(self, *, topic_root: str = "retail", alarm_window: float = 600.0,
                 seen_ids: int = 1_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.topic_root = topic_root
        self.alarm_window = alarm_window
        self.stores: dict[str, Store] = {}
        self.invalid = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_max = seen_ids
        self._clock = clock

    def store(self, store_id: str) -> Store:
        if store_id not in self.stores:
            self.stores[store_id] = Store(store_id)
        return self.stores[store_id]

    def on_message(self, topic: str, payload: bytes) -> None:
        """One MQTT message under ``<topic_root>/<store>/``; others are ignored."""
        parts = topic.split("/")
        root = self.topic_root.split("/")
        if parts[:len(root)] != root or len(parts) < len(root) + 2:
            return
        store_id, rest = parts[len(root)], parts[len(root) + 1:]
        try:
            if rest[0] == "events":
                self.on_event(json.loads(payload))
            elif rest[:2] == ["agent", "availability"]:
                self.store(store_id).availability = payload.decode()
            elif rest[:2] == ["agent", "status"]:
                self.store(store_id).status = json.loads(payload)
            elif rest[:2] == ["agent", "selftest"] and len(rest) == 3 and payload:
                self.store(store_id).exits[rest[2]] = json.loads(payload)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            self.invalid += 1

    def on_event(self, event: dict[str, Any]) -> bool:
        """Count one event; ``False`` for a duplicate (an id seen before).

        Raises:
            KeyError, TypeError: not an event of the contract (no ``id``, ``seq``...).
        """
        event_id = event["id"]
        if event_id in self._seen:
            self.store(event["storeid"]).duplicates += 1
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)
        store = self.store(event["storeid"])
        now = self._clock()
        seq, bootid = int(event["seq"]), event["bootid"]
        store.events += 1
        # The resent tail of a crashed run carries its old bootid; a new bootid below the
        # highest seq is an agent that started again from 1 (new data_dir), not a resend.
        if bootid not in store.bootids and store.bootids and seq <= store.seq.high:
            store.seq.restart(seq, now)
        else:
            store.seq.see(seq, now)
        store.bootids.add(bootid)
        data = event.get("data") or {}
        if event["type"] == "agent.events_dropped":
            self._cover(store.seq, data)
        elif event["type"] in ALARM_TYPES and not event.get("test"):
            store.alarms.append((now, event))
        return True

    @staticmethod
    def _cover(seq: SeqTracker, data: dict[str, Any]) -> None:
        """Mark what an ``agent.events_dropped`` names: its ``ranges`` exactly, else
        ``first_seq..last_seq``. The agent lists at most 50 ranges: when they account for fewer
        than ``count``, the rest lies after the last range listed, up to ``last_seq``."""
        first, last, count = data.get("first_seq"), data.get("last_seq"), data.get("count")
        if first is None or last is None:
            return  # a lost buffer file of unknown extent: the gaps stay visible
        spans = [(int(a), int(b)) for a, b in data.get("ranges") or [(first, last)]]
        for a, b in spans:
            seq.cover(a, b)
        listed = sum(b - a + 1 for a, b in spans)
        if count is not None and count > listed and spans[-1][1] < int(last):
            seq.cover_some(spans[-1][1] + 1, int(last), int(count) - listed)

    def open_alarms(self, store: Store) -> int:
        """Real alarms (not self-test ones) of the last ``alarm_window`` seconds."""
        now = self._clock()
        while store.alarms and now - store.alarms[0][0] > self.alarm_window:
            store.alarms.popleft()
        return len(store.alarms)

    def rows(self, grace: float = 30.0) -> list[dict[str, Any]]:
        """One row per store and exit (a store without exits has one row)."""
        now = self._clock()
        out = []
        for store_id in sorted(self.stores):
            store = self.stores[store_id]
            gaps = store.seq.gaps(now, grace)
            common = {"store": store_id, "agent": store.availability, "events": store.events,
                      "duplicates": store.duplicates, "last_seq": store.seq.high,
                      "gaps": sum(last - first + 1 for first, last in gaps),
                      "gap_ranges": gaps, "dropped": store.seq.dropped(),
                      "open_alarms": self.open_alarms(store)}
            for name in sorted(store.exits) or [None]:
                report = store.exits.get(name, {}) if name else {}
                out.append({**common, "exit": name, "selftest": report.get("result"),
                            "selftest_finished": report.get("finished"),
                            "selftest_summary": report.get("summary")})
        return out


def render(rows: list[dict[str, Any]]) -> str:
    """The fleet table: stores, exits, last self-test, open alarms, gaps."""
    header = ("STORE", "AGENT", "EVENTS", "DUPS", "GAPS", "DROPPED", "ALARMS", "EXIT",
              "LAST SELF-TEST")
    lines = [header]
    previous = None
    for row in rows:
        first = row["store"] != previous
        previous = row["store"]
        test = (f"{row['selftest'].upper()} {row['selftest_finished']}" if row["selftest"]
                else "never" if row["exit"] else "-")
        store_cols = (row["store"], row["agent"], str(row["events"]), str(row["duplicates"]),
                      str(row["gaps"]), str(row["dropped"]), str(row["open_alarms"])) if first \
            else ("",) * 7
        lines.append((*store_cols, row["exit"] or "-", test))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
