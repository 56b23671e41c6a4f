"""What every output kind shares: its config model, its message template, and the send interface."""

from __future__ import annotations

import string
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.errors import AgentError
from agent.events import CATALOGUE, ID_RE
from agent.units import Duration

DEFAULT_TYPES = ("eas.alarm", "door.forced", "door.held_open", "camera.tamper", "selftest.failed")
"""What an output carries unless its ``types`` says otherwise: what an officer acts on."""

ENVELOPE_FIELDS = ("id", "seq", "type", "time", "source", "subject", "storeid", "deviceid",
                   "test")
EXTRA_FIELDS = ("exit", "camera", "label")
"""``exit``: the event's exit (its subject); ``camera``: that exit's name in the VMS (``exits``);
``label``: the test label and a space for a labelled test event, else empty."""
DATA_FIELDS = tuple(sorted({info.alias or f for model in CATALOGUE.values()
                            for f, info in model.model_fields.items()}))


class DeliveryError(AgentError, ConnectionError):
    """The target did not take the event (unreachable, refused, timed out, answered an error)."""


class Template:
    """A message with ``{field}`` placeholders: envelope attributes, ``exit``, ``camera``,
    ``label`` and ``{data.<field>}``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.fields = self.check(text)

    @staticmethod
    def check(text: str) -> list[str]:
        """The field names ``text`` uses.

        Raises:
            ValueError: a field that no event has, or a malformed placeholder, named.
        """
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as err:
            raise ValueError(f"not a valid template ({err}); write a literal brace as {{{{ or }}}}"
                             ) from err
        fields = []
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if spec or conversion:
                raise ValueError(f"field {{{name}}}: format specs and conversions are not "
                                 "supported")
            known = name in ENVELOPE_FIELDS or name in EXTRA_FIELDS or (
                name.startswith("data.") and name[5:] in DATA_FIELDS)
            if not known:
                raise ValueError(
                    f"unknown field {{{name}}}; accepted: {', '.join(ENVELOPE_FIELDS + EXTRA_FIELDS)}"
                    f", data.<field> with <field> one of {', '.join(DATA_FIELDS)}")
            fields.append(name)
        return fields

    @property
    def labels(self) -> bool:
        """True when the template places the test label itself."""
        return "label" in self.fields

    def render(self, values: dict[str, Any]) -> str:
        """The message for ``values`` (from ``Output.values``); a field the event lacks is empty."""
        out = []
        for literal, name, _, _ in string.Formatter().parse(self.text):
            out.append(literal)
            if name is not None:
                out.append(_text(values.get(name)))
        return "".join(out)


def _text(value: Any) -> str:
    """A value as a VMS match string wants it: ``true``, ``2`` (not ``2.0``), empty for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class OutputConfig(BaseModel):
    """Keys every ``[outputs.<name>]`` table accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    types: list[str] = Field(default_factory=lambda: list(DEFAULT_TYPES),
                             description="the event types this output carries")
    exits: dict[str, str] = Field(
        default_factory=dict, description="exit name -> that exit's camera or source in the VMS")
    test_events: Literal["skip", "label"] = Field(
        default="skip", description="test=true events: not sent, or sent labelled as tests")
    test_label: str = Field(default="TEST", min_length=1, max_length=32)
    timeout: Duration = Field(default=5.0, gt=0, le=120)
    retry_max: Duration = Field(default=30.0, gt=0, le=3600,
                                description="the longest wait between delivery attempts")

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in CATALOGUE]
        if unknown:
            raise ValueError(f"unknown event type {unknown[0]!r}; see `agent schema`")
        return value

    @field_validator("exits")
    @classmethod
    def _exit_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, camera in value.items():
            if not ID_RE.match(name):
                raise ValueError(f"exit name {name!r} is not a valid exit name")
            if not camera.strip():
                raise ValueError(f"exit {name!r}: the camera/source name is empty")
        return value

    def target(self) -> str:
        """Where this output sends to, for status and logs (never a secret)."""
        return ""


class Output(ABC):
    """One kind of VMS or HTTP target. ``send`` blocks (with timeouts) on an output's own
    thread; it never runs on the event loop or the publisher's thread."""

    kind: ClassVar[str]
    Config: ClassVar[type[OutputConfig]]

    def __init__(self, name: str, config: OutputConfig) -> None:
        self.name = name
        self.config = config
        self.connected = False

    def values(self, env: dict[str, Any], *, label: bool) -> dict[str, Any]:
        """Template values of one event."""
        exit_name = env.get("subject") or ""
        values: dict[str, Any] = {f: env.get(f) for f in ENVELOPE_FIELDS}
        values["exit"] = exit_name
        values["camera"] = self.config.exits.get(exit_name, exit_name)
        values["label"] = f"{self.config.test_label} " if label else ""
        for key, value in (env.get("data") or {}).items():
            values[f"data.{key}"] = value
        return values

    def text(self, template: Template, env: dict[str, Any], *, label: bool) -> str:
        """``template`` rendered for ``env``; a labelled test event without a ``{label}`` in
        the template gets the label in front."""
        rendered = template.render(self.values(env, label=label))
        if label and not template.labels:
            rendered = f"{self.config.test_label} {rendered}"
        return rendered

    def deliver(self, env: dict[str, Any], *, label: bool) -> str:
        """``send``, keeping ``connected`` up to date.

        Raises:
            DeliveryError: not delivered.
        """
        try:
            answer = self.send(env, label=label)
        except DeliveryError:
            self.connected = False
            raise
        self.connected = True
        return answer

    @abstractmethod
    def send(self, env: dict[str, Any], *, label: bool) -> str:
        """Deliver one event; returns what the target answered (or what was written).

        Raises:
            DeliveryError: it was not delivered (retry later).
        """

    def close(self) -> None:
        """Close any connection kept open between events."""
        self.connected = False


class SocketConfig(OutputConfig):
    """An output that talks to ``host``:``port``."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)

    def target(self) -> str:
        return f"{self.host}:{self.port}"


def checked_template(value: str) -> str:
    """Validator body for template keys.

    Raises:
        ValueError: see ``Template.check``.
    """
    Template.check(value)
    return value
