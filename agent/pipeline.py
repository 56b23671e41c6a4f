"""emit() to committed event: envelopes are stamped, grouped and committed by one writer thread."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.buffer import Buffer, Dropped, Pending
from agent.clock import ClockWatch
from agent.config import Config, Settings
from agent.events import AGENT_DEVICE, priority_of, rfc3339, uuid7, validate_data
from agent.watchdog import Heartbeat

log = logging.getLogger(__name__)

ACK_FLUSH_INTERVAL = 0.2
"""Deleting published events is batched: losing a delete only means a duplicate later."""
ACK_FLUSH_COUNT = 2000
EXPIRE_INTERVAL = 60.0
IDLE_WAKE = 1.0
"""The writer goes round its loop at least this often, so that its heartbeat shows it is alive."""

Listener = Callable[[dict[str, Any]], None]

_STOP = object()


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
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._listeners: list[Listener] = []
        self._test_devices: set[str] = set()
        self._idle = threading.Event()
        self._idle.set()
        self._queued = 0
        self._lock = threading.Lock()
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
            "test": bool(test) if test is not None else device_id in self._test_devices,
            "data": clean,
        }
        if subject:
            env["subject"] = subject
        with self._lock:
            self._queued += 1
            self._idle.clear()
        self._queue.put(Pending(env, priority_of(event_type)))
        return event_id

    def publish_state(self, device_id: str, state: dict[str, Any]) -> None:
        self.on_state(device_id, state)

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
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def set_test_devices(self, devices: set[str], active: bool) -> None:
        """Mark events of ``devices`` as ``test=true`` while a self-test runs at their exit."""
        if active:
            self._test_devices |= devices
        else:
            self._test_devices -= devices

    def ack(self, seqs: list[int]) -> None:
        """The broker has these seqs: delete them from the buffer (batched)."""
        self._queue.put(("ack", seqs))

    def wait_committed(self, timeout: float) -> bool:
        """Wait until every emitted event is committed."""
        return self._idle.wait(timeout)

    # -- writer thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._writer, name="buffer-writer", daemon=True)
        self.writer_beat.attach(self._thread)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, flush pending deletes, and stop the writer thread."""
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)

    def _writer(self) -> None:
        acks: list[int] = []
        last_ack_flush = last_expire = time.monotonic()
        stopping = False
        while not stopping:
            self.writer_beat.beat()
            timeout = ACK_FLUSH_INTERVAL if acks else IDLE_WAKE
            try:
                items = [self._queue.get(timeout=timeout)]
            except queue.Empty:
                items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch: list[Pending] = []
            for item in items:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, Pending):
                    batch.append(item)
                else:
                    acks.extend(item[1])
            now = time.monotonic()
            flush_acks = stopping or len(acks) >= ACK_FLUSH_COUNT or (
                acks and now - last_ack_flush >= ACK_FLUSH_INTERVAL
            )
            if batch or flush_acks:
                self._commit(batch, acks if flush_acks else [])
                if flush_acks:
                    acks = []
                    last_ack_flush = now
            if now - last_expire >= EXPIRE_INTERVAL:
                last_expire = now
                self._deliver(*self.buffer.expire())

    def _commit(self, batch: list[Pending], acks: list[int]) -> None:
        try:
            committed, drops = self.buffer.commit(batch, acks)
        except Exception as err:  # a full disk must not kill the writer: keep the events
            self.last_commit_error = f"{type(err).__name__}: {err}"
            log.exception("committing %d events failed; retrying in 1 s", len(batch))
            time.sleep(1.0)
            for pending in batch:
                self._queue.put(pending)
            if acks:
                self._queue.put(("ack", acks))
            return
        self.last_commit_error = None
        with self._lock:
            self._queued -= len(batch)
            if self._queued <= 0:
                self._queued = 0
                self._idle.set()
        self._deliver(committed, drops)

    def _deliver(self, committed: list[dict[str, Any]], drops: list[Dropped]) -> None:
        for report in drops:
            self.dropped[report.reason] += report.count or 0
            for (device, event_type), count in report.kinds.items():
                self.dropped_by[(device, event_type, report.reason)] += count
            log.warning(
                "event buffer: dropped %s events (seq %s..%s): %s",
                report.count, report.first_seq, report.last_seq, report.reason,
            )
        if not committed:
            return
        for env in committed:
            self.emitted[(env["deviceid"], env["type"])] += 1
        self.on_commit()
        for listener in list(self._listeners):
            for env in committed:
                try:
                    listener(env)
                except Exception:
                    log.exception("event listener failed")

    def reconfigure(self, config: Config) -> None:
        """Use a reloaded ``config`` from now on: each device's exit (its events' subject) and
        the settings drivers read as ``context.settings`` (agent/reload.py)."""
        self._exit_of = {d.id: d.exit for d in config.devices.values()}
        self.config = config
        self.settings = config.settings
