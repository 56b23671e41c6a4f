"""emit() to committed event: envelopes are stamped, grouped and committed by one writer thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.backoff import Backoff
from agent.buffer import Buffer, Dropped, Pending
from agent.clock import ClockWatch
from agent.config import Config, Settings
from agent.events import AGENT_DEVICE, dumps, priority_of, rfc3339, uuid7, validate_data
from agent.spill import Spill
from agent.storage import StorageUnavailable
from agent.watchdog import Heartbeat

log = logging.getLogger(__name__)

ACK_FLUSH_INTERVAL = 3.0
"""Deleting published events is batched: losing a delete only means a duplicate later, and a
delete of many rows rewrites each page once (SD-card wear; see bench/disk_writes.py)."""
ACK_FLUSH_COUNT = 2000
EXPIRE_INTERVAL = 60.0
IDLE_WAKE = 1.0
"""The writer goes round its loop at least this often, so that its heartbeat shows it is alive."""
MAX_BATCH = 2000
"""Events per transaction at most: a burst costs one fsync per this many."""
GROUP_SLOW = 0.5
"""A together() block open this long is said in the log: events of every device wait for it."""
STOP_GROUP_WAIT = 2.0
"""At stop, how long the writer waits for a driver's open group to end before it says what the
group held is lost."""
STORAGE_RETRY_MIN, STORAGE_RETRY_MAX = 0.5, 10.0
"""Backoff between attempts to write to a buffer that could not be written."""
ROOM_POLL = 0.01
COMMIT_LOG_EVERY = 10.0
"""Seconds between DEBUG lines summing up commits (for support on the phone with a store)."""

Listener = Callable[[dict[str, Any]], None]
LossListener = Callable[[str, Dropped], None]
"""(output name, what of a drop it had not delivered yet): announced once per output."""


def missed(report: Dropped, passed: int) -> Dropped | None:
    """The part of ``report`` above an output's cursor ``passed``: what that output never got."""
    ranges = report.ranges or (
        [[report.first_seq, report.last_seq]] if report.first_seq and report.last_seq else [])
    left = [[max(a, passed + 1), b] for a, b in ranges if b > passed]
    if not left:
        return None
    count = sum(b - a + 1 for a, b in left)
    return Dropped(count, left[0][0], left[-1][1], report.reason, left)


class Pipeline:
    """The core side of every driver's ``DriverContext``, and the buffer's only writer."""

    def __init__(self, config: Config, buffer: Buffer, *, clock: ClockWatch | None = None) -> None:
        self.config = config
        self.settings: Settings = config.settings
        self.store_id = self.settings.agent.store_id
        self.bootid = str(uuid.uuid4())
        self.buffer = buffer
        self.clock = clock or ClockWatch()
        self._exit_of = {d.id: d.exit for d in config.devices.values()}
        self.spill = Spill(self.settings.buffer.hold_max)
        """Emitted, not yet committed (bounded; holds everything while the disk is full)."""
        self._wakeup = self.spill.not_empty
        self._acks: list[int] = []
        self._cursor_moves: dict[str, int] = {}
        """Output name -> the seq it has passed, not yet committed (flushed with the acks)."""
        self.on_output_loss: LossListener = lambda name, lost: None
        self.wake_outputs: Callable[[], None] = lambda: None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._listeners: tuple[Listener, ...] = ()
        """Replaced whole on every change: the writer thread iterates it without a lock."""
        self._idle = threading.Event()
        self._idle.set()
        self._queued = 0
        self._lock = threading.Lock()
        self._held_drops: Counter[tuple[str, str]] = Counter()
        """(device, type) -> events the hold dropped since the last report (not committed)."""
        self.storage_problem: str | None = None
        """Why the buffer cannot be written now (a full disk, ...), or None."""
        self._commit_log = [time.monotonic(), 0, 0]  # since: time, transactions, events
        self.on_commit: Callable[[], None] = lambda: None
        self.on_state: Callable[[str, dict[str, Any]], None] = lambda dev, state: None
        self.emitted: Counter[tuple[str, str]] = Counter()
        self.dropped: Counter[str] = Counter()
        self.dropped_by: Counter[tuple[str, str, str]] = Counter()
        """(device, type, reason) -> events the buffer dropped, for metrics."""
        self.writer_beat = Heartbeat("buffer-writer")
        self.last_commit_error: str | None = None

    # -- DriverContext -----------------------------------------------------------------------

    def emit(
        self,
        device_id: str,
        event_type: str,
        data: dict[str, Any] | None = None,
        *,
        time: float | None = None,
        subject: str | None = None,
        test: bool | None = None,
    ) -> str:
        """Validate and stamp one event and queue it for the next commit; return its id.

        Raises:
            EventError: not a catalogue type, or ``data`` does not fit the type.
        """
        clean = validate_data(event_type, data)
        event_id = uuid7()
        subject = subject or self._exit_of.get(device_id)
        env: dict[str, Any] = {
            "specversion": "1.0",
            "id": event_id,
            "source": f"urn:store-edge-agent:{self.store_id}:{device_id}",
            "type": event_type,
            "time": rfc3339(time),
            "datacontenttype": "application/json",
            "storeid": self.store_id,
            "deviceid": device_id,
            "seq": 0,
            "bootid": self.bootid,
            "clocksynced": self.clock.synced,
            "test": bool(test),
            "data": clean,
        }
        if subject:
            env["subject"] = subject
        with self._lock:
            self._queued += 1
            if self._idle.is_set():
                self._idle.clear()
        dropped = self.spill.put(Pending(env, priority_of(event_type)))
        if dropped is not None:
            self._note_held_drops([dropped])
        return event_id

    async def room(self) -> None:
        """Wait while the hold of uncommitted events is more than half full.

        For drivers that can slow down (replay, polling): back-pressure instead of drops. A
        driver that cannot wait (an edge callback) just emits; past the hold's limit the lowest
        priority is dropped and announced.
        """
        while len(self.spill) > self.spill.limit // 2:
            await asyncio.sleep(ROOM_POLL)

    def _note_held_drops(self, dropped: list[Pending]) -> None:
        if not dropped:
            return
        with self._lock:
            first = not self._held_drops
            for pending in dropped:
                self._held_drops[(pending.device, pending.type)] += 1
        self._settled(len(dropped))
        if first:
            log.error("event buffer: the in-memory hold is full (%d events%s): dropping the "
                      "lowest priority first; the drop will be reported", self.spill.limit,
                      f", {self.storage_problem}" if self.storage_problem else "")

    def publish_state(self, device_id: str, state: dict[str, Any]) -> None:
        self.on_state(device_id, state)

    def keep(self, device_id: str, name: str, value: dict[str, Any]) -> None:
        """Commit ``value`` as the device's state ``name`` with the events emitted so far."""
        self.spill.keep(f"{device_id}/{name}", dumps(value).decode())

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """The events emitted and the states kept inside go to the buffer in one transaction."""
        start, began = self.spill.begin(), time.monotonic()
        try:
            yield
        finally:
            self.spill.end(start)
            if (held := time.monotonic() - began) >= GROUP_SLOW:
                log.warning("a driver's together() block was open for %.1f s: every device's "
                            "events waited for it; keep it short, with no await inside", held)

    def kept(self, device_id: str, name: str) -> dict[str, Any] | None:
        """The device's state ``name`` as last kept (waiting or committed), or ``None``."""
        key = f"{device_id}/{name}"
        text = self.spill.kept(key) or self.buffer.kept(key)
        try:
            value = None if text is None else json.loads(text)
        except ValueError:
            value = None
        return value if isinstance(value, dict) else None

    def data_dir(self, device_id: str) -> Path:
        path = self.settings.agent.data_dir / "devices" / device_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def exit_of(self, device_id: str) -> str | None:
        return self._exit_of.get(device_id)

    # -- core API ------------------------------------------------------------------------------

    def emit_agent(self, event_type: str, data: dict[str, Any] | None = None, **kw: Any) -> str:
        """Emit an event of the agent itself (device id ``agent``)."""
        return self.emit(AGENT_DEVICE, event_type, data, **kw)

    def dropped_event(self, report: Dropped) -> Pending:
        """The ``agent.events_dropped`` event for ``report`` (called by the buffer)."""
        env = {
            "specversion": "1.0",
            "id": uuid7(),
            "source": f"urn:store-edge-agent:{self.store_id}:{AGENT_DEVICE}",
            "type": "agent.events_dropped",
            "time": rfc3339(),
            "datacontenttype": "application/json",
            "storeid": self.store_id,
            "deviceid": AGENT_DEVICE,
            "seq": 0,
            "bootid": self.bootid,
            "clocksynced": self.clock.synced,
            "test": False,
            "data": validate_data("agent.events_dropped", report.data()),
        }
        return Pending(env, priority_of("agent.events_dropped"))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(envelope)`` for every committed event (on the writer thread)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    def ack(self, seqs: list[int]) -> None:
        """The broker has these seqs: delete them from the buffer (batched)."""
        with self._wakeup:
            self._acks.extend(seqs)
            if len(self._acks) >= ACK_FLUSH_COUNT:
                self._wakeup.notify()

    def advance(self, output: str, seq: int) -> None:
        """Output ``output`` delivered (or skipped) every event up to ``seq``: its cursor is
        committed with the next flush of acks (a crash before that only means a repeat)."""
        with self._wakeup:
            self._cursor_moves[output] = max(seq, self._cursor_moves.get(output, 0))

    def cursor(self, output: str) -> int:
        """The seq output ``output`` has passed, committed or not."""
        with self._wakeup:
            pending = self._cursor_moves.get(output, 0)
        return max(pending, self.buffer.cursors.get(output, 0))

    def wait_committed(self, timeout: float) -> bool:
        """Wait until every emitted event is committed."""
        return self._idle.wait(timeout)

    # -- writer thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Open the buffer (a buffer that cannot be opened now is retried by the writer) and
        start the writer thread."""
        try:
            self.buffer.open()
        except StorageUnavailable as err:
            self._storage_failed(err)
        if self.buffer.reset_report is not None:
            self.emit_agent("agent.events_dropped", self.buffer.reset_report.data())
            self.buffer.reset_report = None
        self._thread = threading.Thread(target=self._writer, name="buffer-writer", daemon=True)
        self.writer_beat.attach(self._thread)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is held, flush pending deletes, and stop the writer thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _writer(self) -> None:
        last_ack_flush = last_expire = time.monotonic()
        retry = Backoff(initial=STORAGE_RETRY_MIN, cap=STORAGE_RETRY_MAX)
        retry_at = 0.0
        give_up: float | None = None
        while True:
            self.writer_beat.beat()
            with self._wakeup:
                if not self._stopping and not self.spill.ready():
                    self._wakeup.wait(IDLE_WAKE)
                stopping = self._stopping
            now = time.monotonic()
            if now < retry_at and not stopping:
                # Still unwritable: deletes (what frees space) go on; events wait in the hold.
                self._wakeup_wait(min(retry_at - now, IDLE_WAKE))
                acks, cursors = self._take_acks(), self._take_cursors()
                if (acks or cursors) and self._free(acks, cursors):
                    retry_at = now  # space was freed: try the held events now
                continue
            # Near capacity, acks go with every commit: what the broker has is deleted (or, for
            # an output, marked published) before the capacity policy picks what to drop.
            flush = stopping or now - last_ack_flush >= ACK_FLUSH_INTERVAL or \
                len(self._acks) >= ACK_FLUSH_COUNT or self.buffer.nearly_full
            acks = self._take_acks() if flush else []
            cursors = self._take_cursors() if flush else {}
            if flush:
                last_ack_flush = now
            if self._commit_held(acks, cursors):
                retry.reset()
                if now - last_expire >= EXPIRE_INTERVAL:
                    last_expire = now
                    self._expire()
            else:
                retry_at = time.monotonic() + retry.next()
            if stopping:
                if len(self.spill) and self.storage_problem is None:
                    # A driver's group (together()) still holds events: it ends in microseconds.
                    give_up = give_up or time.monotonic() + STOP_GROUP_WAIT
                    if time.monotonic() < give_up:
                        time.sleep(0.005)
                        continue
                if len(self.spill):
                    log.error("event buffer: stopping with %d events held in memory that could "
                              "not be written (%s): they are lost", len(self.spill),
                              self.storage_problem or "a driver's together() block never ended")
                return

    def _wakeup_wait(self, timeout: float) -> None:
        with self._wakeup:
            if not self._stopping:
                self._wakeup.wait(timeout)

    def _take_acks(self) -> list[int]:
        with self._wakeup:
            acks, self._acks = self._acks, []
        return acks

    def _take_cursors(self) -> dict[str, int]:
        with self._wakeup:
            moves, self._cursor_moves = self._cursor_moves, {}
        return moves

    def _put_back_cursors(self, moves: dict[str, int]) -> None:
        with self._wakeup:
            for name, seq in moves.items():
                self._cursor_moves[name] = max(seq, self._cursor_moves.get(name, 0))

    def _commit_held(self, acks: list[int], cursors: dict[str, int] | None = None) -> bool:
        """Commit the held events (in batches), ``acks`` and the outputs' ``cursors``; False
        when the buffer refused."""
        cursors = cursors or {}
        while True:
            batch, kept = self.spill.take_with_kept(MAX_BATCH)
            with self._lock:
                report = self._held_drops_report()
            if report is not None:
                batch.append(report)
            if not batch and not acks and not cursors and not kept:
                return True
            try:
                committed, drops = self.buffer.commit(batch, acks, cursors=cursors, kept=kept)
            except StorageUnavailable as err:
                self._storage_failed(err)
                if report is not None:
                    batch.pop()  # made again, with what is dropped meanwhile, next time
                self._note_held_drops(self.spill.put_back(batch, kept))
                if acks or cursors:
                    self._free(acks, cursors)
                return False
            except Exception as err:
                self.last_commit_error = f"{type(err).__name__}: {err}"
                log.exception("committing %d events failed", len(batch))
                self._put_back_cursors(cursors)
                self._note_held_drops(self.spill.put_back(batch[:-1] if report else batch,
                                                          kept))
                return False
            if report is not None:
                with self._lock:
                    held, self._held_drops = self._held_drops, Counter()
                self.dropped["hold_full"] += sum(held.values())
                for (device, event_type), n in held.items():
                    self.dropped_by[(device, event_type, "hold_full")] += n
            acks, cursors = [], {}
            self._storage_recovered()
            self.last_commit_error = None
            self._settled(len(batch) - (report is not None))
            self._log_commits(committed)
            self._deliver(committed, drops)
            if self.buffer.reset_report is not None:
                self.emit_agent("agent.events_dropped", self.buffer.reset_report.data())
                self.buffer.reset_report = None
            if not len(self.spill):
                return True

    def _log_commits(self, committed: list[dict[str, Any]]) -> None:
        since, transactions, events = self._commit_log
        transactions, events = transactions + 1, events + len(committed)
        now = time.monotonic()
        if now - since >= COMMIT_LOG_EVERY and log.isEnabledFor(logging.DEBUG):
            log.debug("event buffer: %d events committed in %d transactions in the last %.0f s; "
                      "next seq %d, %d waiting", events, transactions, now - since,
                      self.buffer.stats().next_seq, self.buffer.stats().depth)
            since, transactions, events = now, 0, 0
        self._commit_log = [since, transactions, events]

    def _settled(self, count: int) -> None:
        """``count`` emitted events are committed or dropped: wake ``wait_committed``."""
        with self._lock:
            self._queued -= count
            if self._queued <= 0 and not len(self.spill):
                self._queued = 0
                self._idle.set()

    def _held_drops_report(self) -> Pending | None:
        if not self._held_drops:
            return None
        count = sum(self._held_drops.values())
        why = f"hold_full: {self.storage_problem}" if self.storage_problem else "hold_full"
        return self.dropped_event(Dropped(count, None, None, why))

    def _free(self, acks: list[int], cursors: dict[str, int] | None = None) -> bool:
        """Delete published events (and commit the outputs' cursors) while the buffer refuses
        new ones; True if it worked."""
        try:
            self.buffer.free(acks, cursors)
        except StorageUnavailable:
            with self._wakeup:
                self._acks[:0] = acks  # deletes wait too; losing one only means a duplicate
            self._put_back_cursors(cursors or {})
            return False
        except Exception:
            log.exception("deleting %d published events failed", len(acks))
            self._put_back_cursors(cursors or {})
            return False
        return True

    def _expire(self) -> None:
        try:
            while True:
                committed, drops = self.buffer.expire()
                self._deliver(committed, drops)
                if not drops:
                    return
        except StorageUnavailable as err:
            self._storage_failed(err)

    def _storage_failed(self, err: StorageUnavailable) -> None:
        problem = str(err)
        log.debug("event buffer: commit refused (%s); %d events held", problem, len(self.spill))
        if problem != self.storage_problem:
            log.error("event buffer %s cannot be written: %s. Events are held in memory (up to "
                      "%d, then the lowest priority goes first) and committed when it can be "
                      "written again; published events are still deleted", self.buffer.path,
                      problem, self.spill.limit)
        self.storage_problem = problem
        self.last_commit_error = problem

    def _storage_recovered(self) -> None:
        if self.storage_problem is not None:
            log.warning("event buffer %s can be written again: the events held in memory are "
                        "committed", self.buffer.path)
            self.storage_problem = None

    def _deliver(self, committed: list[dict[str, Any]], drops: list[Dropped]) -> None:
        for report in drops:
            self.dropped[report.reason] += report.count or 0
            for (device, event_type), count in report.kinds.items():
                self.dropped_by[(device, event_type, report.reason)] += count
            log.warning(
                "event buffer: dropped %s events (seq %s..%s): %s",
                report.count, report.first_seq, report.last_seq, report.reason,
            )
            self._announce_output_losses(report)
        if not committed:
            return
        for env in committed:
            self.emitted[(env["deviceid"], env["type"])] += 1
        self.on_commit()
        self.wake_outputs()
        for listener in self._listeners:
            for env in committed:
                try:
                    listener(env)
                except Exception:
                    log.exception("event listener failed")

    def _announce_output_losses(self, report: Dropped) -> None:
        for name in self.buffer.outputs:
            lost = missed(report, self.cursor(name))
            if lost is not None:
                try:
                    self.on_output_loss(name, lost)
                except Exception:
                    log.exception("announcing a loss of output %s failed", name)

    def reconfigure(self, config: Config) -> None:
        """Use a reloaded ``config`` from now on: each device's exit (its events' subject) and
        the settings drivers read as ``context.settings`` (agent/reload.py)."""
        self._exit_of = {d.id: d.exit for d in config.devices.values()}
        self.config = config
        self.settings = config.settings
