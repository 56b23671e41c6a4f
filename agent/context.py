"""What drivers get as their ``DriverContext``: the pipeline, self-test marks and delivery state."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.buffer import Buffer
    from agent.config import Settings
    from agent.pipeline import Pipeline
    from agent.selftest.marks import TestMarks

__all__ = ["Context", "undelivered_since"]


def undelivered_since(buffer: Buffer) -> float | None:
    """When (epoch seconds) the oldest event the broker has not acknowledged yet was emitted;
    ``None`` when all are delivered. Delivery is in seq order, so every event emitted after it
    is still unpublished too."""
    age = buffer.stats().oldest_age
    return None if age is None else time.time() - age


class Context:
    """A driver's way into the core; every method is safe to call from any thread."""

    def __init__(self, pipeline: Pipeline, marks: TestMarks) -> None:
        self.pipeline = pipeline
        self.marks = marks

    @property
    def store_id(self) -> str:
        return self.pipeline.store_id

    @property
    def settings(self) -> Settings:
        """The running configuration (a reload replaces it)."""
        return self.pipeline.settings

    def emit(self, device_id: str, event_type: str, data: dict[str, Any] | None = None, *,
             time: float | None = None, subject: str | None = None) -> str:
        """Validate, stamp and queue one event; ``test`` only when a self-test claimed it
        (``agent.selftest.marks``).

        Raises:
            EventError: not a catalogue type, or ``data`` does not fit the type.
        """
        test = self.marks.claimed(device_id, event_type, data)
        event_id = self.pipeline.emit(device_id, event_type, data, time=time, subject=subject,
                                      test=test)
        if test:
            self.marks.note(event_id)
        return event_id

    def publish_state(self, device_id: str, state: dict[str, Any]) -> None:
        self.pipeline.publish_state(device_id, state)

    async def room(self) -> None:
        await self.pipeline.room()

    def data_dir(self, device_id: str) -> Path:
        return self.pipeline.data_dir(device_id)

    def keep(self, device_id: str, name: str, value: dict[str, Any]) -> None:
        self.pipeline.keep(device_id, name, value)

    def together(self) -> AbstractContextManager[None]:
        return self.pipeline.together()

    def kept(self, device_id: str, name: str) -> dict[str, Any] | None:
        return self.pipeline.kept(device_id, name)

    def exit_of(self, device_id: str) -> str | None:
        return self.pipeline.exit_of(device_id)

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        return self.pipeline.subscribe(listener)

    def undelivered_since(self) -> float | None:
        return undelivered_since(self.pipeline.buffer)
