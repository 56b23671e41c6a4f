"""gpio_output's config model: the relay pin, its polarity, safe state, pulse limits, simulation wire."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.driver import DriverConfig
from agent.units import Duration
from drivers.gpio_common.config import Level, other_device, pin_factory_of
from drivers.gpio_common.pins import PinName, pin_resource

WIRE_TARGET_DRIVERS = ("gpio_input",)


class GpioOutputConfig(DriverConfig):
    """``[devices.<id>]`` of a ``gpio_output``."""

    pin: PinName = Field(description="BCM number or a gpiozero pin name: 17, 'GPIO17', 'BOARD11'")
    active: Level = Field(default="high",
                          description="the level that energises the relay (many boards: low)")
    safe_state: Literal["off", "on"] = Field(
        default="off", description="applied when the agent starts and when it stops"
    )
    pulse: Duration = Field(default=0.5, gt=0, description="a pulse's length when none is given")
    max_pulse: Duration = Field(default=60.0, gt=0, description="longest pulse an action may ask")
    max_on: Duration = Field(default=600.0, ge=0, description="an 'on' action returns to the "
                             "safe state after this long (0: stays on); applies when safe_state "
                             "is 'off'")
    sim_drives: str | None = Field(
        default=None,
        description="simulation only: the gpio_input device whose pin this output drives",
    )

    @field_validator("sim_drives")
    @classmethod
    def _simulation_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        kind = pin_factory_of(info)
        if kind is not None and kind != "mock":
            raise ValueError(f"only allowed in simulation mode ([gpio] pin_factory = \"mock\"; "
                             f"this file has {kind!r}): remove it on real hardware")
        table = other_device(info, value)
        if kind is not None and table is None:
            raise ValueError(f"no such device {value!r} in [devices]")
        if table is not None and table.get("driver") not in WIRE_TARGET_DRIVERS:
            raise ValueError(f"device {value!r} is a {table.get('driver')!r} device; an output "
                             f"can only drive a {' or '.join(WIRE_TARGET_DRIVERS)} device")
        return value

    @model_validator(mode="after")
    def _pulse_fits(self) -> GpioOutputConfig:
        if self.pulse > self.max_pulse:
            raise ValueError(f"pulse ({self.pulse} s) is longer than max_pulse ({self.max_pulse} s)")
        return self

    @property
    def active_high(self) -> bool:
        return self.active == "high"

    def resources(self) -> list[str]:
        return [pin_resource(self.pin)]
