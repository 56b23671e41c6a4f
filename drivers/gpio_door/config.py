"""gpio_door's config model: the contact, request-to-exit, arming and held-open settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.driver import DriverConfig
from agent.units import Duration
from drivers.gpio_common.config import DEFAULT_DEBOUNCE, Level, Pull, active_high
from drivers.gpio_common.pins import PinName, check_pull, pin_resource
from drivers.gpio_door.schedule import ArmSchedule


class GpioDoorConfig(DriverConfig):
    """``[devices.<id>]`` of a ``gpio_door``."""

    pin: PinName = Field(description="the door contact: BCM number or a gpiozero pin name")
    pull: Literal["up", "down"] = Field(
        default="up", description="up: contact wired to GND; down: contact wired to 3V3"
    )
    contact: Literal["nc", "no"] = Field(
        default="nc", description="nc: the contact is closed while the door is closed"
    )
    debounce: Duration = DEFAULT_DEBOUNCE
    held_open_after: Duration = Field(default=30.0, description="0 disables door.held_open")
    held_open_repeat: Duration = Field(default=0.0, description="repeat period; 0: once")
    armed: bool | list[str] = Field(
        default=False, description="true, false, or local-time windows like 'mon-fri 19:00-07:30'"
    )
    rex_pin: PinName | None = Field(default=None, description="request-to-exit input, optional")
    rex_pull: Pull = "up"
    rex_active: Level | None = Field(
        default=None, description="REX active level; default low with pull up, high with pull down"
    )
    shunt: Duration = Field(default=10.0,
                            description="an opening this long after the REX is authorised")

    @field_validator("armed")
    @classmethod
    def _schedule(cls, value: bool | list[str]) -> bool | list[str]:
        ArmSchedule.parse(value)
        return value

    @model_validator(mode="after")
    def _pins(self) -> GpioDoorConfig:
        if self.rex_pin is not None and self.rex_pin == self.pin:
            raise ValueError(f"rex_pin and pin are both {self.pin}")
        if self.rex_pin is not None and self.rex_pull == "none" and self.rex_active is None:
            raise ValueError("with rex_pull = \"none\" set rex_active = \"high\" or \"low\"")
        check_pull(self.pin, self.pull)
        if self.rex_pin is not None:
            check_pull(self.rex_pin, self.rex_pull)
        return self

    @property
    def open_high(self) -> bool:
        """Whether the contact pin reads high while the door is open.

        The contact closed pulls the pin to the opposite of its pull; a normally-closed contact is
        closed while the door is closed, so the door is open when the pin is at its pull's level.
        """
        return (self.pull == "up") == (self.contact == "nc")

    @property
    def rex_high(self) -> bool:
        return active_high(self.rex_pull, self.rex_active)

    @property
    def schedule(self) -> ArmSchedule:
        return ArmSchedule.parse(self.armed)

    def resources(self) -> list[str]:
        pins = [self.pin] if self.rex_pin is None else [self.pin, self.rex_pin]
        return [pin_resource(p) for p in pins]
