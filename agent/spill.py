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
    committed in the same transaction as the last event emitted before it, never before it and
    never after an event emitted after it.
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
        self._kept: collections.deque[tuple[int, str, str]] = collections.deque()
        """(arrival number, key, value) in arrival order."""
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
            self.not_empty.notify()
            return dropped

    def take(self, limit: int) -> list[Pending]:
        """Remove and return up to ``limit`` events in arrival order."""
        with self._lock:
            return list(self._take(limit))

    def keep(self, key: str, value: str) -> None:
        """Hold ``value`` as the state ``key`` to commit with the events emitted so far."""
        with self._lock:
            self._kept.append((next(self._order), key, value))
            if len(self._kept) > self.limit:  # the writer is stuck: keep the latest per key
                latest = {k: (n, k, v) for n, k, v in self._kept}
                self._kept = collections.deque(sorted(latest.values()))
            self.not_empty.notify()

    def kept(self, key: str) -> str | None:
        """The newest value of ``key`` waiting to be committed, if any."""
        with self._lock:
            return next((v for _, k, v in reversed(self._kept) if k == key), None)

    def take_with_kept(self, limit: int) -> tuple[list[Pending], dict[str, str]]:
        """Like ``take``, and the latest value per key of the states kept before the first
        event still held (all of them when the batch empties the hold)."""
        with self._lock:
            batch = list(self._take(limit))
            heads = [q[0][0] for q in self._queues.values() if q]
            before = min(heads) if heads else None
            kept: dict[str, str] = {}
            while self._kept and (before is None or self._kept[0][0] < before):
                _, key, value = self._kept.popleft()
                kept[key] = value
            return batch, kept

    def _take(self, limit: int) -> Iterator[Pending]:
        heads = [q for q in self._queues.values() if q]
        if len(heads) == 1:  # one priority held (the usual case): no merging
            queue = heads[0]
            n = min(limit, len(queue))
            self._size -= n
            for _ in range(n):
                yield queue.popleft()[1]
            return
        while heads and limit > 0:
            queue = min(heads, key=lambda q: q[0][0])
            yield queue.popleft()[1]
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
            newer = {k for _, k, _ in self._kept}
            for key, value in (kept or {}).items():
                if key not in newer:  # ahead of everything, with the batch put back
                    self._kept.appendleft((next(self._front), key, value))
            for pending in reversed(batch):
                self._queues[pending.priority].appendleft((next(self._front), pending))
                self._size += 1
            while self._size > self.limit:
                lowest = next(p for p in PRIORITIES if self._queues[p])
                dropped.append(self._queues[lowest].popleft()[1])
                self._size -= 1
        return dropped
