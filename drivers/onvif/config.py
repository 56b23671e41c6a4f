"""The ``[devices.<id>]`` model of the onvif driver (no ONVIF imports: the agent loads it always)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.config import ConfigPath
from agent.driver import DriverConfig
from agent.events import CATALOGUE
from agent.units import Duration, Size, parse_size
from drivers.onvif.mapping import TopicRule


class TopicMapping(BaseModel):
    """One ``[devices.<id>.topics]`` entry: ``"tns1:Some/Topic" = { event = "camera.motion" }``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: Literal["camera.motion", "camera.tamper", "camera.input", "ignore"]
    kind: str | None = Field(default=None, description="camera.tamper: what kind of tamper")
    state: list[str] = Field(default_factory=list, description="data items holding the state")


class OnvifConfig(DriverConfig):
    host: str = Field(default="", description="camera address; unused with simulate = true")
    port: int = Field(default=80, ge=1, le=65535)
    username: str = ""
    password_file: ConfigPath | None = Field(default=None, description="file holding the password")
    subscription_lifetime: Duration = Field(default=600.0, ge=1.0,
                                            description="PullPoint lifetime; renewed at 80%")
    pull_timeout: Duration = Field(default=60.0, gt=0, le=80.0,
                                   description="PullMessages long-poll (client limit is 90 s)")
    message_limit: int = Field(default=100, ge=1, le=1024)
    request_timeout: Duration = Field(default=10.0, gt=0, description="every other request")
    retry_min: Duration = Field(default=1.0, gt=0)
    retry_max: Duration = Field(default=60.0, gt=0)
    auth_retry: Duration = Field(default=300.0, gt=0,
                                 description="wait after the camera refuses our credentials")
    clock_warn: Duration = Field(default=5.0, gt=0, description="warn above this camera offset")
    event_max_age: Duration = Field(
        default=3600.0, gt=0,
        description="a corrected camera time older than this is replaced by the receive time",
    )
    state_interval: Duration = Field(default=10.0, gt=0,
                                     description="how often counters are republished")
    topics: dict[str, TopicMapping] = Field(default_factory=dict)
    snapshot_on: list[str] = Field(default_factory=list,
                                   description="event types at this camera's exit that take one")
    snapshot_profile: str = Field(default="", description="media profile token; first if empty")
    snapshot_timeout: Duration = Field(default=5.0, gt=0)
    xml_max_bytes: Size = Field(default=4 * 1024**2, gt=0,
                                description="the largest SOAP answer read from the camera")
    snapshot_max_bytes: Size = Field(
        default=8 * 1024**2, gt=0,
        description="the largest single snapshot; a larger answer is refused and nothing saved "
        "(the total kept is snapshot_store_bytes)")
    snapshot_keep: int = Field(default=500, ge=1)
    snapshot_store_bytes: Size = Field(default=512 * 1024**2, gt=0,
                                       description="retention: total bytes of kept snapshots")
    snapshot_max_age: Duration = 7 * 86400.0
    snapshot_test: bool = Field(default=False, description="also on test=true trigger events")
    snapshot_queue: int = Field(default=8, ge=1, description="waiting triggers; more are skipped")
    unsubscribe_on_stop: bool = Field(
        default=False,
        description="Unsubscribe when the agent stops (some cameras then drop every client's "
                    "subscription); by default ours expires on its own",
    )
    simulate: bool = Field(default=False, description="talk to a built-in fake camera")

    @field_validator("password_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("password_file")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("snapshot_max_bytes", mode="before")
    @classmethod
    def _one_snapshot(cls, value: object) -> object:
        if parse_size(value) > 64 * 1024**2:
            raise ValueError("snapshot_max_bytes is the largest single snapshot (at most 64MiB, "
                             "default 8MiB); the total kept is snapshot_store_bytes")
        return value

    @field_validator("snapshot_on")
    @classmethod
    def _triggers(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in CATALOGUE:
                raise ValueError(f"{name!r} is not a catalogue event type")
            if name == "camera.snapshot":
                raise ValueError("camera.snapshot cannot trigger a snapshot (it would loop)")
        return value

    @model_validator(mode="after")
    def _check(self) -> OnvifConfig:
        if not self.simulate and not self.host:
            raise ValueError("host is required (or simulate = true)")
        if self.retry_max < self.retry_min:
            raise ValueError("retry_max must not be below retry_min")
        self.rules()  # a bad topic mapping is a configuration error, found at start-up
        return self

    def rules(self) -> tuple[TopicRule, ...]:
        """The configured topic rules (added to and winning over the defaults)."""
        try:
            return tuple(TopicRule(topic, m.event, m.kind, tuple(m.state))
                         for topic, m in self.topics.items())
        except ValueError as err:
            raise ValueError(f"topics: {err}") from err

    def resources(self) -> list[str]:
        return [] if self.simulate else [f"onvif:{self.host}:{self.port}"]
