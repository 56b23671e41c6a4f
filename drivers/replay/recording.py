"""Parsing of replay recordings: one JSON object per line, no I/O beyond reading the file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import EventError
from agent.events import validate_data


@dataclass(frozen=True)
class Recorded:
    """One line of a recording."""

    type: str
    data: dict[str, Any]
    delay: float = 0.0
    subject: str | None = None


class RecordingError(ValueError):
    """A recording line that cannot be replayed; the message names the file and line."""


def parse_line(text: str, where: str) -> Recorded | None:
    """Parse one line; blank lines and ``#`` comments give None.

    Raises:
        RecordingError: not JSON, not an object, or not a valid catalogue event.
    """
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordingError(f"{where}: not JSON: {err.msg}") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise RecordingError(f'{where}: expected an object with "type", "data", optional "delay"')
    data = obj.get("data") or {}
    try:
        validate_data(obj["type"], data)
    except EventError as err:
        raise RecordingError(f"{where}: {err}") from err
    delay = obj.get("delay", 0.0)
    if not isinstance(delay, int | float) or delay < 0:
        raise RecordingError(f"{where}: delay must be a non-negative number of seconds")
    return Recorded(obj["type"], data, float(delay), obj.get("subject"))


def read_recording(path: Path) -> tuple[list[Recorded], list[str]]:
    """All valid lines of ``path`` and one error message per invalid line."""
    events: list[Recorded] = []
    errors: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            try:
                rec = parse_line(line, f"{path}:{number}")
            except RecordingError as err:
                errors.append(str(err))
                continue
            if rec is not None:
                events.append(rec)
    return events, errors
