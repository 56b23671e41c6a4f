"""gpio_output: a relay output (test-tag coil, sounder, lamp) with on, off and pulse."""

from drivers.gpio_output.config import GpioOutputConfig
from drivers.gpio_output.driver import GpioOutputDriver

__all__ = ["GpioOutputConfig", "GpioOutputDriver"]
