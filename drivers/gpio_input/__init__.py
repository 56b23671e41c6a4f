"""gpio_input: a debounced digital input (EAS alarm relay, sounder feedback, tamper loop)."""

from drivers.gpio_input.config import EdgeEvent, GpioInputConfig
from drivers.gpio_input.driver import GpioInputDriver

__all__ = ["EdgeEvent", "GpioInputConfig", "GpioInputDriver"]
