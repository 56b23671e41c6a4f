"""The durable event buffer: SQLite in WAL mode, seq assigned at commit, bounded by bytes and age."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.events import dumps
from agent.files import write_atomic

log = logging.getLogger(__name__)

ROW_OVERHEAD = 64
"""Bytes counted per row on top of its payload (keys, index entries), for ``max_bytes``."""
SEQ_RESERVE_BLOCK = 10_000
"""Seqs are reserved in blocks in a side file, so that a lost database never reuses one."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    device TEXT NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_priority ON events (priority, seq);
"""


@dataclass
class Pending:
    """An event that is emitted but not yet committed: its envelope without ``seq``."""

    envelope: dict[str, Any]
    priority: int
    created: float = field(default_factory=time.time)

    @property
    def device(self) -> str:
        return str(self.envelope["deviceid"])

    @property
    def type(self) -> str:
        return str(self.envelope["type"])


@dataclass(frozen=True)
class Row:
    """One committed event, as the publisher reads it."""

    seq: int
    device: str
    type: str
    payload: bytes


@dataclass(frozen=True)
class Dropped:
    """What one capacity or age enforcement (or a reset) removed."""

    count: int | None
    first_seq: int | None
    last_seq: int | None
    reason: str
    ranges: list[list[int]] = field(default_factory=list)
    kinds: dict[tuple[str, str], int] = field(default_factory=dict)
    """(device, type) -> how many of each were dropped (for metrics)."""

    def data(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count, "first_seq": self.first_seq, "last_seq": self.last_seq,
            "reason": self.reason,
        }
        if self.ranges and len(self.ranges) > 1:
            out["ranges"] = self.ranges[:50]
        return out


@dataclass(frozen=True)
class Stats:
    depth: int
    bytes: int
    oldest_age: float | None
    next_seq: int


DroppedFactory = Callable[[Dropped], Pending]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _ranges(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


class Buffer:
    """The SQLite buffer. Writes come from one thread; ``fetch`` may run on another.

    ``on_dropped`` builds the ``agent.events_dropped`` event that is committed in the same
    transaction as the drop, so the report can never be lost while the drop is kept.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age: float,
        synchronous: str = "full",
        on_dropped: DroppedFactory,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.synchronous = synchronous.upper()
        self._on_dropped = on_dropped
        self._reserve_path = path.with_name(path.name + ".seq")
        self._db: sqlite3.Connection | None = None
        self._readers = threading.local()
        self._generation = 0
        self._bytes = 0
        self._depth = 0
        self._next_seq = 1
        self._reserved = 0
        self.reset_report: Dropped | None = None
        """Set by ``open()`` when a corrupt file was moved aside; the caller emits it."""
        self.moved_to: Path | None = None

    # -- opening and recovery ------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the buffer; a corrupt file is moved aside and a fresh one started."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reserved = self._read_reserve()
        try:
            self._open_db()
        except sqlite3.DatabaseError as err:
            self._reset(f"{type(err).__name__}: {err}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        return db

    def _open_db(self) -> None:
        db = self._connect()
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
            self._next_seq = max(int(row[0]) if row else 1, 1)
            depth, size, max_seq = db.execute(
                "SELECT count(*), coalesce(sum(length(payload)),0), max(seq) FROM events"
            ).fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        if max_seq is not None and max_seq >= self._next_seq:
            self._next_seq = max_seq + 1  # defensive: never reuse a committed seq
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('clean', 'boot')"))
        boot = _boot_id()
        if (self.synchronous != "FULL" and meta.get("clean") == 0 and meta.get("boot") != boot
                and self._reserved >= self._next_seq):
            # synchronous=normal: the last commits before a power cut may be gone although
            # they were published. Skip past every seq that may have been handed out.
            first = self._next_seq
            self._next_seq = self._reserved + 1
            self.reset_report = Dropped(None, first, self._next_seq - 1, "power_loss")
            log.warning("buffer: power loss since the last run (synchronous=normal): seqs %d..%d "
                        "may be lost; continuing at %d", first, self._next_seq - 1, self._next_seq)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', 0), ('boot', ?)", (boot,))
        self._db = db
        self._depth = depth
        self._bytes = size + depth * ROW_OVERHEAD
        self._generation += 1

    def _reset(self, why: str) -> None:
        """Move the unreadable file (and its WAL) aside and start a fresh buffer."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.moved_to = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(self.moved_to) + suffix))
        log.error(
            "event buffer %s is corrupt (%s): moved aside to %s; starting a fresh buffer. "
            "Events in it that were not yet published are lost.", self.path, why, self.moved_to,
        )
        self._open_db()
        # Seqs handed out from the lost file may have been published: continue after them.
        first_unknown = self._next_seq
        self._next_seq = max(self._next_seq, self._reserved + 1)
        self.reset_report = Dropped(
            count=None,
            first_seq=None,
            last_seq=self._next_seq - 1 if self._next_seq > first_unknown else None,
            reason=f"buffer_corrupt: moved aside to {self.moved_to.name}",
        )

    def _read_reserve(self) -> int:
        try:
            return int(self._reserve_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _reserve(self, upto: int) -> None:
        if upto <= self._reserved:
            return
        reserved = upto + SEQ_RESERVE_BLOCK
        write_atomic(self._reserve_path, str(reserved).encode(), sync_dir=True)
        self._reserved = reserved

    # -- writing ---------------------------------------------------------------------------

    def commit(
        self, batch: list[Pending], acked: Iterable[int] = ()
    ) -> tuple[list[dict[str, Any]], list[Dropped]]:
        """Commit ``batch`` and delete ``acked`` seqs in one transaction (one fsync).

        Returns the committed envelopes (with ``seq``), including any ``agent.events_dropped``
        report, and what capacity enforcement dropped.
        """
        try:
            return self._commit(batch, list(acked))
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and "disk" not in str(err).lower():
                raise
            self._reset(f"{type(err).__name__}: {err}")
            return self._commit(batch, [])

    def _commit(
        self, batch: list[Pending], acked: list[int]
    ) -> tuple[list[dict[str, Any]], list[Dropped]]:
        assert self._db is not None, "open() first"
        db = self._db
        committed: list[dict[str, Any]] = []
        drops: list[Dropped] = []
        self._reserve(self._next_seq + len(batch) + 1)
        next_seq, size, depth = self._next_seq, self._bytes, self._depth
        db.execute("BEGIN IMMEDIATE")
        try:
            if acked:
                freed = db.execute(
                    f"SELECT count(*), coalesce(sum(length(payload)),0) FROM events "  # noqa: S608
                    f"WHERE seq IN ({','.join('?' * len(acked))})", acked,
                ).fetchone()
                db.executemany("DELETE FROM events WHERE seq=?", [(s,) for s in acked])
                depth -= freed[0]
                size -= freed[1] + freed[0] * ROW_OVERHEAD
            rows = []
            for pending in batch:
                env = pending.envelope
                env["seq"] = next_seq
                payload = dumps(env)
                rows.append((next_seq, pending.priority, pending.created, pending.device,
                             pending.type, payload))
                committed.append(env)
                next_seq += 1
                size += len(payload) + ROW_OVERHEAD
            db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?)", rows)
            depth += len(rows)
            if size > self.max_bytes:
                dropped, freed_bytes, kinds = self._drop_to(db, size - int(self.max_bytes * 0.9))
                size -= freed_bytes
                depth -= len(dropped)
                report = Dropped(len(dropped), min(dropped), max(dropped), "buffer_full",
                                 _ranges(dropped), dict(kinds))
                drops.append(report)
                env = self._on_dropped(report).envelope
                env["seq"] = next_seq
                payload = dumps(env)
                db.execute("INSERT INTO events VALUES (?,?,?,?,?,?)",
                           (next_seq, 3, time.time(), env["deviceid"], env["type"], payload))
                committed.append(env)
                next_seq += 1
                size += len(payload) + ROW_OVERHEAD
                depth += 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (next_seq,))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for pending in batch:
                pending.envelope.pop("seq", None)
            raise
        self._next_seq, self._bytes, self._depth = next_seq, size, depth
        return committed, drops

    def _drop_to(
        self, db: sqlite3.Connection, need: int
    ) -> tuple[list[int], int, Counter[tuple[str, str]]]:
        """Delete lowest-priority, oldest events until ``need`` bytes are freed."""
        dropped: list[int] = []
        kinds: Counter[tuple[str, str]] = Counter()
        freed = 0
        cursor = db.execute(
            "SELECT seq, length(payload), device, type FROM events ORDER BY priority, seq"
        )
        for seq, length, device, event_type in cursor:
            dropped.append(seq)
            kinds[(device, event_type)] += 1
            freed += length + ROW_OVERHEAD
            if freed >= need:
                break
        cursor.close()
        db.executemany("DELETE FROM events WHERE seq=?", [(s,) for s in dropped])
        return dropped, freed, kinds

    def expire(self, now: float | None = None) -> tuple[list[dict[str, Any]], list[Dropped]]:
        """Drop events older than ``max_age``; returns like ``commit``."""
        assert self._db is not None, "open() first"
        cutoff = (now or time.time()) - self.max_age
        rows = self._db.execute(
            "SELECT seq, device, type FROM events WHERE created < ? "
            "AND type != 'agent.events_dropped'", (cutoff,),
        ).fetchall()
        if not rows:
            return [], []
        old = [r[0] for r in rows]
        kinds = Counter((device, event_type) for _, device, event_type in rows)
        report = Dropped(len(old), min(old), max(old), "max_age", _ranges(old), dict(kinds))
        committed, _ = self.commit([self._on_dropped(report)], old)
        return committed, [report]

    # -- reading ---------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        reader = getattr(self._readers, "db", None)
        if reader is None or self._readers.generation != self._generation:
            if reader is not None:
                reader.close()
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._readers.db = reader
            self._readers.generation = self._generation
        return reader

    def fetch(self, after_seq: int, limit: int) -> list[Row]:
        """Up to ``limit`` committed events with seq above ``after_seq``, in seq order."""
        try:
            cursor = self._reader().execute(
                "SELECT seq, device, type, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
            return [Row(*r) for r in cursor]
        except sqlite3.DatabaseError as err:
            # The writer thread owns recovery; the publisher retries on its next wake-up.
            log.warning("reading the event buffer failed: %s", err)
            return []

    def stats(self) -> Stats:
        """Depth, bytes and the age of the oldest event."""
        oldest = None
        if self._depth:
            # The lowest seq is the oldest commit: a primary-key lookup, where min(created)
            # would read the whole table (every status report and metrics scrape).
            row = self._reader().execute(
                "SELECT created FROM events ORDER BY seq LIMIT 1"
            ).fetchone()
            oldest = time.time() - row[0] if row and row[0] else None
        return Stats(self._depth, self._bytes, oldest, self._next_seq)

    def close(self) -> None:
        """Checkpoint and close; the next ``open()`` starts without WAL replay."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', 1)")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None
        reader = getattr(self._readers, "db", None)
        if reader is not None:
            reader.close()
            self._readers.db = None
