"""Committed events to the open pages: one pipeline subscription, a bounded queue per page.

The pipeline calls the listener on the buffer's writer thread. It must never block there: it
appends to a deque and, when none is pending, schedules one hand-over to the event loop, which
serialises each event once and offers it to every page. A page that does not keep up loses
events (counted and shown on the page), never the pipeline.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PAGE_QUEUE", "EventHub", "Page"]

PAGE_QUEUE = 500
"""Events waiting for one page; past it the page loses the newest and is told how many."""


@dataclass(eq=False)
class Page:
    """One open live-events page: its filter and its queue of serialised events."""

    exit: str | None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(PAGE_QUEUE))
    lost: int = 0


class EventHub:
    """Fans committed events out to the pages; subscribe with ``pipeline.subscribe(hub.listener)``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.pages: set[Page] = set()
        self._incoming: deque[dict[str, Any]] = deque(maxlen=PAGE_QUEUE * 4)
        self._lock = threading.Lock()
        self._scheduled = False

    def listener(self, env: dict[str, Any]) -> None:  # on the buffer's writer thread
        if not self.pages:
            return
        self._incoming.append(env)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            self._scheduled = False
        while self._incoming:
            env = self._incoming.popleft()
            line = json.dumps(env, separators=(",", ":"))
            for page in self.pages:
                if page.exit is not None and env.get("subject") != page.exit:
                    continue
                try:
                    page.queue.put_nowait(line)
                except asyncio.QueueFull:
                    page.lost += 1

    def open(self, exit_name: str | None) -> tuple[Page, Callable[[], None]]:
        page = Page(exit_name)
        self.pages.add(page)
        return page, lambda: self.pages.discard(page)
