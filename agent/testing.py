"""Test tools for driver authors: run one driver on the real pipeline and buffer, no broker needed.

Like gpiozero's MockFactory, this ships with the agent so that vendors test the same way we do::

    async with DriverHarness("replay", {"file": "rec.jsonl"}, tmp_path=tmp) as h:
        alarm = await h.wait_for("eas.alarm")
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from agent.buffer import Buffer
from agent.config import Config, load_config
from agent.context import undelivered_since
from agent.driver import Driver
from agent.errors import EventError
from agent.pipeline import Pipeline

__all__ = ["DriverHarness", "write_config"]


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` (a dict shaped like agent.toml) as TOML to ``path``."""
    path.write_text(tomli_w.dumps(config))
    return path


class _RecordingContext:
    """The pipeline as a driver sees it, remembering every emit the catalogue refused.

    A driver that catches its own errors would otherwise lose such an event without a trace.
    """

    def __init__(self, pipeline: Pipeline, rejected: list[str]) -> None:
        self._pipeline = pipeline
        self._rejected = rejected

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)

    def emit(self, device_id: str, event_type: str, data: dict[str, Any] | None = None,
             **kw: Any) -> str:
        try:
            return self._pipeline.emit(device_id, event_type, data, **kw)
        except EventError as err:
            self._rejected.append(str(err))
            raise

    def undelivered_since(self) -> float | None:
        return undelivered_since(self._pipeline.buffer)


class DriverHarness:
    """One device of ``driver`` with ``options``, on a real ``Pipeline`` and SQLite ``Buffer``.

    ``events`` holds every committed envelope (seq assigned), ``states`` every published state,
    ``rejected`` the error of every emit the catalogue refused (unknown type, invalid data).
    Leaving the ``async with`` cancels the driver and fails if it does not stop within ``stop_within``.
    """

    def __init__(
        self,
        driver: str,
        options: dict[str, Any],
        *,
        tmp_path: Path,
        device_id: str = "dev1",
        settings: dict[str, Any] | None = None,
        stop_within: float = 2.0,
    ) -> None:
        self.device_id = device_id
        self.stop_within = stop_within
        doc: dict[str, Any] = {
            "agent": {"store_id": "test", "data_dir": str(tmp_path / "data"),
                      "control_socket": str(tmp_path / "control.sock")},
            "gpio": {"pin_factory": "mock"},
        }
        for section, values in (settings or {}).items():
            doc.setdefault(section, {}).update(values)
        doc.setdefault("devices", {})[device_id] = {"driver": driver, **options}
        self.config: Config = load_config(write_config(tmp_path / "agent.toml", doc))
        self.buffer = Buffer(tmp_path / "data" / "buffer.db", max_bytes=64 * 1024**2,
                             max_age=86400, on_dropped=lambda r: self.pipeline.dropped_event(r))
        self.pipeline = Pipeline(self.config, self.buffer)
        self.events: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self._cond = threading.Condition()
        self.pipeline.subscribe(self._on_event)
        self.pipeline.on_state = self._on_state
        dev = self.config.devices[device_id]
        context = _RecordingContext(self.pipeline, self.rejected)
        self.driver: Driver = dev.driver(device_id, dev.config, context)
        self.task: asyncio.Task[None] | None = None

    def _on_event(self, env: dict[str, Any]) -> None:
        with self._cond:
            self.events.append(env)
            self._cond.notify_all()

    def _on_state(self, device_id: str, state: dict[str, Any]) -> None:
        with self._cond:
            self.states.append(state)
            self._cond.notify_all()

    async def __aenter__(self) -> DriverHarness:
        self.buffer.open()
        self.pipeline.start()
        self.task = asyncio.create_task(self.driver.run(), name=f"driver:{self.device_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Cancel the driver and stop the pipeline.

        Raises:
            AssertionError: the driver took longer than ``stop_within`` to stop.
            Exception: whatever ``run()`` raised before it was cancelled.
        """
        try:
            if self.task is not None:
                task, self.task = self.task, None
                task.cancel()
                start = time.monotonic()
                done, _ = await asyncio.wait({task}, timeout=self.stop_within)
                self.stop_took = time.monotonic() - start
                if not done:
                    raise AssertionError(f"driver did not stop within {self.stop_within} s of "
                                         "cancellation")
                with contextlib.suppress(asyncio.CancelledError):
                    exc = task.exception()
                    if exc is not None:
                        raise exc
        finally:
            await asyncio.to_thread(self.pipeline.stop)
            self.buffer.close()

    def _raise_if_crashed(self) -> None:
        """Raise what ``run()`` raised, if it ended with an exception."""
        if self.task is not None and self.task.done() and not self.task.cancelled():
            exc = self.task.exception()
            if exc is not None:
                raise exc

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        """Committed events of ``event_type``, in seq order."""
        with self._cond:
            return [e for e in self.events if e["type"] == event_type]

    async def wait_for(
        self,
        event_type: str,
        *,
        timeout: float = 5.0,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        count: int = 1,
    ) -> dict[str, Any]:
        """The ``count``-th committed event of ``event_type`` matching ``where``.

        Raises:
            TimeoutError: it did not come within ``timeout``; the message lists what came.
        """
        deadline = time.monotonic() + timeout
        while True:
            matches = [e for e in self.of_type(event_type) if where(e)]
            if len(matches) >= count:
                return matches[count - 1]
            self._raise_if_crashed()
            if time.monotonic() > deadline:
                seen = [(e["type"], e["data"]) for e in self.events][-10:]
                raise TimeoutError(f"no {event_type} (x{count}) within {timeout} s; last: {seen}")
            await asyncio.sleep(0.01)

    async def wait_state(
        self, where: Callable[[dict[str, Any]], bool], *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first published state matching ``where``.

        Raises:
            TimeoutError: none within ``timeout``; the message shows the last states.
            Exception: what ``run()`` raised, if it ended with an exception.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                for state in self.states:
                    if where(state):
                        return state
            self._raise_if_crashed()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching state within {timeout} s; last: "
                                   f"{self.states[-3:]}")
            await asyncio.sleep(0.01)
