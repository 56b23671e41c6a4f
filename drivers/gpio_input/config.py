"""gpio_input's config model and its edge-to-event mapping (no I/O)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.errors import EventError
from agent.events import CATALOGUE, validate_data
from drivers.gpio_common.config import InputPinConfig

EDGE_EVENT_TYPES = tuple(
    t for t in CATALOGUE if not t.startswith(("agent.", "selftest.", "device."))
)
"""Catalogue types an input's edge may emit (``device.*`` is the driver's own, the rest the agent's)."""


class EdgeEvent(BaseModel):
    """What one edge emits: a catalogue ``event`` type with fixed ``data``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str = Field(description="a catalogue type, e.g. 'eas.alarm'")
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _in_catalogue(self) -> EdgeEvent:
        if self.event not in EDGE_EVENT_TYPES:
            raise ValueError(f"event {self.event!r} is not one an input may emit; accepted: "
                             f"{', '.join(EDGE_EVENT_TYPES)}")
        try:
            validate_data(self.event, self.data)
        except EventError as err:
            raise ValueError(f"data does not fit {self.event}: {err}") from err
        return self


class GpioInputConfig(InputPinConfig):
    """``[devices.<id>]`` of a ``gpio_input``: a pin, and which edge emits what."""

    on_active: EdgeEvent | None = Field(default=None,
                                        description="emitted when the input becomes active")
    on_inactive: EdgeEvent | None = Field(default=None,
                                          description="emitted when the input becomes inactive")

    def event_for(self, active: bool) -> EdgeEvent | None:
        """The event a settled change to ``active`` emits, if any."""
        return self.on_active if active else self.on_inactive
