"""Counter values kept in the device's data directory across agent restarts, so that alarms a
controller counted while the agent was down (a restart, an upgrade) still become events."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.files import write_atomic

__all__ = ["FILE", "CounterStore", "Restored"]

FILE = "counters.json"
VERSION = 1


@dataclass(frozen=True)
class Restored:
    """What ``CounterStore.load`` found: baselines by register name, and why others were not
    restored (said in the log)."""

    values: dict[str, int]
    saved_at: float | None
    notes: list[str]


class CounterStore:
    """``counters.json`` of one device: its controller, and per counter where it is read and
    its last value. A counter whose table, address or type changed is not restored."""

    def __init__(self, directory: Path, controller: str) -> None:
        self.path = directory / FILE
        self.controller = controller
        self._written: dict[str, Any] | None = None

    def load(self, counters: Mapping[str, tuple[str, int, str]]) -> Restored:
        """Baselines of ``counters`` (name -> (table, address, type)) from the file.

        A file saved for another controller (the map now points elsewhere: a replaced unit)
        gives 0 for every counter: the new controller's counts are counted as after a reset,
        within ``max_step``. A missing file restores nothing (a first start); an unreadable
        one is reported and ignored.
        """
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            entries = saved["counters"]
            controller, saved_at = str(saved["controller"]), float(saved["saved_at"])
        except FileNotFoundError:
            return Restored({}, None, [])
        except (OSError, ValueError, KeyError, TypeError) as err:
            return Restored({}, None, [f"{self.path} unreadable ({err}): counting starts from "
                                       "the first read"])
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

    def save(self, values: Mapping[str, tuple[str, int, str, int]]) -> bool:
        """Write the counters (name -> (table, address, type, value)) when they changed since
        the last write; True when written.

        Raises:
            OSError: the data directory cannot be written.
        """
        counters = {name: {"table": t, "address": a, "type": vt, "value": v}
                    for name, (t, a, vt, v) in values.items()}
        if counters == self._written:
            return False
        doc = {"version": VERSION, "controller": self.controller, "saved_at": time.time(),
               "counters": counters}
        write_atomic(self.path, json.dumps(doc, indent=1).encode())
        self._written = counters
        return True
