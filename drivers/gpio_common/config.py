"""Config pieces every GPIO driver shares: pulls, levels, an input pin, and the simulation-only check."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from agent.driver import ActionError, DriverConfig
from agent.units import Duration, parse_duration
from drivers.gpio_common.pins import PinName, check_pull, pin_resource

Pull = Literal["up", "down", "none"]
Level = Literal["high", "low"]

DEFAULT_DEBOUNCE = 0.05


def active_high(pull: str, active: str | None) -> bool:
    """Whether ``active`` (or, unset, the pull's default) means a high level.

    A contact wired to ground with a pull-up reads low when closed, so closed (active) is low;
    with a pull-down the contact goes to 3V3 and active is high.
    """
    if active is not None:
        return active == "high"
    return pull == "down"


def for_param(params: dict[str, Any], *, default: float, maximum: float) -> float:
    """An action's ``for`` parameter in seconds (a number or ``"500ms"``), else ``default``.

    Raises:
        ActionError: not a duration, or not above 0 and at most ``maximum`` seconds.
    """
    raw = params.get("for")
    if raw is None:
        return default
    try:
        seconds = parse_duration(raw)
    except ValueError as err:
        raise ActionError(f"for: {err}") from err
    if not 0 < seconds <= maximum:
        raise ActionError(f"for: must be above 0 and at most {maximum:g} s, got {seconds:g}")
    return seconds


def pin_factory_of(info: ValidationInfo) -> str | None:
    """``[gpio] pin_factory`` while the core validates a whole file (None when validated alone)."""
    settings = (info.context or {}).get("settings")
    return None if settings is None else str(settings.gpio.pin_factory)


def other_device(info: ValidationInfo, device_id: str) -> dict[str, Any] | None:
    """The raw ``[devices.<device_id>]`` table of the file being validated, if known."""
    settings = (info.context or {}).get("settings")
    if settings is None:
        return None
    table = settings.devices.get(device_id)
    return table if isinstance(table, dict) else None


class InputPinConfig(DriverConfig):
    """One debounced input: a pin, its pull, which level is active, and the debounce time."""

    pin: PinName = Field(description="BCM number or a gpiozero pin name: 17, 'GPIO17', 'BOARD11'")
    pull: Pull = Field(default="up", description="internal resistor: up, down, or none (external)")
    active: Level | None = Field(
        default=None, description="the active level; default low with pull up, high with pull down"
    )
    debounce: Duration = Field(default=DEFAULT_DEBOUNCE,
                               description="a level counts once it held this long")

    @model_validator(mode="after")
    def _active_needed(self) -> InputPinConfig:
        if self.pull == "none" and self.active is None:
            raise ValueError("with pull = \"none\" (an external resistor) set active = \"high\" "
                             "or \"low\"")
        check_pull(self.pin, self.pull)
        return self

    @property
    def active_high(self) -> bool:
        return active_high(self.pull, self.active)

    def resources(self) -> list[str]:
        return [pin_resource(self.pin)]
