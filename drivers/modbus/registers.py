"""Register maps without I/O: read planning, value decoding, and values to events (counters too)."""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BIT_TABLES",
    "MAX_COUNT",
    "Block",
    "CounterStep",
    "Emission",
    "EventRule",
    "Point",
    "Tracker",
    "counter_delta",
    "decode",
    "plan_reads",
    "value_text",
    "width",
]

Table = Literal["coil", "discrete_input", "holding", "input"]
ValueType = Literal["bool", "uint16", "int16", "uint32", "int32", "float32"]

BIT_TABLES = ("coil", "discrete_input")
MAX_COUNT = {"coil": 2000, "discrete_input": 2000, "holding": 125, "input": 125}
"""Most items one request may read (Modbus application protocol, functions 1 to 4)."""

_BITS = {"uint16": 16, "uint32": 32}


def width(table: str, value_type: str) -> int:
    """How many addresses (bits or 16-bit registers) one value occupies."""
    if table in BIT_TABLES:
        return 1
    return 2 if value_type in ("uint32", "int32", "float32") else 1


@dataclass(frozen=True)
class Point:
    """What the planner needs of a register map entry."""

    key: int
    table: str
    address: int
    type: str


@dataclass
class Block:
    """One read request: ``count`` items of ``table`` from ``start``, holding ``points``."""

    table: str
    start: int
    count: int
    points: list[Point] = dataclasses.field(default_factory=list)


def plan_reads(points: list[Point], max_gap: int) -> list[Block]:
    """As few requests as sensible: contiguous or nearly contiguous values (at most ``max_gap``
    unused addresses between them) of one table share a request, within the protocol's limit."""
    blocks: list[Block] = []
    for table in ("coil", "discrete_input", "holding", "input"):
        current: Block | None = None
        for p in sorted((p for p in points if p.table == table), key=lambda p: p.address):
            end = p.address + width(table, p.type)
            if (current is not None and p.address <= current.start + current.count + max_gap
                    and end - current.start <= MAX_COUNT[table]):
                current.count = max(current.count, end - current.start)
            else:
                current = Block(table, p.address, end - p.address)
                blocks.append(current)
            current.points.append(p)
    return blocks


def decode(values: list[int] | list[bool], offset: int, value_type: str, *,
           word_order: str = "big", bit: int | None = None) -> bool | int | float:
    """The value at ``offset`` of a read block.

    Bit tables give bool. Registers hold 16-bit words, big-endian inside each word (Modbus);
    32-bit values span two registers, most significant first unless ``word_order`` is
    ``little`` (common on PLCs). ``bit`` picks one bit of a 16-bit register as a bool.

    Raises:
        IndexError: the block is shorter than the value.
    """
    if isinstance(values[offset], bool):  # coils and discrete inputs
        return bool(values[offset])
    words = [int(v) & 0xFFFF for v in values[offset:offset + width("holding", value_type)]]
    if value_type == "bool":
        return bool(words[0] >> bit & 1) if bit is not None else words[0] != 0
    if value_type in ("uint16", "int16"):
        raw = struct.pack(">H", words[0])
        return int(struct.unpack(">h" if value_type == "int16" else ">H", raw)[0])
    if len(words) < 2:
        raise IndexError("a 32-bit value needs two registers")
    if word_order == "little":
        words.reverse()
    raw = struct.pack(">HH", *words)
    fmt = {"uint32": ">I", "int32": ">i", "float32": ">f"}[value_type]
    value = struct.unpack(fmt, raw)[0]
    return float(value) if value_type == "float32" else int(value)


@dataclass(frozen=True)
class CounterStep:
    """How a counter moved between two reads."""

    delta: int
    kind: Literal["up", "same", "wrap", "restart", "jump"]


def counter_delta(old: int, new: int, bits: int, max_step: int) -> CounterStep:
    """Counts between two reads of an unsigned ``bits``-wide counter.

    - up: ``new - old``.
    - wrap: the counter passed its maximum and started again at 0; what it counted is
      ``new + 2**bits - old``, taken when that is at most ``max_step``.
    - restart: the value went down and is no wrap: the controller restarted (or the counter
      was reset) and counts from 0 again, so ``new`` counts happened since.
    - jump: more than ``max_step`` at once: not believable (a wrong map entry, a reset to a
      preset value); nothing is counted and ``new`` becomes the baseline.
    """
    if new == old:
        return CounterStep(0, "same")
    if new > old:
        step = CounterStep(new - old, "up")
    else:
        wrapped = new + (1 << bits) - old
        step = CounterStep(wrapped, "wrap") if wrapped <= max_step else CounterStep(new, "restart")
    if step.delta > max_step:
        return CounterStep(0, "jump")
    return step


@dataclass(frozen=True)
class Emission:
    """An event a value change gives."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class EventRule:
    """What an edge, increment or change of one entry emits.

    ``field`` receives the value (on_change) or the increment (on_increment; without a field,
    an increment of n gives n events). ``values`` maps a value (as text) to what is emitted
    instead, ``ignore`` lists values that give no event (a fault code 0 meaning "no fault").
    """

    type: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    field: str | None = None
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyed by the value as text: ``"3"``, ``"true"``."""
    ignore: tuple[str, ...] = ()
    """Values as text."""

    def emissions(self, value: bool | int | float | None) -> list[Emission]:
        """The event for a new ``value`` (None for an edge: the data as configured)."""
        if value is not None and value_text(value) in self.ignore:
            return []
        data = dict(self.data)
        if value is not None and self.field:
            data[self.field] = self.values.get(value_text(value), value)
        return [Emission(self.type, data)]

    def increments(self, delta: int) -> list[Emission]:
        """The events for a counter that went up by ``delta``."""
        if self.field:
            return [Emission(self.type, {**self.data, self.field: delta})]
        return [Emission(self.type, dict(self.data)) for _ in range(delta)]


def value_text(value: Any) -> str:
    """A value as the text keys of ``values`` and ``ignore`` use: ``3``, ``true``, ``1.5``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Tracker:
    """The last value of one map entry, and the events a new value gives.

    The first value read is the baseline and gives no event: the agent cannot know what
    happened before it started. The tracker is kept across reconnections, so increments and
    edges that happened while the controller was unreachable are still seen.
    """

    def __init__(self, *, value_type: str, on_rise: EventRule | None = None,
                 on_fall: EventRule | None = None, on_increment: EventRule | None = None,
                 on_change: EventRule | None = None, max_step: int = 1000) -> None:
        self.value_type = value_type
        self.on_rise = on_rise
        self.on_fall = on_fall
        self.on_increment = on_increment
        self.on_change = on_change
        self.max_step = max_step
        self.value: bool | int | float | None = None
        self.last_step: CounterStep | None = None

    def observe(self, value: bool | int | float) -> list[Emission]:
        """Events for ``value``, given the previous one; updates the previous one."""
        old, self.value = self.value, value
        if old is None or old == value:
            return []
        out: list[Emission] = []
        if self.on_rise is not None and not old and value:
            out += self.on_rise.emissions(None)
        if self.on_fall is not None and old and not value:
            out += self.on_fall.emissions(None)
        if self.on_increment is not None:
            step = counter_delta(int(old), int(value), _BITS.get(self.value_type, 32),
                                 self.max_step)
            self.last_step = step
            if step.delta:
                out += self.on_increment.increments(step.delta)
        if self.on_change is not None:
            out += self.on_change.emissions(value)
        return out
