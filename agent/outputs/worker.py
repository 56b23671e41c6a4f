"""One output's thread: reads the buffer from its cursor in seq order and delivers at least once."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from agent.backoff import Backoff
from agent.buffer import Dropped
from agent.outputs.base import DeliveryError, Output

if TYPE_CHECKING:
    from agent.buffer import Buffer
    from agent.pipeline import Pipeline

log = logging.getLogger(__name__)

BATCH = 200
"""Events read from the buffer per query."""
IDLE_WAKE = 1.0
LOSS_LOG_INTERVAL = 60.0
RETRY_MIN = 0.5


class OutputWorker:
    """Delivers one output's events. Blocking sockets with timeouts, on its own thread: a slow
    or dead target holds back this output's cursor and nothing else."""

    def __init__(self, output: Output, pipeline: Pipeline, buffer: Buffer) -> None:
        self.output = output
        self.name = output.name
        self.pipeline = pipeline
        self.buffer = buffer
        self.cursor = 0
        self.delivered = 0
        self.skipped = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_drop: dict[str, Any] | None = None
        self.last_answer: str | None = None
        self.last_delivered: float | None = None
        self._loss_logged = -LOSS_LOG_INTERVAL
        self._unlogged: Dropped | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()
        """One send at a time on this output (the thread, or ``agent outputs test``)."""

    def start(self) -> None:
        self.cursor = self.pipeline.cursor(self.name)
        self._thread = threading.Thread(target=self._run, name=f"output-{self.name}",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._send_lock:
            self.output.close()
        self._log_loss()

    def wants(self, env: dict[str, Any]) -> bool:
        """Whether this output carries ``env`` (its type, and its test setting)."""
        cfg = self.output.config
        if env.get("type") not in cfg.types:
            return False
        return not (env.get("test") and cfg.test_events == "skip")

    def send(self, env: dict[str, Any], *, label: bool) -> str:
        """Deliver one event now (the thread's, or a test event).

        Raises:
            DeliveryError: not delivered.
        """
        with self._send_lock:
            return self.output.deliver(env, label=label)

    def _run(self) -> None:
        backoff = Backoff(initial=RETRY_MIN, cap=self.output.config.retry_max)
        while not self._stop.is_set():
            self._wake.clear()
            rows = self.buffer.fetch(self.cursor, BATCH, published=True)
            if not rows:
                self._wake.wait(IDLE_WAKE)
                continue
            for row in rows:
                env = json.loads(row.payload) if row.type in self.output.config.types else None
                if env is not None and self.wants(env):
                    if not self._deliver(env, backoff):
                        return  # stopping
                else:
                    self.skipped += 1
                self.cursor = row.seq
                self.pipeline.advance(self.name, row.seq)
                if self._stop.is_set():
                    return

    def _deliver(self, env: dict[str, Any], backoff: Backoff) -> bool:
        """Try until delivered (True) or stopping (False)."""
        while not self._stop.is_set():
            try:
                self.last_answer = self.send(env, label=bool(env.get("test")))
            except DeliveryError as err:
                if str(err) != self.last_error:
                    log.error("output %s (%s): seq %s not delivered: %s; retrying with backoff "
                              "(up to %g s)", self.name, self.output.kind, env.get("seq"), err,
                              self.output.config.retry_max)
                self.last_error = str(err)
                self._stop.wait(backoff.next())
                continue
            if self.last_error is not None:
                log.warning("output %s (%s) delivers again", self.name, self.output.kind)
                self.last_error = None
            backoff.reset()
            self.delivered += 1
            self.last_delivered = time.time()
            return True
        return False

    def lost(self, lost: Dropped) -> None:
        """The buffer dropped events this output had not delivered. Logged at once, then at
        most every ``LOSS_LOG_INTERVAL`` with what was dropped since (a full buffer drops a
        little at every commit); ``last_drop`` sums up every drop of this run."""
        count = lost.count or 0
        self.dropped += count
        first = self.last_drop["first_seq"] if self.last_drop else lost.first_seq
        self.last_drop = {"count": self.dropped, "first_seq": first, "last_seq": lost.last_seq,
                          "reason": lost.reason}
        if self._unlogged is None:
            self._unlogged = Dropped(0, lost.first_seq, None, lost.reason)
        self._unlogged = Dropped((self._unlogged.count or 0) + count, self._unlogged.first_seq,
                                 lost.last_seq, lost.reason)
        if time.monotonic() - self._loss_logged >= LOSS_LOG_INTERVAL:
            self._log_loss()

    def _log_loss(self) -> None:
        run, self._unlogged = self._unlogged, None
        if run is None:
            return
        self._loss_logged = time.monotonic()
        log.error("output %s (%s): %s events it had not delivered were dropped from the buffer "
                  "(seq %s..%s, %s): the VMS will never get them", self.name, self.output.kind,
                  run.count, run.first_seq, run.last_seq, run.reason)

    def status(self) -> dict[str, Any]:
        behind, age = self.buffer.lag(self.cursor)
        return {
            "kind": self.output.kind,
            "target": self.output.config.target(),
            "connected": self.output.connected,
            "cursor": self.cursor,
            "lag_events": behind,
            "lag_s": round(age, 1) if behind and age is not None else 0.0,
            "delivered": self.delivered,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "last_error": self.last_error,
            "last_drop": self.last_drop,
        }
