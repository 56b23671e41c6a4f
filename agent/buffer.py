"""The durable event buffer: SQLite in WAL mode, seq assigned at commit, bounded by bytes and age."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.events import PRIORITIES, dumps
from agent.seqmark import LastRun, SeqLedger, boot_id
from agent.storage import Reserve, StorageCorrupt, StorageUnavailable, classify

log = logging.getLogger(__name__)

ROW_OVERHEAD = 64
"""Bytes counted per row on top of its payload (keys, index entries), for ``max_bytes``."""
DROP_TO = 0.95
"""A full buffer drops down to this share of ``max_bytes`` (small steps: bounded memory)."""
EXPIRE_CHUNK = 20_000
"""Events expired per transaction (and per report)."""
CACHE_KIB = 2048
"""SQLite's page cache per connection."""
PAGE_SIZE = 1024
"""Bytes per page of a new buffer. At store rates each commit rewrites one leaf page: a small
page writes (and wears the SD card) four times less per event than SQLite's 4 KiB default."""
FREE_CHUNK = 500
"""Deletes per transaction on a full disk, each followed by a checkpoint."""
WAL_PAGES = 256
"""SQLite checkpoints the write-ahead log every this many pages (1 MiB)."""
WAL_LIMIT = 2 * 1024**2
"""A WAL larger than this means checkpoints fail (a full disk): new events then wait, so
that what the log holds never outgrows the disk reserve that deleting and checkpointing need."""

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
DROP INDEX IF EXISTS events_by_priority;
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kept (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
_INSERT = "INSERT INTO events (seq, priority, created, device, type, payload) VALUES (?,?,?,?,?,?)"
"""Columns named: a buffer has a ``published`` column too (outputs, agent/outputs)."""


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


def _ranges(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


@dataclass(frozen=True)
class _Moves:
    """What one transaction records besides new events."""

    acked: list[int]
    cursors: dict[str, int]
    drop: list[int]
    kept: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Removed:
    count: int
    bytes: int

    def __add__(self, other: _Removed) -> _Removed:
        return _Removed(self.count + other.count, self.bytes + other.bytes)


def _remove(db: sqlite3.Connection, where: str, *params: Any) -> _Removed:
    """Delete the events ``where`` says; returns how many and their payload bytes.

    ``where`` is always a constant of this module; values go in ``params``.
    """
    count, size = db.execute(
        f"SELECT count(*), coalesce(sum(length(payload)),0) FROM events WHERE {where}",  # noqa: S608
        params,
    ).fetchone()
    if count:
        db.execute(f"DELETE FROM events WHERE {where}", params)  # noqa: S608
    return _Removed(int(count), int(size))


def _unseen(seqs: list[int], reason: str) -> Dropped:
    """The broker's report of a drop: the seqs it never had (the others waited for an output)."""
    return Dropped(len(seqs), min(seqs), max(seqs), reason, _ranges(seqs))


class Buffer:
    """The SQLite buffer. Writes come from one thread; ``fetch`` may run on another.

    ``on_dropped`` builds the ``agent.events_dropped`` event that is committed in the same
    transaction as the drop, so the report can never be lost while the drop is kept.

    Failures are told apart (``agent.storage``): a full disk, an I/O error or a read-only
    filesystem raise ``StorageUnavailable`` and leave the file alone; only a file whose
    integrity is broken is moved aside (what can still be read is copied into the new one).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age: float,
        synchronous: str = "full",
        reserve_bytes: int = 0,
        on_dropped: DroppedFactory,
        outputs: Iterable[str] = (),
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.synchronous = synchronous.upper()
        self._on_dropped = on_dropped
        self.ledger = SeqLedger(path)
        self.reserve = Reserve(path.with_name(path.name + ".reserve"), reserve_bytes)
        self._wal = f"{path}-wal"
        self._blocked: StorageUnavailable | None = None
        """Set while the WAL cannot be checkpointed: only deletes are written."""
        self._db: sqlite3.Connection | None = None
        self._readers = threading.local()
        self._generation = 0
        self._bytes = 0
        self._depth = 0
        self._next_seq = 1
        self._boot = boot_id()
        self.reset_report: Dropped | None = None
        """Set by ``open()`` (or a commit that found the file corrupt) when seqs were lost;
        the caller emits it and sets it back to None."""
        self.moved_to: Path | None = None
        self.outputs = tuple(sorted(set(outputs)))
        """Names of the configured outputs (``[outputs.<name>]``): each has a cursor, and an
        event the broker acknowledged stays (marked published) until every cursor passed it."""
        self.cursors: dict[str, int] = {}
        """Output name -> the last seq it delivered or skipped (as committed)."""
        self._horizon = 0
        """min(cursors): published events up to here are deleted."""
        self._floor = 0
        """Every event up to this seq is published (or gone): the publisher reads above it."""

    # -- opening and recovery ------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def nearly_full(self) -> bool:
        """At the level a full buffer drops down to: the next commits may drop events."""
        return self._bytes >= self.max_bytes * DROP_TO

    def open(self) -> None:
        """Open (or create) the buffer and account for every seq the last run handed out.

        A corrupt file is moved aside and a fresh one started. Seqs that the last run
        committed but the file no longer holds (a damaged write-ahead log, a power cut) are
        skipped and reported in ``reset_report``.

        Raises:
            StorageUnavailable: the file cannot be opened or written now (retry later).
        """
        if self._db is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            last = self.ledger.last_run()
            corrupt = None
            try:
                self._open_db()
            except (sqlite3.Error, OSError, StorageCorrupt) as err:
                fault = err if isinstance(err, StorageCorrupt) else classify(err)
                if isinstance(fault, StorageUnavailable):
                    raise fault from err
                corrupt = self._reset(str(fault or f"{type(err).__name__}: {err}"))
            self._account_for(last, corrupt)
            self._load_cursors()
            self.ledger.start(self._next_seq - 1, self._boot)
        except OSError as err:
            self._close_db()
            raise classify(err) or StorageUnavailable(str(err)) from err
        self.reserve.make()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new file
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
        db.execute("PRAGMA secure_delete=FAST")  # Debian builds default to ON: see SECURE_DELETE
        return db

    def _open_db(self) -> None:
        db = self._connect()
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StorageCorrupt(f"quick_check: {check}")
            db.executescript(_SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(events)")}
            if "published" not in columns:
                db.execute("ALTER TABLE events ADD COLUMN published INTEGER NOT NULL DEFAULT 0")
            row = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
            self._next_seq = max(int(row[0]) if row else 1, 1)
            depth, size, max_seq = db.execute(
                "SELECT count(*), coalesce(sum(length(payload)),0), max(seq) FROM events"
            ).fetchone()
        except BaseException:
            db.close()
            raise
        if max_seq is not None and max_seq >= self._next_seq:
            self._next_seq = max_seq + 1  # defensive: never reuse a committed seq
        self._db = db
        self._depth = depth
        self._bytes = size + depth * ROW_OVERHEAD
        self._generation += 1

    def _account_for(self, last: LastRun | None, corrupt: str | None) -> None:
        """Compare what the database holds with what the last run committed (the mark)."""
        held = self._next_seq - 1
        if last is None:  # a new buffer (or one from before the mark existed)
            if corrupt:
                self._skip_to(self.ledger.reserved, None, None, corrupt)
            return
        # A clean stop, or a crash of the process in this boot: the page cache kept the mark.
        # After a crash of the machine (or a power cut) it may be stale.
        exact = last.clean or last.boot == self._boot
        if corrupt:
            self._skip_to(last.seq if exact else last.reserved, None, None, corrupt)
        elif exact and last.seq > held:
            why = ("the write-ahead log was damaged" if not last.clean
                   else "the database file lost events while the agent was stopped")
            self._skip_to(last.seq, last.seq - held, held + 1,
                          f"buffer_corrupt: {why}; seqs {held + 1}..{last.seq} were committed "
                          "but cannot be read")
        elif not exact and (self.synchronous != "FULL" or last.seq > held):
            # synchronous=normal: the last commits before a power cut may be gone (although
            # published); with full, a mark above the database means the storage lost synced
            # writes. Either way the stale mark bounds nothing: the reservation does.
            self._skip_to(max(last.reserved, last.seq), None, held + 1, "power_loss")
        self._next_seq = max(self._next_seq, last.seq + 1)

    def _skip_to(self, last_seq: int, count: int | None, first_seq: int | None,
                 reason: str) -> None:
        if last_seq < self._next_seq:
            if first_seq is None and count is None and reason.startswith("buffer_corrupt"):
                # nothing was handed out beyond what the new file holds; still say what happened
                self.reset_report = Dropped(None, None, None, reason)
            return
        self._next_seq = last_seq + 1
        self.reset_report = Dropped(count, first_seq, last_seq, reason)
        log.error("event buffer: %s; seqs up to %d may be lost and are reported; continuing "
                  "at seq %d", reason, last_seq, self._next_seq)

    def _reset(self, why: str) -> str:
        """Move the corrupt file (and its WAL) aside, start a fresh one, copy what is readable;
        returns the drop reason."""
        self._close_db()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.moved_to = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(self.moved_to) + suffix))
        self._open_db()
        saved = self._salvage(self.moved_to)
        log.error(
            "event buffer %s is corrupt (%s): moved aside to %s; %d unpublished events could "
            "be read from it and are kept; the rest are reported lost", self.path, why,
            self.moved_to, saved,
        )
        return f"buffer_corrupt: {why}; moved aside to {self.moved_to.name}, {saved} events " \
            "recovered from it"

    def _salvage(self, source: Path) -> int:
        """Copy the events that can still be read from ``source`` into the new file."""
        assert self._db is not None
        saved = 0
        after = 0
        try:
            old = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        except sqlite3.Error:
            return 0
        try:
            for _ in range(64):  # skip past damaged pages a bounded number of times
                try:
                    cursor = old.execute(
                        "SELECT seq, priority, created, device, type, payload FROM events "
                        "WHERE seq > ? ORDER BY seq", (after,))
                    while rows := cursor.fetchmany(500):
                        self._db.executemany(
                            _INSERT.replace("INSERT", "INSERT OR IGNORE", 1), rows)
                        saved += len(rows)
                        after = rows[-1][0]
                    break
                except sqlite3.Error:
                    after += 1000
        finally:
            old.close()
        if saved:
            depth, size, max_seq = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)),0), max(seq) FROM events"
            ).fetchone()
            self._depth, self._bytes = depth, size + depth * ROW_OVERHEAD
            self._next_seq = max(self._next_seq, max_seq + 1)
        return saved

    # -- writing ---------------------------------------------------------------------------

    def commit(
        self, batch: list[Pending], acked: Iterable[int] = (), *,
        cursors: dict[str, int] | None = None, drop: Iterable[int] = (),
        kept: dict[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], list[Dropped]]:
        """Commit ``batch``, the broker's ``acked`` seqs, the outputs' ``cursors`` and the
        drivers' ``kept`` states in one transaction (one fsync); ``drop`` seqs are deleted
        whoever still wants them.

        Without outputs an acked event is deleted; with outputs it is marked published and
        deleted once every output's cursor has passed it.

        Returns the committed envelopes (with ``seq``), including any ``agent.events_dropped``
        report, and what capacity enforcement dropped. A file found corrupt is moved aside
        (``reset_report`` says what was lost) and the batch committed to the new one.

        Raises:
            StorageUnavailable: nothing was committed; the batch is still the caller's.
        """
        if self._db is None:
            self.open()
        if batch:
            if self._blocked is not None:
                self._checkpoint()
            if not self.reserve.make() and self._reusable() < self.reserve.size:
                raise StorageUnavailable(
                    f"the disk is full: no room for the {self.reserve.size}-byte reserve that "
                    "deleting published events needs (buffer.reserve)")
        acked = list(acked)
        moves = _Moves(acked, dict(cursors or {}), list(drop), dict(kept or {}))
        try:
            result = self._commit(batch, moves)
        except (sqlite3.Error, OSError) as err:
            fault = classify(err)
            if isinstance(fault, StorageUnavailable):
                # The log may only need resetting (its pages are all in the database already):
                # checkpoint, and if that worked try once more.
                try:
                    self._checkpoint()
                    result = self._commit(batch, moves)
                except (sqlite3.Error, OSError, StorageUnavailable):
                    raise fault from err
                self._watch_wal()
                return result
            if fault is None:
                raise
            last = LastRun(self._next_seq - 1, True, self._boot, self.ledger.reserved)
            self._account_for(last, self._reset(str(fault)))
            self._load_cursors()
            result = self._commit(batch, _Moves([], {}, [], moves.kept))
        self._watch_wal()
        return result

    def free(self, acked: list[int], cursors: dict[str, int] | None = None) -> None:
        """Delete published events (and commit the outputs' ``cursors``) even on a full disk.

        Deleting rewrites existing pages only, so it needs room in the write-ahead log, not in
        the database: the log is checkpointed first (the disk reserve is given up if that needs
        room) and after every ``FREE_CHUNK`` deletes, so it never grows.

        Raises:
            StorageUnavailable: not even the deletes could be written.
        """
        if self._db is None:
            self.open()
        self._with_reserve(self._checkpoint)
        # The cursors first: the acked events they passed are then deleted, not marked.
        for step in self._horizon_steps(cursors or {}):
            self._with_reserve(functools.partial(self._delete, _Moves([], step, [])))
        for i in range(0, len(acked), FREE_CHUNK):
            self._with_reserve(functools.partial(
                self._delete, _Moves(acked[i:i + FREE_CHUNK], {}, [])))

    def _horizon_steps(self, cursors: dict[str, int]) -> Iterator[dict[str, int]]:
        """``cursors`` as a series of commits that each delete at most ``FREE_CHUNK`` published
        events (the earlier ones with every cursor capped), so that on a full disk no one
        transaction needs more of the log than a chunk of deletes. Each step is computed after
        the previous one was committed."""
        assert self._db is not None
        if not cursors:
            return
        merged = {**self.cursors, **cursors}
        target = min(merged.values()) if merged else 0
        while self._horizon < target:
            row = self._db.execute(
                "SELECT seq FROM events WHERE seq > ? AND published = 1 ORDER BY seq "
                "LIMIT 1 OFFSET ?", (self._horizon, FREE_CHUNK - 1)).fetchone()
            if row is None or row[0] >= target:
                break
            yield {name: min(seq, int(row[0])) for name, seq in merged.items()}
        yield merged

    def _delete(self, moves: _Moves) -> None:
        try:
            self._commit([], moves)
        except (sqlite3.Error, OSError) as err:
            raise classify(err) or err from err
        self._checkpoint()

    def _with_reserve(self, write: Callable[[], None]) -> None:
        """``write()``; on a full disk give up the reserve once and try again."""
        try:
            write()
        except StorageUnavailable as fault:
            if not self.reserve.release():
                raise
            log.warning("buffer: %s; gave up the %d-byte disk reserve to delete published "
                        "events", fault, self.reserve.size)
            write()

    def _reusable(self) -> int:
        """Bytes of free pages inside the database file (new events reuse them first)."""
        assert self._db is not None
        (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        (size,) = self._db.execute("PRAGMA page_size").fetchone()
        return int(free) * int(size)

    def _watch_wal(self) -> None:
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return
        if size > WAL_LIMIT:
            with contextlib.suppress(StorageUnavailable):
                self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and start it again from its beginning.

        Raises:
            StorageUnavailable: the disk has no room for it; until it has, only deletes are
                written (``commit`` of new events raises this too).
        """
        assert self._db is not None
        try:
            # RESTART, not TRUNCATE: the log keeps its blocks (up to journal_size_limit), so the
            # next commits have room in it even when the filesystem has none.
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as err:
            fault = classify(err)
            if not isinstance(fault, StorageUnavailable):
                raise
            if self._blocked is None:
                log.warning("buffer: the write-ahead log cannot be checkpointed (%s): new "
                            "events wait in memory until it can", fault)
            self._blocked = fault
            raise fault from err
        if not busy:
            self._blocked = None

    def _commit(
        self, batch: list[Pending], moves: _Moves
    ) -> tuple[list[dict[str, Any]], list[Dropped]]:
        assert self._db is not None
        db = self._db
        committed: list[dict[str, Any]] = []
        drops: list[Dropped] = []
        self.ledger.reserve(self._next_seq + len(batch) + 1)
        next_seq, size, depth = self._next_seq, self._bytes, self._depth
        cursors = {**self.cursors, **moves.cursors}
        horizon = min(cursors.values()) if self.outputs else 0
        db.execute("BEGIN IMMEDIATE")
        try:
            removed = self._publish(db, moves.acked, horizon)
            if moves.drop:
                removed += _remove(db, "seq IN (SELECT value FROM json_each(?))",
                                   json.dumps(moves.drop))
            if moves.cursors:
                db.executemany("INSERT OR REPLACE INTO cursors VALUES (?, ?)",
                               list(moves.cursors.items()))
            if moves.kept:
                db.executemany("INSERT OR REPLACE INTO kept VALUES (?, ?)",
                               list(moves.kept.items()))
            if horizon > self._horizon:
                removed += _remove(db, "seq > ? AND seq <= ? AND published = 1",
                                   self._horizon, horizon)
            depth -= removed.count
            size -= removed.bytes + removed.count * ROW_OVERHEAD
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
            db.executemany(_INSERT, rows)
            depth += len(rows)
            if size > self.max_bytes:
                dropped, freed_bytes, kinds, unseen = self._drop_to(
                    db, size - int(self.max_bytes * DROP_TO))
                size -= freed_bytes
                depth -= len(dropped)
                drops.append(Dropped(len(dropped), min(dropped), max(dropped), "buffer_full",
                                     _ranges(dropped), dict(kinds)))
                if unseen:  # the broker's report names only what the broker never got
                    env = self._on_dropped(_unseen(unseen, "buffer_full")).envelope
                    env["seq"] = next_seq
                    payload = dumps(env)
                    db.execute(_INSERT,
                               (next_seq, 3, time.time(), env["deviceid"], env["type"], payload))
                    committed.append(env)
                    next_seq += 1
                    size += len(payload) + ROW_OVERHEAD
                    depth += 1
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for pending in batch:
                pending.envelope.pop("seq", None)
            raise
        self._next_seq, self._bytes, self._depth = next_seq, size, depth
        self.cursors, self._horizon = cursors, horizon
        if self.outputs and moves.acked:
            self._floor = self._published_up_to(self._floor)
        self.ledger.mark(next_seq - 1)
        return committed, drops

    def _publish(self, db: sqlite3.Connection, acked: list[int], horizon: int) -> _Removed:
        """The broker has ``acked``: delete them, or with outputs mark them published (and delete
        those every output has passed already)."""
        if not acked:
            return _Removed(0, 0)
        if not self.outputs:
            # One statement text whatever the number of seqs: an IN list of N placeholders
            # would be a new prepared statement for every N, each cached (tens of MiB).
            return _remove(db, "seq IN (SELECT value FROM json_each(?))", json.dumps(acked))
        passed = [s for s in acked if s <= horizon]
        waiting = [s for s in acked if s > horizon]
        if waiting:
            db.execute("UPDATE events SET published = 1 WHERE seq IN "
                       "(SELECT value FROM json_each(?))", (json.dumps(waiting),))
        if not passed:
            return _Removed(0, 0)
        return _remove(db, "seq IN (SELECT value FROM json_each(?))", json.dumps(passed))

    def _published_up_to(self, floor: int) -> int:
        """The highest seq up to which every event is published (scans from ``floor``: the
        events acknowledged since, a window's worth)."""
        assert self._db is not None
        row = self._db.execute(
            "SELECT seq FROM events WHERE seq > ? AND published = 0 ORDER BY seq LIMIT 1",
            (floor,)).fetchone()
        return int(row[0]) - 1 if row else self._next_seq - 1

    def _load_cursors(self) -> None:
        """Read the outputs' cursors; a new output starts at the newest event (it is not sent
        the backlog), a removed one is forgotten (it holds nothing back any more)."""
        assert self._db is not None
        db = self._db
        stored = dict(db.execute("SELECT name, seq FROM cursors").fetchall())
        head = self._next_seq - 1
        cursors = {name: int(stored.get(name, head)) for name in self.outputs}
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM cursors")
            db.executemany("INSERT INTO cursors VALUES (?, ?)", list(cursors.items()))
            # published events nobody waits for any more (an output removed or caught up)
            horizon = min(cursors.values()) if cursors else head
            removed = _remove(db, "seq <= ? AND published = 1", horizon)
        self._depth -= removed.count
        self._bytes -= removed.bytes + removed.count * ROW_OVERHEAD
        self.cursors, self._horizon = cursors, horizon if cursors else 0
        self._floor = self._published_up_to(0) if cursors else 0

    def lag(self, cursor: int) -> tuple[int, float | None]:
        """Events committed after seq ``cursor`` (an output's), and the age of the oldest one."""
        behind = max(self._next_seq - 1 - cursor, 0)
        if not behind or self._db is None:
            return behind, None
        try:
            row = self._reader().execute(
                "SELECT created FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (cursor,)
            ).fetchone()
        except sqlite3.Error:
            row = None
        return behind, (time.time() - row[0]) if row else None

    def _drop_to(
        self, db: sqlite3.Connection, need: int
    ) -> tuple[list[int], int, Counter[tuple[str, str]], list[int]]:
        """Delete lowest-priority, oldest events until ``need`` bytes are freed; returns their
        seqs, the bytes, (device, type) counts, and the seqs the broker had not acknowledged.

        There is no index on priority (it would cost a page write per commit): each priority is
        read in seq order, the primary key's, and the scan stops as soon as enough is freed.
        Drop reports are never dropped: the seqs they name would become unannounced losses.
        """
        dropped: list[int] = []
        unseen: list[int] = []
        kinds: Counter[tuple[str, str]] = Counter()
        freed = 0
        for priority in PRIORITIES:
            cursor = db.execute(
                "SELECT seq, length(payload), device, type, published FROM events "
                "WHERE priority=? AND type != 'agent.events_dropped' ORDER BY seq", (priority,))
            for seq, length, device, event_type, published in cursor:
                dropped.append(seq)
                if not published:
                    unseen.append(seq)
                kinds[(device, event_type)] += 1
                freed += length + ROW_OVERHEAD
                if freed >= need:
                    break
            cursor.close()
            if freed >= need:
                break
        db.execute("DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))",
                   (json.dumps(dropped),))
        return dropped, freed, kinds, unseen

    def expire(self, now: float | None = None) -> tuple[list[dict[str, Any]], list[Dropped]]:
        """Drop events older than ``max_age`` (at most ``EXPIRE_CHUNK`` per call: call again
        while it returns a report); returns like ``commit``.

        Raises:
            StorageUnavailable: as ``commit``.
        """
        if self._db is None:
            return [], []
        cutoff = (now or time.time()) - self.max_age
        rows = self._db.execute(
            "SELECT seq, device, type, published FROM events WHERE created < ? "
            "AND type != 'agent.events_dropped' ORDER BY seq LIMIT ?", (cutoff, EXPIRE_CHUNK),
        ).fetchall()
        if not rows:
            return [], []
        old = [r[0] for r in rows]
        unseen = [r[0] for r in rows if not r[3]]
        kinds = Counter((device, event_type) for _, device, event_type, _ in rows)
        report = Dropped(len(old), min(old), max(old), "max_age", _ranges(old), dict(kinds))
        batch = [self._on_dropped(_unseen(unseen, "max_age"))] if unseen else []
        committed, _ = self.commit(batch, drop=old)
        return committed, [report]

    # -- reading ---------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        reader = getattr(self._readers, "db", None)
        if reader is None or self._readers.generation != self._generation:
            if reader is not None:
                reader.close()
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            reader.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._readers.db = reader
            self._readers.generation = self._generation
        return reader

    def fetch(self, after_seq: int, limit: int, *, published: bool = False) -> list[Row]:
        """Up to ``limit`` committed events with seq above ``after_seq``, in seq order: those
        the broker has not acknowledged yet (the publisher's view), or with ``published`` all of
        them (an output's view)."""
        if self._db is None:
            return []
        query = "SELECT seq, device, type, payload FROM events WHERE seq > ? "
        if not published:
            query += "AND published = 0 "
            after_seq = max(after_seq, self._floor)
        try:
            cursor = self._reader().execute(query + "ORDER BY seq LIMIT ?", (after_seq, limit))
            return [Row(*r) for r in cursor]
        except sqlite3.Error as err:
            # The writer thread owns recovery; the publisher retries on its next wake-up.
            log.warning("reading the event buffer failed: %s", err)
            return []

    def kept(self, key: str) -> str | None:
        """The last committed value of the kept state ``key`` (``None``: never kept, or the
        buffer cannot be read now)."""
        if self._db is None:
            return None
        try:
            row = self._reader().execute("SELECT value FROM kept WHERE key = ?",
                                         (key,)).fetchone()
        except sqlite3.Error as err:
            log.warning("reading the kept state %s from the event buffer failed: %s", key, err)
            return None
        return None if row is None else str(row[0])

    def stats(self) -> Stats:
        """Depth, bytes and the age of the oldest event."""
        oldest = None
        if self._depth and self._db is not None:
            # The lowest seq is the oldest commit: a primary-key lookup, where min(created)
            # would read the whole table (every status report and metrics scrape).
            try:
                row = self._reader().execute(
                    "SELECT created FROM events ORDER BY seq LIMIT 1"
                ).fetchone()
            except sqlite3.Error:
                row = None
            oldest = time.time() - row[0] if row and row[0] else None
        return Stats(self._depth, self._bytes, oldest, self._next_seq)

    def close(self) -> None:
        """Checkpoint and close; the next ``open()`` starts without WAL replay."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                # next_seq lives in the mark; the database keeps a copy for the next open
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)",
                                 (self._next_seq,))
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.ledger.stop(self._next_seq - 1, self._boot)
        self._close_db()
        self.ledger.close()

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        reader = getattr(self._readers, "db", None)
        if reader is not None:
            reader.close()
            self._readers.db = None
