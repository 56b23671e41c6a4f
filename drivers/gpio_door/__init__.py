"""gpio_door: a door contact with held-open and forced-door detection (optional request-to-exit)."""

from drivers.gpio_door.config import GpioDoorConfig
from drivers.gpio_door.driver import GpioDoorDriver

__all__ = ["GpioDoorConfig", "GpioDoorDriver"]
