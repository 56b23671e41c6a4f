"""The ``eas_serial`` device table: port settings, rules, profiles; every error names its key."""

from __future__ import annotations

import codecs
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.driver import DriverConfig
from agent.errors import EventError
from agent.events import CATALOGUE, validate_data
from agent.units import Duration
from drivers.eas_serial.parsing import CompiledRule, field_kind, required_fields

PROFILE_DIR = Path(__file__).with_name("profiles")

PARITY = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}


@cache
def load_profile(name: str) -> dict[str, Any]:
    """The table of ``profiles/<name>.toml``.

    Raises:
        ValueError: no such profile; the message lists the known ones.
    """
    path = PROFILE_DIR / f"{name}.toml"
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or not path.is_file():
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(profile_names())}")
    with path.open("rb") as fh:
        return tomllib.load(fh)


def profile_names() -> list[str]:
    """Names of the example profiles shipped with the driver."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


class Rule(BaseModel):
    """One ``[[devices.<id>.rules]]`` entry: a regular expression and the event it gives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(description="regular expression searched in each line; named groups "
                                   "become data fields")
    type: str | None = Field(default=None, description="catalogue event type")
    ignore: bool = Field(default=False, description="a known line that gives no event "
                                                    "(heartbeat, status OK)")
    data: dict[str, Any] = Field(default_factory=dict, description="constant data fields")
    values: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per group, captured text -> value, e.g. {direction = {\"1\" = \"in\"}}",
    )
    raw: bool | None = Field(default=None, description="add the line as data.raw; default: the "
                                                       "device's raw")

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from err
        return value

    @field_validator("type")
    @classmethod
    def _catalogued(cls, value: str | None) -> str | None:
        if value is not None and value not in CATALOGUE:
            eas = ", ".join(t for t in CATALOGUE if t.startswith("eas."))
            raise ValueError(f"not a catalogue event type; EAS types: {eas} (all: `agent schema`)")
        return value

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        if self.ignore == (self.type is not None):
            raise ValueError("set either type (the event a match gives) or ignore = true")
        if self.type is None:
            return self
        groups = set(re.compile(self.match).groupindex)
        missing = [f for f in required_fields(self.type) if f not in groups and f not in self.data]
        if missing:
            need = ", ".join(missing)
            raise ValueError(f"{self.type} needs data field(s) {need}: add a named group such as "
                             f"(?P<{missing[0]}>...) or a constant in data")
        sample = {g: _sample(self.type, g) for g in groups} | self.data
        try:
            validate_data(self.type, sample)
        except EventError as err:
            raise ValueError(str(err)) from err
        return self

    def compile(self, default_raw: bool) -> CompiledRule:
        """The rule ready for ``LineParser``."""
        values = {g: {str(k).lower(): v for k, v in m.items()} for g, m in self.values.items()}
        raw = default_raw if self.raw is None else self.raw
        return CompiledRule(re.compile(self.match), self.type, dict(self.data), values, raw)


def _sample(event_type: str, name: str) -> Any:
    """A value of the right kind for a config-time check of a rule's data."""
    if name == "direction":
        return "unknown"
    return {"str": "x", "bool": True}.get(field_kind(event_type, name), 1)


class SimTemplates(BaseModel):
    """How the simulated pedestal speaks a profile (``[simulator]`` of a profile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alarm: str | None = None
    interference: str | None = None
    fault: str | None = None
    count: str | None = None
    heartbeat: str | None = None
    poll_reply: str | None = None
    directions: dict[str, str] = Field(default_factory=lambda: {"in": "IN", "out": "OUT",
                                                                "unknown": "?"})
    booleans: dict[str, str] = Field(default_factory=lambda: {"true": "ON", "false": "OFF"})


class EasSerialConfig(DriverConfig):
    """``[devices.<id>]`` of an ``eas_serial`` device."""

    port: str | None = Field(default=None, description="pyserial URL: /dev/serial/by-id/..., "
                                                        "/dev/ttyUSB0, socket://host:port, rfc2217://")
    simulate: bool = Field(default=False, description="read a simulated pedestal on a private "
                                                      "pseudo-terminal instead of port")
    profile: str | None = Field(default=None, description="an example profile (profiles/*.toml) "
                                                          "giving rules and line settings")
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    stopbits: float = Field(default=1, description="1, 1.5 or 2")
    encoding: str = "utf-8"
    terminator: str = Field(default="\n", min_length=1, description="end of a line, e.g. \"\\r\\n\"")
    max_line: int = Field(default=512, ge=16, le=65536, description="longest line kept, in bytes")
    rules: list[Rule] = Field(default_factory=list, description="tried in order before the "
                                                                "profile's rules; first match wins")
    raw: bool = Field(default=False, description="add each matched line as data.raw")
    poll_command: str | None = Field(default=None, description="sent as is every poll_interval")
    poll_interval: Duration = Field(default=5.0, gt=0)
    silence_timeout: Duration = Field(default=0.0, description="no bytes for this long: offline "
                                                               "(reason silent); 0 = never")
    reopen_min: Duration = Field(default=0.5, gt=0)
    reopen_max: Duration = Field(default=30.0, gt=0)
    profile_rules: list[Rule] = Field(default_factory=list, exclude=True,
                                      description="(set from the profile, not by hand)")
    simulator: SimTemplates = Field(default_factory=SimTemplates, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        for hidden in ("profile_rules", "simulator"):
            if hidden in values:
                raise ValueError(f"{hidden}: comes from the profile and cannot be set here")
        name = values.get("profile")
        if not isinstance(name, str):
            return values
        profile = dict(load_profile(name))
        profile.pop("description", None)
        merged = {**{k: v for k, v in profile.items() if k not in ("rules", "simulator")},
                  **values}
        merged["profile_rules"] = profile.get("rules", [])
        merged["simulator"] = profile.get("simulator", {})
        return merged

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("accepted: 1, 1.5, 2")
        return value

    @field_validator("encoding")
    @classmethod
    def _codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError as err:
            raise ValueError("unknown encoding (e.g. utf-8, ascii, latin-1)") from err
        return value

    @model_validator(mode="after")
    def _check(self) -> EasSerialConfig:
        if not self.simulate and not self.port:
            raise ValueError("port is required (a pyserial URL) unless simulate = true")
        if not self.rules and not self.profile_rules:
            raise ValueError("no rules: set profile (one of "
                             f"{', '.join(profile_names())}) or [[rules]]")
        if self.reopen_max < self.reopen_min:
            raise ValueError("reopen_max must not be below reopen_min")
        return self

    def resources(self) -> list[str]:
        return [] if self.simulate or not self.port else [f"serial:{self.port}"]

    def compiled_rules(self) -> list[CompiledRule]:
        """The device's rules, then its profile's, ready for ``LineParser``."""
        return [r.compile(self.raw) for r in (*self.rules, *self.profile_rules)]

    def serial_options(self) -> dict[str, Any]:
        """Keyword arguments for ``serial.serial_for_url``."""
        return {"baudrate": self.baudrate, "bytesize": self.bytesize,
                "parity": PARITY[self.parity], "stopbits": self.stopbits}
