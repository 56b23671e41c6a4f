"""Events emitted but not yet committed: a bounded, priority-aware hold between emit() and the buffer."""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from agent.events import PRIORITIES

if TYPE_CHECKING:
    from agent.buffer import Pending


class Spill:
    """A FIFO of ``Pending`` events with at most ``limit`` entries, shared by many threads.

    Normally it holds what arrived since the writer's last commit (a few events). When the
    buffer cannot be written (a full disk, an I/O error) it holds everything accepted since,
    up to ``limit``. Past the limit the oldest event of the lowest priority present goes, never
    an event of a higher priority than the one arriving: alarms are never dropped for telemetry.
    ``put`` never blocks, so a GPIO edge callback is never held up; it returns what it dropped.

    It also holds the drivers' kept state (``keep``: e.g. a Modbus device's counter values),
    in arrival order with the events: ``take_with_kept`` hands out, with a batch, the latest
    value per key among the states kept before the first event still held. So a state is
    never committed before an event that arrived before it, nor after one that arrived after.

    A group (``begin``/``end``) binds a state to the events counted from it (a poll's events
    and its counters): nothing from its start on is taken while it is open, and a batch never
    ends inside one, so its events and its state go in one transaction.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # One deque per priority, each entry tagged with its arrival number: taking merges them
        # back in arrival order, dropping takes the head of the lowest non-empty one.
        self._queues: dict[int, collections.deque[tuple[int, Pending]]] = {
            p: collections.deque() for p in PRIORITIES}
        self._order = itertools.count()
        self._front = itertools.count(-1, -1)  # for batches put back ahead of everything
        self._size = 0
        self._kept: collections.deque[tuple[int, int, str, str]] = collections.deque()
        """(arrival number, start of its group, key, value) in arrival order."""
        self._open: list[int] = []
        """The arrival numbers at which the groups still open began."""
        self._lock = threading.Lock()
        self.not_empty = threading.Condition(self._lock)

    def __len__(self) -> int:
        return self._size

    def put(self, pending: Pending) -> Pending | None:
        """Hold ``pending``; return the event dropped to make room (maybe ``pending`` itself)."""
        with self._lock:
            dropped = None
            if self._size >= self.limit:
                lowest = next(p for p in PRIORITIES if self._queues[p])
                if lowest > pending.priority:
                    return pending
                dropped = self._queues[lowest].popleft()[1]
                self._size -= 1
            self._queues[pending.priority].append((next(self._order), pending))
            self._size += 1
            if not self._open:  # in a group's time it waits for the group: end() wakes
                self.not_empty.notify()
            return dropped

    def begin(self) -> int:
        """Open a group: the states kept until ``end`` go in one transaction with every event
        that arrived since. Returns the token for ``end``."""
        with self._lock:
            start = next(self._order)
            self._open.append(start)
            return start

    def end(self, start: int) -> None:
        """Close the group ``begin`` opened; what it held can be taken now."""
        with self._lock:
            self._open.remove(start)
            self.not_empty.notify()

    def keep(self, key: str, value: str) -> None:
        """Hold ``value`` as the state ``key`` to commit with the events emitted so far (and,
        in a group, with all of the group's)."""
        with self._lock:
            number = next(self._order)
            self._kept.append((number, min(self._open, default=number), key, value))
            if len(self._kept) > self.limit:  # the writer is stuck: keep the latest per key
                latest = {k: (n, s, k, v) for n, s, k, v in self._kept}
                self._kept = collections.deque(sorted(latest.values()))
            if not self._open:
                self.not_empty.notify()

    def kept(self, key: str) -> str | None:
        """The newest value of ``key`` waiting to be committed, if any."""
        with self._lock:
            return next((v for _, _, k, v in reversed(self._kept) if k == key), None)

    def ready(self) -> bool:
        """Whether ``take_with_kept`` would hand out anything now. Call it holding
        ``not_empty`` (the writer waits on it)."""
        if not self._open:
            return bool(self._size or self._kept)
        bound = min(self._open)
        return min(self._heads(), default=bound) < bound or \
            (bool(self._kept) and self._kept[0][0] < bound)

    def take_with_kept(self, limit: int) -> tuple[list[Pending], dict[str, str]]:
        """Remove and return up to ``limit`` events in arrival order, and the latest value per
        key of the states kept before the first event still held (all of them when the batch
        empties the hold).

        Nothing from the start of an open group on is taken. A batch that would end inside a
        closed group goes on to the group's state, past ``limit``; one that cannot (the group
        overlaps an open one: two threads) ends before the group instead.
        """
        with self._lock:
            bound = min(self._open, default=None)
            taken = list(self._take(limit, bound))
            stop = self._stop(bound)
            while stop is not None and (cut := self._split(stop)) is not None \
                    and (bound is None or cut[1] < bound):
                taken += self._take(self._size, cut[1])
                stop = self._stop(bound)
            if stop is not None and self._split(stop) is not None:
                while (cut := self._split(stop)) is not None:
                    stop = cut[0]
                for number, pending in reversed([t for t in taken if t[0] >= stop]):
                    self._queues[pending.priority].appendleft((number, pending))
                    self._size += 1
                taken = [t for t in taken if t[0] < stop]
            kept: dict[str, str] = {}
            while self._kept and (stop is None or self._kept[0][0] < stop):
                _, _, key, value = self._kept.popleft()
                kept[key] = value
            return [pending for _, pending in taken], kept

    def _heads(self) -> list[int]:
        return [q[0][0] for q in self._queues.values() if q]

    def _stop(self, bound: int | None) -> int | None:
        """The arrival number where what can be taken now ends (``None``: nowhere)."""
        head = min(self._heads(), default=None)
        if bound is not None and (head is None or bound < head):
            return bound
        return head

    def _split(self, stop: int) -> tuple[int, int] | None:
        """(first start, last state) of the groups that a batch ending at ``stop`` would cut:
        begun before it, their state kept at or after it."""
        spans = [(start, n) for n, start, _, _ in self._kept if start < stop <= n]
        if not spans:
            return None
        return min(s for s, _ in spans), max(n for _, n in spans)

    def _take(self, limit: int, bound: int | None = None) -> Iterator[tuple[int, Pending]]:
        """Up to ``limit`` events (with their arrival numbers) in arrival order, none from
        arrival number ``bound`` on."""
        heads = [q for q in self._queues.values() if q]
        if len(heads) == 1 and (bound is None or heads[0][-1][0] < bound):
            queue = heads[0]  # one priority held, all of it takeable (the usual case)
            n = min(limit, len(queue))
            self._size -= n
            for _ in range(n):
                yield queue.popleft()
            return
        while heads and limit > 0:
            queue = min(heads, key=lambda q: q[0][0])
            if bound is not None and queue[0][0] >= bound:
                return
            yield queue.popleft()
            self._size -= 1
            limit -= 1
            if not queue:
                heads.remove(queue)

    def put_back(self, batch: list[Pending], kept: dict[str, str] | None = None,
                 ) -> list[Pending]:
        """Return a batch that could not be committed to the front, in order, with its kept
        states (unless newer ones came meanwhile); returns what the limit dropped meanwhile
        (the lowest priorities first)."""
        dropped: list[Pending] = []
        with self._lock:
            after = next(self._front)  # the batch and its states, one group ahead of all
            for pending in reversed(batch):
                self._queues[pending.priority].appendleft((next(self._front), pending))
                self._size += 1
            start = next(self._front)
            for key, value in (kept or {}).items():  # a newer state of a key comes later
                self._kept.appendleft((after, start, key, value))
            while self._size > self.limit:
                lowest = next(p for p in PRIORITIES if self._queues[p])
                dropped.append(self._queues[lowest].popleft()[1])
                self._size -= 1
        return dropped
