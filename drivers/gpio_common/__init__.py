"""Shared by the GPIO drivers: one pin factory per process, pin names, debounce, simulation mode."""

from drivers.gpio_common.config import InputPinConfig, Level, Pull, active_high
from drivers.gpio_common.debounce import Change, Debouncer
from drivers.gpio_common.device import GpioDriver
from drivers.gpio_common.factory import FactoryError, acquire, current, release
from drivers.gpio_common.pins import PinName, canonical_pin, pin_resource

__all__ = [
    "Change",
    "Debouncer",
    "FactoryError",
    "GpioDriver",
    "InputPinConfig",
    "Level",
    "PinName",
    "Pull",
    "acquire",
    "active_high",
    "canonical_pin",
    "current",
    "pin_resource",
    "release",
]
