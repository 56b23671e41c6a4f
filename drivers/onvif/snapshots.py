"""Evidence snapshots: which events trigger one, and a JPEG store with retention by count, size, age."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.files import write_atomic

__all__ = ["SavedSnapshot", "SnapshotStore", "is_trigger"]


def is_trigger(env: dict[str, Any], types: Collection[str], *, device_id: str, exit_name: str | None,
               include_test: bool) -> bool:
    """Whether the committed event ``env`` asks this camera for a snapshot.

    It must be one of ``types``, concern this camera's exit (``subject``), come from another
    device (never our own events, so a snapshot cannot trigger a snapshot), and be a real
    event unless ``include_test``.
    """
    return (
        env.get("type") in types
        and exit_name is not None
        and env.get("subject") == exit_name
        and env.get("deviceid") != device_id
        and env.get("type") != "camera.snapshot"
        and (include_test or not env.get("test"))
    )


@dataclass(frozen=True)
class SavedSnapshot:
    """A stored snapshot as ``camera.snapshot`` announces it."""

    path: Path
    sha256: str
    bytes: int


class SnapshotStore:
    """JPEG files in ``directory``, pruned after each save to ``keep`` files, ``max_bytes``, ``max_age``.

    Methods do blocking file I/O: call them from a thread.
    """

    def __init__(self, directory: Path, *, keep: int, max_bytes: int, max_age: float) -> None:
        self.directory = directory
        self.keep, self.max_bytes, self.max_age = keep, max_bytes, max_age

    def save(self, image: bytes, trigger_id: str, when: float, *,
             keep_since: float | None = None) -> SavedSnapshot:
        """Write ``image`` atomically, then prune older files (never it, never one written at
        or after ``keep_since``: those an unpublished event may name); returns where it went
        and its hash.

        Raises:
            OSError: the file could not be written.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
        path = self.directory / f"{stamp}Z-{trigger_id[-12:]}.jpg"
        write_atomic(path, image)
        self.prune(keep={path}, keep_since=keep_since)
        return SavedSnapshot(path, hashlib.sha256(image).hexdigest(), len(image))

    def files(self) -> list[tuple[Path, int, float]]:
        """Stored snapshots, oldest first: (path, bytes, modification time)."""
        out = []
        for path in self.directory.glob("*.jpg"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append((path, st.st_size, st.st_mtime))
        return sorted(out, key=lambda f: (f[2], f[0].name))

    def prune(self, now: float | None = None, *, keep: Collection[Path] = (),
              keep_since: float | None = None) -> int:
        """Delete the oldest snapshots beyond the count, bytes or age limit, except those in
        ``keep`` and those written at or after ``keep_since`` (all still count towards the
        limits); returns how many went."""
        now = time.time() if now is None else now
        files = self.files()
        count, total = len(files), sum(size for _, size, _ in files)
        removed = 0
        for path, size, mtime in files:
            if path in keep or (keep_since is not None and mtime >= keep_since):
                continue
            if count <= self.keep and total <= self.max_bytes and now - mtime <= self.max_age:
                break
            path.unlink(missing_ok=True)
            count, total, removed = count - 1, total - size, removed + 1
        return removed
