"""Counter values kept across agent restarts, so that alarms a controller counted while the
agent was down (a restart, an upgrade) still become events.

They are kept with ``DriverContext.keep`` inside ``DriverContext.together`` with the events
counted from them: committed to the event buffer in the same transaction, so that after a crash
or a power cut the saved values match the events that survived (nothing counted twice, nothing
missed). Agents before
this kept them in ``<data_dir>/devices/<id>/counters.json``, written and fsynced at every poll
that changed one; that file is still read once when the buffer holds nothing yet."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FILE", "NAME", "CounterStore", "Restored", "read_legacy"]

NAME = "counters"
"""The name of the kept state (``DriverContext.keep``)."""
FILE = "counters.json"
VERSION = 1


def read_legacy(directory: Path) -> dict[str, Any] | None:
    """What an older agent saved in ``counters.json`` (``None``: nothing readable)."""
    try:
        doc = json.loads((directory / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


@dataclass(frozen=True)
class Restored:
    """What ``CounterStore.load`` found: baselines by register name, and why others were not
    restored (said in the log)."""

    values: dict[str, int]
    saved_at: float | None
    notes: list[str]


class CounterStore:
    """The counters of one device: its controller, and per counter where it is read and its
    last value. A counter whose table, address or type changed is not restored."""

    def __init__(self, controller: str) -> None:
        self.controller = controller
        self._written: dict[str, Any] | None = None

    def load(self, counters: Mapping[str, tuple[str, int, str]],
             saved: Mapping[str, Any] | None) -> Restored:
        """Baselines of ``counters`` (name -> (table, address, type)) from ``saved``.

        State saved for another controller (the map now points elsewhere: a replaced unit)
        gives 0 for every counter: the new controller's counts are counted as after a reset,
        within ``max_step``. Nothing saved restores nothing (a first start); a state that
        cannot be understood is reported and ignored.
        """
        if saved is None:
            return Restored({}, None, [])
        try:
            entries = saved["counters"]
            controller, saved_at = str(saved["controller"]), float(saved["saved_at"])
            if not isinstance(entries, dict):
                raise TypeError("counters is not a table")
        except (ValueError, KeyError, TypeError) as err:
            return Restored({}, None, [f"saved counter values unreadable ({err!r}): counting "
                                       "starts from the first read"])
        if controller != self.controller:
            return Restored(dict.fromkeys(counters, 0), saved_at, [
                f"counters were saved for another controller ({controller}), now "
                f"{self.controller}: taken as a reset, its counts are counted from 0"])
        values: dict[str, int] = {}
        notes: list[str] = []
        for name, (table, address, value_type) in counters.items():
            entry = entries.get(name)
            if not isinstance(entry, dict):
                continue
            if [entry.get("table"), entry.get("address"), entry.get("type")] != \
                    [table, address, value_type] or not isinstance(entry.get("value"), int):
                notes.append(f"counter {name} is now read from {table} {address} ({value_type}): "
                             "its saved value is not used")
                continue
            values[name] = entry["value"]
        return Restored(values, saved_at, notes)

    def document(self, values: Mapping[str, tuple[str, int, str, int]]) -> dict[str, Any] | None:
        """The state to keep for the counters (name -> (table, address, type, value)), or
        ``None`` when they did not change since the last one."""
        counters = {name: {"table": t, "address": a, "type": vt, "value": v}
                    for name, (t, a, vt, v) in values.items()}
        if counters == self._written:
            return None
        self._written = counters
        return {"version": VERSION, "controller": self.controller, "saved_at": time.time(),
                "counters": counters}
