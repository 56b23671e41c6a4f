"""ONVIF notification messages to catalogue events, without I/O: topic rules and state tracking."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_RULES", "EVENT_TYPES", "EventMapper", "Mapped", "Message", "TopicRule",
           "normalise_topic", "parse_bool"]

EVENT_TYPES = ("camera.motion", "camera.tamper", "camera.input", "ignore")
"""What a topic rule may map to; ``ignore`` silences a topic without counting it as unmapped."""

_DEFAULT_STATE = {
    "camera.motion": ("State", "IsMotion"),
    "camera.tamper": ("State", "IsTamper"),
    "camera.input": ("LogicalState", "State"),
    "ignore": (),
}
_TRUE = {"true", "1", "on", "active", "yes", "high"}
_FALSE = {"false", "0", "off", "inactive", "no", "low"}


@dataclass(frozen=True)
class Message:
    """One notification as the camera sent it, reduced to plain strings."""

    topic: str
    utc_time: Any = None
    operation: str | None = None
    """``PropertyOperation``: ``Initialized``, ``Changed`` or ``Deleted``; None for plain events."""
    source: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicRule:
    """Topics matching ``pattern`` become ``event``; ``state`` names the data item holding active.

    A pattern is a topic (namespace prefixes are ignored); a last segment ``*`` or the ONVIF
    ``//.`` suffix matches that topic itself and everything below it.
    """

    pattern: str
    event: str
    kind: str | None = None
    state: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.event not in EVENT_TYPES:
            raise ValueError(f"topic {self.pattern!r}: event must be one of {', '.join(EVENT_TYPES)}")
        if self.event == "camera.tamper" and not self.kind:
            raise ValueError(f"topic {self.pattern!r}: camera.tamper needs a kind")

    @property
    def _parts(self) -> tuple[tuple[str, ...], bool]:
        text = self.pattern.strip()
        subtree = text.endswith(("//.", "/*"))
        return tuple(normalise_topic(text.removesuffix("//.").removesuffix("/*")).split("/")), \
            subtree

    def matches(self, topic: str) -> bool:
        """Whether the normalised ``topic`` falls under this rule."""
        parts, subtree = self._parts
        got = tuple(topic.split("/"))
        return got == parts or (subtree and got[:len(parts)] == parts)

    @property
    def specificity(self) -> int:
        parts, subtree = self._parts
        return len(parts) * 2 + (0 if subtree else 1)


DEFAULT_RULES: tuple[TopicRule, ...] = (
    TopicRule("tns1:VideoSource/MotionAlarm", "camera.motion"),
    TopicRule("tns1:RuleEngine/CellMotionDetector/Motion", "camera.motion"),
    TopicRule("tns1:VideoSource/GlobalSceneChange/*", "camera.tamper", "scene_change"),
    TopicRule("tns1:VideoSource/ImageTooDark/*", "camera.tamper", "too_dark"),
    TopicRule("tns1:VideoSource/ImageTooBright/*", "camera.tamper", "too_bright"),
    TopicRule("tns1:VideoSource/ImageTooBlurry/*", "camera.tamper", "too_blurry"),
    TopicRule("tns1:VideoSource/SignalLoss", "camera.tamper", "signal_loss"),
    TopicRule("tns1:Device/Trigger/DigitalInput", "camera.input"),
)
"""The mapping of issue 5; ``[devices.<id>.topics]`` adds to it and wins over it."""


def normalise_topic(topic: str) -> str:
    """``tns1:VideoSource/MotionAlarm/`` -> ``VideoSource/MotionAlarm``: prefixes vary by camera."""
    text = topic.strip().rstrip("/.")
    return "/".join(part.rpartition(":")[2] for part in text.split("/") if part)


def parse_bool(value: object) -> bool | None:
    """An ONVIF boolean (``true``/``false``, ``1``/``0`` and the like); None if not one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


@dataclass(frozen=True)
class Mapped:
    """A catalogue event made from a message."""

    type: str
    data: dict[str, Any]
    utc_time: Any


class EventMapper:
    """Maps messages with ``rules`` (most specific first) and remembers each property's state.

    ``Initialized`` messages (the state a camera reports on every new subscription) are
    emitted only when they differ from what was last seen, so a reconnect does not repeat
    "no motion" for every source; ``Changed`` messages are always emitted.
    """

    def __init__(self, extra: tuple[TopicRule, ...] = ()) -> None:
        rules = list(extra) + list(DEFAULT_RULES)
        # Configured rules win over the defaults at equal specificity (stable sort).
        self.rules = sorted(rules, key=lambda r: -r.specificity)
        self.unmapped: Counter[str] = Counter()
        self.unparsable: Counter[str] = Counter()
        self.ignored = 0
        self._last: dict[tuple[str, str, str], bool] = {}

    def rule_for(self, topic: str) -> TopicRule | None:
        """The rule for a normalised topic, or None."""
        return next((r for r in self.rules if r.matches(topic)), None)

    def map(self, msg: Message) -> Mapped | None:
        """The event for ``msg``, or None (unmapped, ignored, unparsable or no news)."""
        topic = normalise_topic(msg.topic)
        rule = self.rule_for(topic)
        if rule is None:
            self.unmapped[msg.topic] += 1
            return None
        if rule.event == "ignore" or (msg.operation or "").lower() == "deleted":
            self.ignored += 1
            return None
        active = self._active(rule, msg.data)
        if active is None:
            self.unparsable[msg.topic] += 1
            return None
        source = "/".join(v for v in msg.source.values() if v)
        key = (rule.event, topic, source)
        previous = self._last.get(key)
        self._last[key] = active
        if (msg.operation or "").lower() == "initialized" and active == bool(previous):
            return None
        if rule.event == "camera.motion":
            data: dict[str, Any] = {"active": active, "topic": msg.topic}
            if source:
                data["source"] = source
        elif rule.event == "camera.tamper":
            data = {"active": active, "kind": rule.kind, "topic": msg.topic}
            if source:
                data["source"] = source
        else:
            token = msg.source.get("InputToken") or source or "0"
            data = {"input": token, "active": active}
        return Mapped(rule.event, data, msg.utc_time)

    @staticmethod
    def _active(rule: TopicRule, data: dict[str, str]) -> bool | None:
        for name in rule.state or _DEFAULT_STATE[rule.event]:
            if name in data:
                return parse_bool(data[name])
        if len(data) == 1:  # a vendor's single boolean item under another name
            return parse_bool(next(iter(data.values())))
        return None
