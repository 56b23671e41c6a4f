"""Line framing and rule matching for text event feeds, without I/O (tested by fuzzing)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, get_args

from agent.events import CATALOGUE

__all__ = [
    "BadFrame",
    "CompiledRule",
    "LineFramer",
    "LineParser",
    "Matched",
    "Unmatched",
    "convert",
    "field_kind",
    "normalise_direction",
    "required_fields",
]

_DIRECTIONS = {
    "in": "in", "i": "in", "entry": "in", "enter": "in", "entering": "in", "inbound": "in",
    "incoming": "in", "<": "in",
    "out": "out", "o": "out", "exit": "out", "exiting": "out", "leaving": "out",
    "outbound": "out", "outgoing": "out", ">": "out",
}
_TRUE = {"1", "true", "on", "yes", "y", "active", "set"}
_FALSE = {"0", "false", "off", "no", "n", "inactive", "clear", "cleared"}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
# C0 controls other than TAB mark a frame as noise: text protocols never send them mid-line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def normalise_direction(value: str) -> str:
    """``in``, ``out`` or ``unknown`` for a pedestal's direction word (``EXIT``, ``O``, ``>``...)."""
    return _DIRECTIONS.get(value.strip().lower(), "unknown")


def field_kind(event_type: str, name: str) -> str:
    """How a captured text becomes the catalogue field ``name``: ``str``, ``bool``, ``integer``
    or ``number``."""
    model = CATALOGUE[event_type]
    for fname, info in model.model_fields.items():
        if name in (fname, info.alias):
            kinds = set(get_args(info.annotation)) or {info.annotation}
            if bool in kinds:
                return "bool"
            if str in kinds and not kinds & {int, float}:
                return "str"
            if int in kinds and float not in kinds:
                return "integer"  # e.g. a pedestal id: "1E20" stays text, never 1e+20
            return "number"
    return "number"  # a vendor's extra field: numbers if they look like numbers


def required_fields(event_type: str) -> list[str]:
    """The ``data`` fields of ``event_type`` that have no default."""
    return [info.alias or name for name, info in CATALOGUE[event_type].model_fields.items()
            if info.is_required()]


def convert(event_type: str, name: str, text: str) -> Any:
    """A captured group as the value of ``data[name]``: direction normalised, numbers and booleans
    converted where the catalogue field allows them, otherwise the text."""
    if name == "direction":
        return normalise_direction(text)
    kind = field_kind(event_type, name)
    if kind == "str":
        return text
    if kind == "bool":
        return _to_bool(text)
    return _to_number(text, floats=kind == "number")


def _to_bool(text: str) -> Any:
    low = text.strip().lower()
    if low in _TRUE or low in _FALSE:
        return low in _TRUE
    return text  # left for the catalogue check to reject, naming the field


def _to_number(text: str, *, floats: bool = True) -> Any:
    stripped = text.strip()
    if _INT.fullmatch(stripped):
        return int(stripped)
    if floats and _FLOAT.fullmatch(stripped):
        return float(stripped)
    return text


@dataclass(frozen=True)
class CompiledRule:
    """One rule: a pattern searched in each line, and what a match becomes."""

    pattern: re.Pattern[str]
    type: str | None
    """Catalogue event type, or None for a rule that recognises a line and emits nothing."""
    data: dict[str, Any] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per group: the captured text (lower case) -> the value to use (vendor codes)."""
    raw: bool = False

    def apply(self, line: str) -> dict[str, Any] | None:
        """``data`` for ``line`` if the pattern is found in it, else None."""
        match = self.pattern.search(line)
        if match is None:
            return None
        if self.type is None:
            return {}
        data = dict(self.data)
        for name, text in match.groupdict().items():
            if text is None:
                continue  # an optional group that did not take part
            mapped = self.values.get(name, {})
            key = text.strip().lower()
            data[name] = mapped[key] if key in mapped else convert(self.type, name, text)
        if self.raw:
            data["raw"] = line
        return data


@dataclass(frozen=True)
class Matched:
    """A line a rule turned into an event (``type`` None: a recognised line without an event)."""

    type: str | None
    data: dict[str, Any]
    line: str
    rule: int


@dataclass(frozen=True)
class Unmatched:
    """A well-formed text line that no rule recognised."""

    line: str


@dataclass(frozen=True)
class BadFrame:
    """A frame that is not text of the configured encoding, or too long: noise on the line."""

    reason: str
    sample: bytes


class LineFramer:
    """Splits a byte stream into lines at ``terminator``, holding at most ``max_line`` bytes.

    A line longer than ``max_line`` is dropped whole: its start is reported once as a bad frame
    and the rest is skipped up to the next terminator, so endless noise costs bounded memory.
    """

    def __init__(self, terminator: bytes, max_line: int) -> None:
        if not terminator:
            raise ValueError("the line terminator cannot be empty")
        self.terminator = terminator
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes held while waiting for a terminator."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partial line (the connection it came from is gone)."""
        self._buf.clear()
        self._skipping = False

    def feed(self, chunk: bytes) -> list[bytes | BadFrame]:
        """The complete lines (without terminator) and overlong frames in ``chunk``."""
        out: list[bytes | BadFrame] = []
        self._buf += chunk
        term = self.terminator
        start = 0
        while True:
            end = self._buf.find(term, start)
            if end < 0:
                break
            line = bytes(self._buf[start:end])
            start = end + len(term)
            if self._skipping:
                self._skipping = False  # the tail of an overlong line
                continue
            if len(line) > self.max_line:
                out.append(BadFrame(f"line longer than {self.max_line} bytes", line[:32]))
                continue
            out.append(line)
        del self._buf[:start]
        if len(self._buf) > self.max_line:
            # Keep the last bytes: they may hold the start of a terminator split across reads.
            keep = len(term) - 1
            if not self._skipping:
                out.append(BadFrame(f"line longer than {self.max_line} bytes",
                                    bytes(self._buf[:32])))
            self._skipping = True
            del self._buf[: len(self._buf) - keep]
        return out


class LineParser:
    """Bytes in, outcomes out: framing, decoding and the first matching rule, with counters."""

    def __init__(self, rules: list[CompiledRule], *, terminator: bytes, encoding: str = "utf-8",
                 max_line: int = 512) -> None:
        self.rules = rules
        self.encoding = encoding
        self.framer = LineFramer(terminator, max_line)
        self.frames = 0
        self.matched = 0
        self.unmatched = 0
        self.bad_frames = 0

    def feed(self, chunk: bytes) -> list[Matched | Unmatched | BadFrame]:
        """Everything ``chunk`` completes, in order; blank lines are skipped silently."""
        out: list[Matched | Unmatched | BadFrame] = []
        for frame in self.framer.feed(chunk):
            result = self.parse_frame(frame) if isinstance(frame, bytes) else frame
            if result is None:
                continue
            self.frames += 1
            if isinstance(result, BadFrame):
                self.bad_frames += 1
            elif isinstance(result, Unmatched):
                self.unmatched += 1
            else:
                self.matched += 1
            out.append(result)
        return out

    def parse_frame(self, frame: bytes) -> Matched | Unmatched | BadFrame | None:
        """One line without its terminator; None for a blank line."""
        try:
            text = frame.decode(self.encoding)
        except UnicodeDecodeError as err:
            return BadFrame(f"not {self.encoding}: {err.reason} at byte {err.start}", frame[:32])
        line = text.strip()
        if not line:
            return None
        if _CONTROL.search(line):
            return BadFrame("control characters in line", frame[:32])
        for index, rule in enumerate(self.rules):
            data = rule.apply(line)
            if data is not None:
                return Matched(rule.type, data, line, index)
        return Unmatched(line)
